package integration

import (
	"testing"
	"time"

	"github.com/dmsandbox/dmsandbox/integration/rig"
)

// TestLauncherVFIORig runs a confined QEMU with a real VFIO device in L1:
// edu behind its root port is bound to vfio-pci by the project's pci
// command, then `dmsandbox run --profile qemu-vfio` starts QEMU with
// -device vfio-pci, with only the group node handed in, MEMLOCK raised to
// cover guest RAM and the seccomp kill default. QEMU must reach QMP with
// the device realized (query-pci lists it), hold the VFIO fds, and leave no
// seccomp record in the kernel log.
func TestLauncherVFIORig(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a nested VM (about 40 s); skipped with -short")
	}
	rig.SkipIfNoRig(t)
	bin := buildDmsandbox(t)
	runRig(t, rig.Rig{
		Devices: []string{"pcie-root-port,id=rp1,chassis=1,slot=1", "edu,bus=rp1"},
		Timeout: 3 * time.Minute,
		Env:     map[string]string{"DMS": bin},
		Script:  launcherVFIOScenario,
	})
}

const launcherVFIOScenario = `
EDU=$(find_dev 0x1234:0x11e8)
STATE=/run/rig/pci-state
expect edu-assignable-add "$DMS" pci assignable-add --state-dir $STATE --to vfio-pci $EDU
G=$(grp $EDU)
# Guest RAM 64 MiB is pinned for DMA: MEMLOCK must cover it (the default
# 8 MiB fails with VFIO_MAP_DMA ENOMEM).
cat > /tmp/vfio.json <<'CFG'
{"version":1,"rlimits":{"fsize":1073741824,"core":0,"msgqueue":0,"locks":0,"nproc":1024,"nofile":4096,"memlock":268435456}}
CFG
dmesg -C
$DMS run --config /tmp/vfio.json --profile qemu-vfio --vfio $EDU --name vf -- \
	/usr/bin/qemu-system-x86_64 -S -display none -nodefaults -machine q35 -accel tcg -m 64 \
	-device vfio-pci,host=$EDU,id=pt0 > /tmp/vf.log 2>&1 &
L=$!
for i in $(seq 400); do grep -q "dmsandbox: vf: pid" /tmp/vf.log && break; kill -0 $L 2>/dev/null || break; sleep 0.2; done
cat /tmp/vf.log
grep -q "dmsandbox: vf: pid" /tmp/vf.log && check vfio-qemu-ready PASS || check vfio-qemu-ready FAIL "$(tail -3 /tmp/vf.log)"
$DMS inspect vf --json > /tmp/vf.json 2>&1
PID=$(sed -n 's/^  "pid": \([0-9]*\),/\1/p' /tmp/vf.json)
expect vfio-group-fd sh -c "ls -l /proc/$PID/fd | grep -q '/dev/vfio/$G'"
expect vfio-container-fd sh -c "ls -l /proc/$PID/fd | grep -q '/dev/vfio/vfio'"
expect vfio-device-fd sh -c "ls -l /proc/$PID/fd | grep -q 'anon_inode:\[vfio-device\]'"
expect vfio-memlock sh -c "grep 'Max locked memory' /proc/$PID/limits | grep -q 268435456"
expect vfio-uid-not-root sh -c "test \$(awk '/^Uid/{print \$2}' /proc/$PID/status) -ne 0"
expect vfio-caps-none sh -c "grep -q '^CapEff:	0000000000000000' /proc/$PID/status"
expect vfio-seccomp sh -c "grep -qx 'Seccomp:	2' /proc/$PID/status"
# No other group nor the host's /dev in the sandbox.
expect vfio-dev-minimal sh -c "ls /proc/$PID/root/dev/vfio | sort | tr '\n' ' ' | grep -qx '$G vfio '"
# /sys is the synthetic view with the one iommu_group link, not sysfs.
expect vfio-sys-synthetic sh -c "test \$(find /proc/$PID/root/sys -type l | wc -l) = 1 && ! test -e /proc/$PID/root/sys/kernel/mm && readlink /proc/$PID/root/sys/bus/pci/devices/$EDU/iommu_group | grep -q '/$G\$'"
kill -TERM $L
wait $L
say "launcher exit $?"
expect no-seccomp-kill sh -c "! dmesg | grep -q 'type=1326'"
expect edu-assignable-remove "$DMS" pci assignable-remove --state-dir $STATE $EDU
finish
`
