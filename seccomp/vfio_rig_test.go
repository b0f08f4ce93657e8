package seccomp

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dmsandbox/dmsandbox/integration/rig"
)

// TestQEMUVFIOInRig runs a real VFIO passthrough under qemu-vfio: in the
// nested rig (L1 with a vIOMMU and QEMU's edu device, integration/rig), the
// edu is bound to vfio-pci and an inner QEMU on KVM takes it with
// -device vfio-pci, wrapped by this test binary's exec wrapper with the kill
// default. SeaBIOS assigns the BAR, the BAR must be mmapped into the guest,
// system_reset resets the device through VFIO, quit exits 0 — and L1's
// kernel log holds no seccomp record.
func TestQEMUVFIOInRig(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a nested VM (about a minute); skipped with -short")
	}
	rig.SkipIfNoRig(t)
	// L1 sees the host's / read-only; /var/tmp is on it, the go test
	// build directory may not be.
	dir, err := os.MkdirTemp("/var/tmp", "dmsandbox-seccomp-rig-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	exe := filepath.Join(dir, "seccomp.test")
	if err := copyExecutable(os.Args[0], exe); err != nil {
		t.Fatal(err)
	}
	r := rig.Rig{
		Devices: []string{"pcie-root-port,id=rp1,chassis=1,slot=1", "edu,bus=rp1"},
		Timeout: 3 * time.Minute,
		Env:     map[string]string{"SECCOMP_TEST": exe},
		WorkDir: t.TempDir(),
		Logf:    t.Logf,
		Script: `
set -u
FAILED=0
check() { echo "CHECK $1 $2 ${3:-}"; [ "$2" = PASS ] || FAILED=1; }
EDU=
for d in /sys/bus/pci/devices/*; do
	[ "$(cat $d/vendor):$(cat $d/device)" = 0x1234:0x11e8 ] && EDU=$(basename $d)
done
echo vfio-pci > /sys/bus/pci/devices/$EDU/driver_override
echo $EDU > /sys/bus/pci/drivers_probe
[ -c /dev/kvm ] || check l1-kvm FAIL "no /dev/kvm in L1"
echo 0 > /proc/sys/kernel/printk_ratelimit
N0=$(dmesg | wc -l)
LOG=/tmp/inner-qemu.log
(
	for i in $(seq 1 60); do
		sleep 1; echo "info pci"
		grep -qE 'BAR0: 32 bit memory at 0x[0-9a-f]{8} ' $LOG 2>/dev/null && break
	done
	echo "info mtree -f"; sleep 2
	echo system_reset; sleep 3
	echo quit
) | prlimit --memlock=268435456:268435456 env DMSANDBOX_SECCOMP_EXEC=qemu-vfio $SECCOMP_TEST -test.run='^$' -- \
	/usr/bin/qemu-system-x86_64 -accel kvm -machine pc -m 64 -nodefaults -no-user-config -display none \
	-device vfio-pci,host=$EDU,id=hostdev0 -monitor stdio >$LOG 2>&1
rc=$?
[ $rc = 0 ] && check qemu-vfio-exit PASS || check qemu-vfio-exit FAIL "exit $rc: $(tail -5 $LOG | tr '\n' ' ')"
grep -q "$EDU BAR 0 mmaps\[0\]" $LOG && check bar-mmap PASS || check bar-mmap FAIL "no mmap of BAR 0"
REC=$(dmesg | tail -n +$((N0+1)) | grep -E 'type=1326|callbacks suppressed')
[ -z "$REC" ] && check no-seccomp-records PASS || check no-seccomp-records FAIL "$REC"
exit $FAILED
`,
	}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	res, err := r.Run(ctx)
	if res != nil {
		t.Logf("L1 log:\n%s", res.Log)
	}
	if err != nil {
		t.Fatalf("rig: %v", err)
	}
	checks := 0
	for _, line := range strings.Split(res.Log, "\n") {
		f := strings.Fields(line)
		if len(f) >= 3 && f[0] == "CHECK" {
			checks++
			if f[2] != "PASS" {
				t.Errorf("L1 check %s: %s", f[1], strings.Join(f[2:], " "))
			}
		}
	}
	if checks < 3 || res.ExitCode != 0 {
		t.Errorf("L1 script: %d checks, exit %d", checks, res.ExitCode)
	}
}

func copyExecutable(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
