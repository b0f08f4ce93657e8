package xenrig

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/dmsandbox/dmsandbox/integration/rig"
)

// TestXenRigPV: in dom0 of a nested Xen 4.17, `xl create` a PV guest
// with a qdisk disk whose device_model_override is dmsandbox (machine
// xenpv). QEMU's xen-block opens the image by the path libxl wrote to
// xenstore; dmsandbox exposes it in the sandbox as a loop device
// (launcher/images.go). Checked from dom0: QEMU confined, the backend
// Connected (state 4), the guest (Debian's kernel as a PV domU, a tiny
// initramfs that loads xen-blkfront) reads the marker dom0 wrote into
// the image and writes one back, the image's owner and mode untouched,
// and `xl destroy` leaves no process, run directory or loop device. Then
// an HVM guest with the same qdisk disk: the emulated disk handed as fds,
// the PV path as the loop device (backend InitWait), SeaBIOS booting
// from the disk. Opt-in like TestXenRigDM.
func TestXenRigPV(t *testing.T) {
	rigPreflight(t)
	for _, tool := range []string{"cpio", "busybox"} { // the PV guest's initramfs, built in dom0
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed (the PV guest's initramfs)", tool)
		}
	}
	cache, err := rig.CacheDir()
	if err != nil {
		t.Fatal(err)
	}
	k, err := rig.EnsureKernel(cache)
	if err != nil {
		t.Fatal(err)
	}
	dir := rigWorkDir(t, "dmsandbox-xenrig-pv-")
	bin := rigBinary(t, dir)
	env := map[string]string{"DMSANDBOX": bin, "PV_KERNEL": k.Vmlinuz(), "PV_KMOD": k.ModulesDir()}
	if os.Getenv("DMSANDBOX_XEN_RIG_SECCOMP_LOG") != "" {
		env["SECCOMP_LOG"] = "1"
	}
	// 42-50 s in a good run here; 120 s per attempt keeps two attempts and
	// TestXenRigDM within make test-xen's budget.
	r := &Rig{Script: dom0PVScript, Env: env, WorkDir: filepath.Join(dir, "work"), Logf: t.Logf}
	runRig(t, r, 120*time.Second)
}

