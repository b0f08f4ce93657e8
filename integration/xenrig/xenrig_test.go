package xenrig

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/dmsandbox/dmsandbox/integration/xenrig/msiboot"
	"github.com/dmsandbox/dmsandbox/integration/xenrig/optionrom"
)

// TestXenRigDM: in dom0 of a nested Xen 4.17, `xl create` HVM guests
// whose device_model_override is dmsandbox, with PCI passthrough through
// the broker (docs/libxl.md, "Xen rig", has the table): hvm1 plain with
// VNC and an edu the guest enables MSI on (embedded broker), hvm2
// dm_restrict=1 with an e1000e (embedded), then a daemon requiring
// pre-authorisation: hvm3 dm_restrict=1 with both, authorised by name
// before it exists, hvm4 hot-adding through contrib/xen/dmsandbox-pci:
// the guest runs hvmloader/SeaBIOS, QEMU is confined (checked from dom0),
// and `xl destroy` leaves no process and no run directory. Opt-in: it
// needs up to two TCG boots of Xen (RIGS.md: 15-90 s each).
func TestXenRigDM(t *testing.T) {
	rigPreflight(t)
	dir := rigWorkDir(t, "dmsandbox-xenrig-")
	bin := rigBinary(t, dir)
	pciScript, err := filepath.Abs("../../contrib/xen/dmsandbox-pci")
	if err != nil {
		t.Fatal(err)
	}
	// hvm1's disk: a boot sector that enables MSI on the edu and waits
	// for its interrupt (msiboot), so QEMU's MSI path runs for real.
	img, err := msiboot.Build(dir)
	if err != nil {
		t.Fatal(err)
	}
	// hvm2's: one that programs the e1000e's MSI-X table entry 0 and
	// enables MSI-X (msixboot), so QEMU's MSI-X path runs for real too.
	msixImg, err := msiboot.BuildMSIX(dir)
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"DMSANDBOX": bin, "CONTRIB_PCI": pciScript, "MSIBOOT_IMG": img, "MSIXBOOT_IMG": msixImg}
	// The edu's option ROM (L1's romfile=): one that returns at once, so
	// SeaBIOS enables and reads the ROM BAR in the guest, through the
	// broker, without running anything that could crash it.
	rom := filepath.Join(dir, "edu.rom")
	if err := os.WriteFile(rom, optionrom.ROM(0x1234, 0x11e8, 0x00ff00), 0o644); err != nil {
		t.Fatal(err)
	}
	// Discovery runs: the qemu-xen profile logs instead of killing, and
	// the script reports the syscalls it logged (docs/libxl.md).
	if os.Getenv("DMSANDBOX_XEN_RIG_SECCOMP_LOG") != "" {
		env["SECCOMP_LOG"] = "1"
	}
	// ... and with DMSANDBOX_XEN_RIG_STRACE=1, every ioctl request QEMU
	// makes is checked against the profile (slow: strace -f).
	if os.Getenv("DMSANDBOX_XEN_RIG_STRACE") != "" {
		env["STRACE_IOCTLS"] = "1"
	}
	// An emulated IOMMU (Xen refuses HVM passthrough without one), an edu
	// device behind a root port, 0000:01:00.0 (on the root bus it has no
	// reset method at all: no FLR, no PM; RIGS.md; behind the port the
	// broker resets it with a secondary bus reset), and an e1000e behind
	// another, 0000:02:00.0: MSI-X, whose table QEMU maps at realize, and
	// an I/O BAR. Without its option ROM (romfile=): SeaBIOS in the L2
	// guest ran that iPXE ROM and once in three runs triple-faulted in it,
	// before hvm2's boot sector could enable MSI-X; the edu carries the
	// ROM instead.
	r := &Rig{Script: dom0Script, Env: env, WorkDir: filepath.Join(dir, "work"), Logf: t.Logf,
		Devices: []string{"intel-iommu,intremap=on", "pcie-root-port,id=rp1,chassis=1,slot=1", "edu,bus=rp1,romfile=" + rom,
			"pcie-root-port,id=rp2,chassis=2,slot=2", "e1000e,bus=rp2,romfile="}}
	// Four guests with passthrough take 95-135 s on an unloaded 2-core
	// host (libxl's 10 s device_del timeouts included).
	runRig(t, r, 200*time.Second)
}

// dom0Script runs in dom0. Each check prints XENRIG-OK or XENRIG-FAIL and
// the first failure ends it with exit 1.
const dom0Script = `
set -u
ok() { echo "XENRIG-OK: $*"; }
fail() { echo "XENRIG-FAIL: $*"; seccomp_report; for f in /var/log/xen/qemu-dm-*.log; do [ -f "$f" ] && { echo "--- $f"; cat "$f"; }; done; exit 1; }
XB=/usr/lib/xen-4.17/bin
# Xen's tools over the RAM root (unpacked, never installed).
cp -a "$XEN_ROOT"/usr/. /usr/ && cp -a "$XEN_ROOT"/etc/. /etc/ || fail "copy xen tree"
mkdir -p /var/lib/xen /var/log/xen /run/xen /run/xenstored /var/lib/xenstored
[ -d "$XEN_ROOT"/var/lib/xen ] && cp -a "$XEN_ROOT"/var/lib/xen/. /var/lib/xen/
[ -L /var/run ] || fail "/var/run is not a symlink to /run"
for m in xen-evtchn xen-gntdev xen-gntalloc xen-privcmd xenfs xen-pciback loop; do modprobe $m || echo "modprobe $m failed"; done
mount -t xenfs xenfs /proc/xen || fail "xenfs"
ip link set lo up # VNC viewers connect over loopback
grep -q control_d /proc/xen/capabilities || fail "not dom0"
$XB/xenstored --pid-file /run/xenstored.pid || fail "xenstored"
for i in $(seq 1 100); do [ -S /run/xenstored/socket ] && break; sleep 0.1; done
$XB/xen-init-dom0 || fail "xen-init-dom0"
$XB/xenconsoled --pid-file=/run/xenconsoled.pid || fail "xenconsoled"
$XB/xl info | grep -E '^(xen_version|free_memory)' || fail "xl info"
echo "xen-qemuuser-shared:x:996:996::/nonexistent:/usr/sbin/nologin" >> /etc/passwd
echo "xen-qemuuser-shared:x:996:" >> /etc/group
$DMSANDBOX check || true
if [ -n "${SECCOMP_LOG:-}" ]; then
	export DMSANDBOX_TRACE=1 # per-step launch times in the qemu-dm log
	echo '{"version": 1, "seccomp_log": true}' > /run/dmsandbox-config.json
	export DMSANDBOX_CONFIG=/run/dmsandbox-config.json
	echo "XENRIG: seccomp in log mode (discovery run)"
fi
# What the qemu-xen profile logged (log mode) or killed: the seccomp
# package's own proposal from the kernel's records.
seccomp_report() { dmesg | grep -q 'type=1326' && { echo "--- seccomp records (qemu-xen):"; dmesg | $DMSANDBOX seccomp propose -profile qemu-xen; }; true; }

# Warm the launcher's root cache: the first start in a fresh dom0 copies
# QEMU's closure out of the 9p share, which under TCG can take most of
# libxl's fixed 60 s device model timeout. QEMU fails at once here (no
# domain 32000): only the root is wanted.
t0=$(date +%s)
$DMSANDBOX -xen-domid 32000 -machine xenfv -nodefaults -display none -vnc none >/dev/null 2>&1
echo "root cache warmed in $(( $(date +%s) - t0 )) s"

guest() { # name extra-config
	cat > /run/$1.cfg <<CFG
name = "$1"
type = "hvm"
memory = 64
vcpus = 1
device_model_version = "qemu-xen"
device_model_override = "$DMSANDBOX"
vnc = ${VNC:-0}
sdl = 0
serial = "pty"
boot = "c"
disk = [ ]
vif = [ ]
on_crash = "preserve"
# SeaBIOS finds nothing to boot and reboots after 60 s; on a loaded host
# the checks can take that long, and a reboot is a new domain.
on_reboot = "preserve"
$2
CFG
	if [ -n "${STRACE_IOCTLS:-}" ] && [ -x /usr/bin/strace ]; then
		# Discovery: every ioctl request the device model makes, each
		# checked against the profile (seccomp records carry no arguments).
		# -D: strace detaches, so xl create returns although its
		# daemonized child and the device model stay traced.
		strace -D -f -qq -e trace=ioctl -e raw=ioctl -o /run/strace-$1.txt timeout 90 $XB/xl -vvv create /run/$1.cfg > $RIG_OUT/xl-create-$1.log 2>&1 || { tail -40 $RIG_OUT/xl-create-$1.log; fail "xl create $1"; }
		grep -o 'ioctl(0x[0-9a-f]*, 0x[0-9a-f]*' /run/strace-$1.txt | sed 's/ioctl(//; s/,//' | sort -u | while read fd req; do
			v=$($DMSANDBOX seccomp check qemu-xen ioctl $((fd)) $req 2>&1 | head -1)
			[ "$v" = allow ] || echo "ioctl $req (fd $((fd))): $v under qemu-xen"
		done
	else
		timeout 90 $XB/xl -vvv create /run/$1.cfg > $RIG_OUT/xl-create-$1.log 2>&1 || { tail -40 $RIG_OUT/xl-create-$1.log; fail "xl create $1"; }
	fi
	ok "xl create $1"
	domid=$($XB/xl domid $1) || fail "domid $1"
	dmpid=$(xenstore-read /local/domain/$domid/image/device-model-pid) || fail "device-model-pid"
	tr '\0' ' ' < /proc/$dmpid/cmdline | grep -q "^$DMSANDBOX " || fail "pid $dmpid is not dmsandbox: $(tr '\0' ' ' < /proc/$dmpid/cmdline)"
	qpid=$(sed -n 's/^  "pid": \([0-9]*\),$/\1/p' /run/dmsandbox/xen-dm-$domid/state.json)
	[ -n "$qpid" ] || fail "no QEMU pid in state.json"
	st=$(grep -E '^(Uid|NoNewPrivs|Seccomp):' /proc/$qpid/status | tr '\t\n' '  ')
	echo "$1 QEMU pid $qpid: $st"
	echo "$st" | grep -q "Uid: 300$(printf %04d $domid) " || fail "$1 QEMU uid: $st"
	echo "$st" | grep -q "NoNewPrivs: 1" || fail "$1 NoNewPrivs"
	echo "$st" | grep -q "Seccomp: 2" || fail "$1 seccomp"
	ok "$1 QEMU confined"
	for i in $(seq 1 30); do $XB/xl dmesg | grep -q "(d$domid) HVM Loader" && break; sleep 1; done
	$XB/xl dmesg | grep "(d$domid)" | head -5
	$XB/xl dmesg | grep -q "(d$domid) HVM Loader" || fail "$1: no hvmloader output"
	ok "$1 runs hvmloader"
	[ -n "${PCI:-}" ] && pci_running $1 $domid
	[ -n "${HOTPLUG:-}" ] && pci_hotplug $1 $domid
	if [ "${VNC:-0}" = 1 ]; then
		port=$(xenstore-read /local/domain/$domid/console/vnc-port) || fail "$1: no vnc-port in xenstore"
		exec 3<>/dev/tcp/127.0.0.1/$port || fail "$1: VNC port $port not listening"
		greet=$(head -c 12 <&3); exec 3<&-
		[ "$greet" = "RFB 003.008" ] || fail "$1: VNC greeting '$greet'"
		ok "$1 VNC on port $port"
	fi
	$XB/xl destroy $1 || fail "xl destroy $1"
	for i in $(seq 1 50); do [ -e /run/dmsandbox/xen-dm-$domid ] || break; sleep 0.2; done
	[ ! -e /run/dmsandbox/xen-dm-$domid ] || fail "$1: run directory left"
	kill -0 $qpid 2>/dev/null && fail "$1: QEMU $qpid still running"
	kill -0 $dmpid 2>/dev/null && fail "$1: dmsandbox $dmpid still running"
	for p in /sys/fs/cgroup/*/dmsandbox/xen-dm-$domid; do [ -e "$p" ] && fail "$1: cgroup $p left"; done
	ok "$1 destroyed, nothing left"
	cp /var/log/xen/qemu-dm-$1.log $RIG_OUT/ 2>/dev/null
	[ -n "${PCI:-}" ] && pci_destroyed $1 $domid
	true
}
# PCI passthrough under dm_restrict: QEMU may not make the domctls and
# physdev ops itself (Xen refuses a restricted privcmd); the broker's xen
# backend makes them for it, each checked against the device's sysfs
# truth and audited. QEMU reaches it through the shim DM mode preloads,
# over the session DM mode opened before QEMU started. hvm1 (plain) and
# hvm2: no daemon yet, so DM mode runs the broker in its own process
# (embedded: audit under /var/log/dmsandbox/embedded/xen-dm-N); hvm3,
# hvm4: the daemon. hvm1 boots msiboot, which enables MSI on the edu.
BDF=0000:01:00.0  # edu
BDF2=0000:02:00.0 # e1000e
DAEMON_AUDIT=/var/log/dmsandbox/audit
AUDIT=$DAEMON_AUDIT
audit() { $DMSANDBOX audit tail -n 1000 $AUDIT 2>/dev/null; }
for d in $BDF $BDF2; do
	$XB/xl pci-assignable-add $d || fail "xl pci-assignable-add $d"
	[ "$(basename "$(readlink /sys/bus/pci/devices/$d/driver)")" = pciback ] || fail "$d not on pciback"
done
ok "$BDF $BDF2 assignable (pciback)"
pci_running() { # name domid
	[ "$PCI" = embedded ] && AUDIT=/var/log/dmsandbox/embedded/xen-dm-$2 || AUDIT=$DAEMON_AUDIT
	for d in $PCIDEVS; do
		$XB/xl pci-list $1 | grep -q "${d#0000:}" || fail "$1: $d not in xl pci-list: $($XB/xl pci-list $1 2>&1)"
	done
	grep -q "broker session handed to QEMU" /var/log/xen/qemu-dm-$1.log || fail "$1: no broker session handed to QEMU"
	# hvmloader sizes and places the device's 1 MiB BAR; enabling decode
	# makes QEMU map it into the guest: memory_mapping through the broker.
	for i in $(seq 1 30); do audit | grep -q " dom$2 .* memory_mapping  *allow" && break; sleep 1; done
	echo "--- audit (domain $2):"; audit | grep " dom$2 " | cut -c1-220
	for op in open_file map_pirq bind_pt_pci_irq memory_mapping; do
		audit | grep " dom$2 " | grep -q " $op  *allow" || fail "$1: no allowed $op in the broker's audit log"
	done
	ok "$1: QEMU's passthrough calls made by the broker (open_file, map_pirq, bind_pt_pci_irq, memory_mapping audited)"
	# One device, one session, across broker processes: the broker holds
	# each device's lock while the session owns it.
	for d in $PCIDEVS; do
		flock -n /run/dmsandbox/devices/$d.lock true && fail "$1: $d's device lock not held while the session owns it"
	done
	ok "$1: device locks held ($PCI broker)"
	case " $PCIDEVS " in *" $BDF2 "*)
	# The e1000e's MSI-X table, mapped at realize through the shim's
	# /dev/mem stand-in; its I/O BAR once hvmloader enables I/O decode.
	audit | grep " dom$2 " | grep -q " open_file  *allow .*file=msix_bar.*$BDF2 resource3 (table)" || fail "$1: the e1000e's MSI-X table was not opened through the broker"
	ok "$1: the e1000e's MSI-X table mapped through the broker (open_file msix_bar)"
	for i in $(seq 1 20); do audit | grep " dom$2 " | grep -q " ioport_mapping  *allow" && break; sleep 1; done
	audit | grep " dom$2 " | grep -q " ioport_mapping  *allow" && ok "$1: the e1000e's I/O BAR mapped through the broker (ioport_mapping)" || echo "XENRIG-NOTE: no ioport_mapping (hvmloader left I/O decode off)"
	esac
	if [ -n "${MSIBOOT:-}" ]; then
		# msiboot (the guest's disk) programs the edu's MSI address and
		# data and sets MSI enable: QEMU's xen_pt maps an MSI pirq and
		# binds it to the guest vector, through the broker.
		for i in $(seq 1 60); do $XB/xl dmesg | grep -q "(d$2) MSIBOOT: done" && break; sleep 1; done
		$XB/xl dmesg | grep "(d$2) MSIBOOT:"
		$XB/xl dmesg | grep -q "(d$2) MSIBOOT: msi enabled" || fail "$1: msiboot did not enable MSI"
		for op in map_pirq_msi update_msi_irq; do
			audit | grep " dom$2 " | grep -q " $op  *allow" || fail "$1: no allowed $op after the guest enabled MSI"
		done
		ok "$1: the guest enabled MSI on the edu: map_pirq_msi and update_msi_irq made by the broker"
		$XB/xl dmesg | grep -q "(d$2) MSIBOOT: got interrupt" || fail "$1: the edu's MSI did not reach the guest"
		ok "$1: the edu's MSI delivered to the guest vector"
	fi
	case " $PCIDEVS " in *" $BDF "*)
	# SeaBIOS runs the edu's option ROM: QEMU's xen_pt forwards the ROM
	# BAR's enable bit (the write filter allows it at the kernel's ROM
	# address only) and maps the ROM BAR into the guest, both through the
	# broker.
	rom=$(sed -n 7p /sys/bus/pci/devices/$BDF/resource | cut -d' ' -f1)
	[ $((rom)) -ne 0 ] || fail "$1: the edu has no ROM BAR in dom0"
	rommfn=$(printf '%#x' $((rom >> 12)))
	for i in $(seq 1 30); do audit | grep " dom$2 " | grep -q " memory_mapping  *allow .*add=1 .*mfn=$rommfn " && break; sleep 1; done
	audit | grep " dom$2 " | grep -E -q " config_write  *allow .*bdf=$BDF off=0x30 size=4 value=0x[0-9a-f]*[13579bdf]( |$)" || fail "$1: the edu's ROM BAR was not enabled through the broker"
	audit | grep " dom$2 " | grep -q " memory_mapping  *allow .*add=1 .*mfn=$rommfn " || fail "$1: the edu's ROM BAR ($rom) was not mapped through the broker"
	ok "$1: SeaBIOS ran the edu's option ROM: ROM BAR enabled through the write filter and mapped through the broker"
	esac
	if [ -n "${MSIXBOOT:-}" ]; then
		# msixboot (the guest's disk) programs the e1000e's MSI-X table
		# entry 0 (QEMU's emulated table) and sets MSI-X enable: xen_pt
		# maps a pirq for entry 0 with the table's host address and binds
		# it to the vector, through the broker, which checks the entry
		# against the table size and the address against the BAR.
		for i in $(seq 1 60); do $XB/xl dmesg | grep -q "(d$2) MSIXBOOT: done" && break; sleep 1; done
		$XB/xl dmesg | grep "(d$2) MSIXBOOT:"
		$XB/xl dmesg | grep -q "(d$2) MSIXBOOT: msix enabled, entry 0 vector 0x61" || fail "$1: msixboot did not enable MSI-X"
		audit | grep " dom$2 " | grep -q " map_pirq_msi  *allow .*entry=0 table_base=0x" || fail "$1: no allowed map_pirq_msi of MSI-X entry 0 after the guest enabled MSI-X"
		audit | grep " dom$2 " | grep -q " update_msi_irq  *allow" || fail "$1: no allowed update_msi_irq after the guest enabled MSI-X"
		ok "$1: the guest enabled MSI-X on the e1000e: map_pirq_msi (entry 0, table base checked) and update_msi_irq made by the broker"
		$XB/xl dmesg | grep -q "(d$2) MSIXBOOT: got interrupt" || fail "$1: the e1000e's MSI-X interrupt did not reach the guest"
		ok "$1: the e1000e's MSI-X interrupt delivered to the guest vector"
	fi
	# Refusals are the broker's to make, but none is expected here.
	audit | grep " dom$2 " | grep -E " (deny|failed) " | cut -c1-250
	! grep -i -E "xen_pt.*(error|fail)|Permission denied" /var/log/xen/qemu-dm-$1.log || fail "$1: xen_pt errors in the QEMU log"
	$XB/xl dmesg | grep "(d$2)" | grep -i "pci dev" | head -8
}
pci_destroyed() { # name domid
	[ "$PCI" = embedded ] && AUDIT=/var/log/dmsandbox/embedded/xen-dm-$2 || AUDIT=$DAEMON_AUDIT
	$DMSANDBOX audit verify $AUDIT || fail "audit chain"
	echo "--- audit after destroy (domain $2):"
	audit | grep " dom$2 " | sed -n '/memory_mapping  *allow.*add=1/,$p' | cut -c1-220
	# Without a guest OS the device_del libxl sends never completes
	# (RIGS.md): QEMU is stopped with the device still in place and the
	# broker undoes what the session holds. Either way, each piece must
	# be undone by the broker, and none may fail.
	for what in "unbind_pt_irq|undo  *allow  *intx" "unmap_pirq|undo  *allow  *pirq" "memory_mapping  *allow.*add=0|undo  *allow  *mem" "${MSIBOOT:+unbind_msi_irq|undo  *allow  *msi}" "${MSIXBOOT:+unbind_msi_irq|undo  *allow  *msi}"; do
		[ -n "$what" ] || continue
		audit | grep " dom$2 " | grep -q -E " ($what)" || fail "$1: not undone through the broker: $what"
	done
	audit | grep " dom$2 " | grep " failed " && fail "$1: a broker step failed"
	if [ "$PCI" = embedded ]; then
		audit | grep " dom$2 " | grep -q " session_close " || fail "$1: the embedded broker did not close the session"
	else
		left=$($DMSANDBOX broker ls | awk -v d=$2 'NR > 1 && $2 == d')
		[ -z "$left" ] || fail "$1: broker still holds a session for domain $2: $left"
	fi
	audit | grep " dom$2 " | grep -q " undo_reset  *allow" || fail "$1: the broker did not reset the device"
	for d in $PCIDEVS; do
		flock -n /run/dmsandbox/devices/$d.lock true || fail "$1: $d's device lock still held after destroy"
	done
	ok "$1: INTx binding, pirq and BAR mapping undone, device reset by the broker, session closed, audit chain verified"
	AUDIT=$DAEMON_AUDIT
}
install -m 600 "$MSIBOOT_IMG" /var/lib/xen/msiboot.img || fail "msiboot image"
VNC=1 PCIDEVS=$BDF PCI=embedded MSIBOOT=1 guest hvm1 'pci = [ "'$BDF'" ]
disk = [ "format=raw,vdev=hda,access=rw,backendtype=qdisk,target=/var/lib/xen/msiboot.img" ]'
install -m 600 "$MSIXBOOT_IMG" /var/lib/xen/msixboot.img || fail "msixboot image"
PCIDEVS=$BDF2 PCI=embedded MSIXBOOT=1 guest hvm2 'dm_restrict = 1
pci = [ "'$BDF2'" ]
disk = [ "format=raw,vdev=hda,access=rw,backendtype=qdisk,target=/var/lib/xen/msixboot.img" ]'
[ -S /run/dmsandbox/broker.sock ] && fail "a broker socket appeared (embedded must not listen)"

# The daemon requires pre-authorisation from here on. hvm3 is created
# with pci=[...]: libxl's device_add comes before anyone could know its
# domid, so the site authorises by name (dmsandbox attach --domain); DM
# mode gives the broker libxl's -name when it opens the session.
$DMSANDBOX broker run --backend xen --require-authorization > $RIG_OUT/broker.log 2>&1 &
for i in $(seq 1 100); do [ -S /run/dmsandbox/broker.sock ] && break; sleep 0.1; done
[ -S /run/dmsandbox/broker.sock ] || { cat $RIG_OUT/broker.log; fail "broker daemon"; }
grep -q '"require_authorization": true' /var/lib/dmsandbox/broker/authorizations.json || fail "the daemon did not write its policy down"
ok "broker daemon (xen backend, --require-authorization) listening, policy written for embedded brokers"
for d in $BDF $BDF2; do $DMSANDBOX attach --domain hvm3 --device $d || fail "attach --domain hvm3 --device $d"; done
ok "hvm3's devices authorised by name before the domain exists"
PCIDEVS="$BDF $BDF2" PCI=daemon guest hvm3 'dm_restrict = 1
pci = [ "'$BDF'", "'$BDF2'" ]'
audit | grep -q " session_open .*name=hvm3" || fail "hvm3: the session was not opened with the domain's name"
ok "hvm3: passthrough at create under --require-authorization, authorised by name"
# The name's authorisations are the site's standing policy: they outlive
# the domain, until withdrawn (hvm4 below needs the edu).
[ "$($DMSANDBOX attach --list --domain hvm3 | sed 1d | wc -l)" = 2 ] || fail "hvm3's authorisations did not outlive the domain"
for d in $BDF $BDF2; do $DMSANDBOX detach --domain hvm3 --device $d || fail "detach --domain hvm3 --device $d"; done
[ -z "$($DMSANDBOX attach --list | sed 1d)" ] || fail "authorisations left after detach --domain"
ok "hvm3's authorisations outlived it and were withdrawn by name"

# Hot-add with pre-authorisation mandatory: libxl's device_add of a
# device the site did not authorise for the domain is refused (and
# audited), the site's hotplug script (contrib/xen/dmsandbox-pci)
# authorises and attaches, and its detach withdraws the device from the
# live session.
pci_hotplug() { # name domid
	$XB/xl pci-attach $2 $BDF > /run/xl-unauth.log 2>&1 && fail "$1: an unauthorised hot-add went through"
	audit | grep " dom$2 " | grep -q " attach  *deny  *EACCES" || { tail -5 /run/xl-unauth.log; fail "$1: no refused attach in the audit log"; }
	ok "$1: unauthorised xl pci-attach refused by the broker (audited)"
	PATH=$XB:$PATH sh $CONTRIB_PCI pci-attach $2 $BDF || fail "$1: dmsandbox-pci pci-attach: exit $?"
	$XB/xl pci-list $1 | grep -q "${BDF#0000:}" || fail "$1: not in xl pci-list after pci-attach"
	for op in map_pirq bind_pt_pci_irq; do
		audit | grep " dom$2 " | grep -q " $op  *allow" || fail "$1: no allowed $op after the hot-add"
	done
	ok "$1: authorised hot-add through dmsandbox-pci (map_pirq, bind_pt_pci_irq through the broker)"
	PATH=$XB:$PATH sh $CONTRIB_PCI pci-detach $2 $BDF || echo "dmsandbox-pci pci-detach: exit $? (xl pci-detach cannot complete without a guest OS)"
	$DMSANDBOX broker ls | awk -v d=$2 'NR > 1 && $2 == d' | grep "$BDF" && fail "$1: the session still holds $BDF after pci-detach"
	audit | grep " dom$2 " | grep -q " undo  *allow  *pirq " || fail "$1: the withdrawn device's pirq was not undone"
	[ -z "$(sh $CONTRIB_PCI list $2 | sed 1d)" ] || fail "$1: still authorised after pci-detach"
	ok "$1: dmsandbox-pci pci-detach withdrew the device from the live session (undone by the broker)"
}
# passthrough: a domain created without pci=[...] gets no IOMMU context
# unless asked (Xen >= 4.13), and then nothing can be hot-added.
HOTPLUG=1 guest hvm4 'dm_restrict = 1
passthrough = "enabled"'
seccomp_report
echo XENRIG-DONE
`