// dom0PVScript runs in dom0. Each check prints XENRIG-OK or XENRIG-FAIL
// and the first failure ends it with exit 1. Its first part (Xen's
// tools, daemons, seccomp report, root cache) is TestXenRigDM's.
const dom0PVScript = `
set -u
ok() { echo "XENRIG-OK: $*"; }
fail() { echo "XENRIG-FAIL: $*"; seccomp_report; for f in /var/log/xen/qemu-dm-*.log /var/log/xen/console/guest-*.log; do [ -f "$f" ] && { echo "--- $f"; cat "$f"; }; done; for f in $RIG_OUT/xl-create-*.log; do [ -f "$f" ] && { echo "--- $f"; tail -30 "$f"; }; done; exit 1; }
seccomp_report() { dmesg | grep -q 'type=1326' && { echo "--- seccomp records (qemu-xen):"; dmesg | $DMSANDBOX seccomp propose -profile qemu-xen; }; true; }
XB=/usr/lib/xen-4.17/bin
cp -a "$XEN_ROOT"/usr/. /usr/ && cp -a "$XEN_ROOT"/etc/. /etc/ || fail "copy xen tree"
mkdir -p /var/lib/xen /var/log/xen/console /run/xen /run/xenstored /var/lib/xenstored
[ -d "$XEN_ROOT"/var/lib/xen ] && cp -a "$XEN_ROOT"/var/lib/xen/. /var/lib/xen/
[ -L /var/run ] || fail "/var/run is not a symlink to /run"
for m in xen-evtchn xen-gntdev xen-gntalloc xen-privcmd xenfs loop; do modprobe $m || echo "modprobe $m failed"; done
mount -t xenfs xenfs /proc/xen || fail "xenfs"
grep -q control_d /proc/xen/capabilities || fail "not dom0"
$XB/xenstored --pid-file /run/xenstored.pid || fail "xenstored"
for i in $(seq 1 100); do [ -S /run/xenstored/socket ] && break; sleep 0.1; done
$XB/xen-init-dom0 || fail "xen-init-dom0"
# --log=guest: the PV guest's console (hvc0) in /var/log/xen/console.
$XB/xenconsoled --pid-file=/run/xenconsoled.pid --log=guest --log-dir=/var/log/xen/console || fail "xenconsoled"
$XB/xl info | grep -E '^(xen_version|free_memory)' || fail "xl info"
if [ -n "${SECCOMP_LOG:-}" ]; then
	export DMSANDBOX_TRACE=1
	echo '{"version": 1, "seccomp_log": true}' > /run/dmsandbox-config.json
	export DMSANDBOX_CONFIG=/run/dmsandbox-config.json
	echo "XENRIG: seccomp in log mode (discovery run)"
fi
t0=$(date +%s)
$DMSANDBOX -xen-domid 32000 -machine xenpv -nodefaults -display none -vnc none >/dev/null 2>&1
echo "root cache warmed in $(( $(date +%s) - t0 )) s"

# The PV guest's initramfs: busybox, xen-blkfront, an init that reads
# dom0's marker from xvda, writes its own at sector 1, then idles.
mkdir -p /run/pvinit/bin /run/pvinit/dev /run/pvinit/proc /run/pvinit/sys
cp "$(command -v busybox)" /run/pvinit/bin/busybox
cp "$PV_KMOD"/kernel/drivers/block/xen-blkfront.ko /run/pvinit/ || fail "xen-blkfront.ko"
cat > /run/pvinit/init <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t devtmpfs dev /dev; mount -t proc proc /proc; mount -t sysfs sys /sys
insmod /xen-blkfront.ko
for i in $(seq 1 100); do [ -b /dev/xvda ] && break; sleep 0.1; done
echo "PVGUEST: xvda $(cat /sys/block/xvda/size 2>&1) sectors, marker '$(dd if=/dev/xvda bs=1 count=14 2>/dev/null)'"
echo PVGUEST-WROTE | dd of=/dev/xvda bs=512 seek=1 conv=sync,fsync 2>/dev/null && echo "PVGUEST: wrote sector 1"
while :; do sleep 60; done
INIT
chmod 755 /run/pvinit/init
(cd /run/pvinit && find . | cpio -o -H newc 2>/dev/null | gzip > /run/pvinit.cpio.gz) || fail "pv initramfs"

# The image: in dom0's RAM, root's, mode 0600 (the sandbox uid cannot
# open it: only the loop device dmsandbox attaches makes it reachable).
truncate -s 16M /var/lib/xen/pvdisk.img && chmod 600 /var/lib/xen/pvdisk.img || fail "image"
printf 'DOM0-MARKER-42' | dd of=/var/lib/xen/pvdisk.img conv=notrunc 2>/dev/null
before=$(stat -c '%u:%g %a %i' /var/lib/xen/pvdisk.img)
# started NAME: the device model libxl runs is dmsandbox, it exposed the
# image, QEMU is confined; sets domid, dmpid, qpid, cgpaths.
started() {
	domid=$($XB/xl domid $1) || fail "domid $1"
	dmpid=$(xenstore-read /local/domain/$domid/image/device-model-pid) || fail "$1: device-model-pid"
	tr '\0' ' ' < /proc/$dmpid/cmdline | grep -q "^$DMSANDBOX " || fail "pid $dmpid is not dmsandbox: $(tr '\0' ' ' < /proc/$dmpid/cmdline)"
	# dmsandbox reads xenstore once, at its start: this line is the proof
	# that libxl had written the qdisk backend before spawning it.
	grep "qdisk image /var/lib/xen/pvdisk.img (rw) from xenstore" /var/log/xen/qemu-dm-$1.log || fail "$1: dmsandbox did not expose the qdisk image"
	qpid=$(sed -n 's/^  "pid": \([0-9]*\),$/\1/p' /run/dmsandbox/xen-dm-$domid/state.json)
	[ -n "$qpid" ] || fail "$1: no QEMU pid in state.json"
	cgpaths=$(grep -o '"/sys/fs/cgroup/[^"]*"' /run/dmsandbox/xen-dm-$domid/state.json | tr -d '"')
	[ -n "$cgpaths" ] || fail "$1: no cgroup paths in state.json"
	st=$(grep -E '^(Uid|NoNewPrivs|Seccomp):' /proc/$qpid/status | tr '\t\n' '  ')
	echo "$1 QEMU pid $qpid: $st"
	echo "$st" | grep -q "Uid: 300$(printf %04d $domid) " || fail "$1 QEMU uid: $st"
	echo "$st" | grep -q "NoNewPrivs: 1" || fail "$1 NoNewPrivs"
	echo "$st" | grep -q "Seccomp: 2" || fail "$1 seccomp"
	ok "$1 QEMU confined"
	for l in /sys/block/loop*/loop/backing_file; do grep -q pvdisk.img $l 2>/dev/null && echo "$l: $(cat $l)"; done
}
# destroyed NAME: xl destroy leaves no process, run directory, recorded
# cgroup or loop device.
destroyed() {
	$XB/xl destroy $1 || fail "xl destroy $1"
	for i in $(seq 1 50); do [ -e /run/dmsandbox/xen-dm-$domid ] || break; sleep 0.2; done
	[ ! -e /run/dmsandbox/xen-dm-$domid ] || fail "$1: run directory left"
	kill -0 $qpid 2>/dev/null && fail "$1: QEMU $qpid still running"
	kill -0 $dmpid 2>/dev/null && fail "$1: dmsandbox $dmpid still running"
	for p in $cgpaths; do [ -e "$p" ] && fail "$1: cgroup $p left"; done
	# Including the hierarchies only runc joins (hugetlb, misc in this
	# dom0), which the launcher records as joined:NAME.
	for p in /sys/fs/cgroup/*/dmsandbox/xen-dm-$domid; do [ -e "$p" ] && fail "$1: cgroup $p left"; done
	for i in $(seq 1 25); do grep -l pvdisk.img /sys/block/loop*/loop/backing_file 2>/dev/null || break; sleep 0.2; done
	grep -l pvdisk.img /sys/block/loop*/loop/backing_file 2>/dev/null && fail "$1: loop device left"
	ok "$1 destroyed, nothing left"
	cp /var/log/xen/qemu-dm-$1.log $RIG_OUT/ 2>/dev/null
}

cat > /run/pv1.cfg <<CFG
name = "pv1"
type = "pv"
memory = 128
vcpus = 1
kernel = "$PV_KERNEL"
ramdisk = "/run/pvinit.cpio.gz"
extra = "console=hvc0 rdinit=/init"
device_model_override = "$DMSANDBOX"
disk = [ "format=raw,vdev=xvda,access=rw,backendtype=qdisk,target=/var/lib/xen/pvdisk.img" ]
vif = [ ]
on_crash = "preserve"
CFG
timeout 90 $XB/xl -vvv create /run/pv1.cfg > $RIG_OUT/xl-create-pv1.log 2>&1 || fail "xl create pv1"
ok "xl create pv1"
grep -n -m1 'spec.backend=qdisk' $RIG_OUT/xl-create-pv1.log
grep -n -m1 'Spawning device-model' $RIG_OUT/xl-create-pv1.log
started pv1
state=
for i in $(seq 1 60); do
	state=$(xenstore-read /local/domain/0/backend/qdisk/$domid/51712/state 2>/dev/null)
	[ "$state" = 4 ] && grep -q 'PVGUEST: wrote' /var/log/xen/console/guest-pv1.log 2>/dev/null && break
	sleep 1
done
grep PVGUEST /var/log/xen/console/guest-pv1.log
[ "$state" = 4 ] || fail "qdisk backend state '$state', want 4 (Connected)"
ok "pv1 qdisk backend Connected"
grep -q "PVGUEST: xvda 32768 sectors, marker 'DOM0-MARKER-42'" /var/log/xen/console/guest-pv1.log || fail "guest did not read the image through xvda"
ok "pv1 guest read dom0's marker from xvda"
grep -q 'PVGUEST: wrote sector 1' /var/log/xen/console/guest-pv1.log || fail "guest did not write"
destroyed pv1
dd if=/var/lib/xen/pvdisk.img bs=512 skip=1 count=1 2>/dev/null | grep -q PVGUEST-WROTE || fail "guest's write is not in the image"
ok "guest's write reached the image"
after=$(stat -c '%u:%g %a %i' /var/lib/xen/pvdisk.img)
[ "$before" = "$after" ] || fail "image owner/mode/inode changed: $before -> $after"
ok "image owner and mode untouched ($after)"

# An HVM guest with the same qdisk disk and no OS: QEMU gets the emulated
# disk as an fd (-drive file=, translated by dmargv) and, for the PV path
# of the same disk, the loop device; SeaBIOS boots from the emulated
# disk, the qdisk backend waits for PV drivers (state 2, InitWait).
cat > /run/hvmq.cfg <<CFG
name = "hvmq"
type = "hvm"
memory = 64
vcpus = 1
device_model_version = "qemu-xen"
device_model_override = "$DMSANDBOX"
vnc = 0
sdl = 0
boot = "c"
disk = [ "format=raw,vdev=hda,access=rw,backendtype=qdisk,target=/var/lib/xen/pvdisk.img" ]
vif = [ ]
on_crash = "preserve"
CFG
timeout 90 $XB/xl -vvv create /run/hvmq.cfg > $RIG_OUT/xl-create-hvmq.log 2>&1 || fail "xl create hvmq"
ok "xl create hvmq"
started hvmq
grep 'translated -drive' /var/log/xen/qemu-dm-hvmq.log || fail "hvmq: emulated disk not handed as an fd"
for i in $(seq 1 40); do
	state=$(xenstore-read /local/domain/0/backend/qdisk/$domid/768/state 2>/dev/null)
	[ "$state" = 2 ] && $XB/xl dmesg | grep -q "(d$domid) Booting from Hard Disk" && break
	sleep 1
done
$XB/xl dmesg | grep "(d$domid)" | grep -iE 'boot|disk|ata' | head -5
[ "$state" = 2 ] || fail "hvmq: qdisk backend state '$state', want 2 (InitWait: QEMU opened the image)"
ok "hvmq qdisk backend InitWait"
$XB/xl dmesg | grep -q "(d$domid) Booting from Hard Disk" || fail "hvmq: SeaBIOS did not boot from the emulated disk"
ok "hvmq SeaBIOS boots from the emulated disk"
destroyed hvmq
cp /var/log/xen/console/guest-pv1.log $RIG_OUT/ 2>/dev/null
seccomp_report
echo XENRIG-DONE
`
