#!/bin/bash
# capture-qemu.sh — boot a Linux kernel under QEMU (TCG) with a tiny busybox
# initramfs that runs capture.sh on the guest's sysfs and prints the tree as
# base64 on the serial console; unpack it into sysfs/<NAME>.
#
# usage: KERNEL=/path/vmlinuz capture-qemu.sh NAME [QEMU ARGS...]
#   APPEND  extra kernel arguments (e.g. "intel_iommu=on iommu=pt")
#
# No modules are loaded in the guest, so only built-in drivers (pcieport)
# are bound; the in-rig capture (integration/rig) has the modular ones.
# The trees in sysfs/ were made with Debian's 6.1.0-56-amd64 and QEMU 7.2:
#   capture-qemu.sh q35-vfio-rig -machine q35,kernel-irqchip=split \
#     -device intel-iommu,intremap=on,caching-mode=on \
#     -device pcie-root-port,id=rp1,chassis=1,slot=1 -device edu,bus=rp1 -device edu \
#     -device e1000e -device virtio-net-pci,netdev=n0 -netdev user,id=n0 \
#     -device pcie-root-port,id=rp2,chassis=2,slot=2 -device virtio-rng-pci,bus=rp2 \
#     -device pcie-root-port,id=rp3,chassis=3,slot=3 \
#     -device virtio-rng-pci,bus=rp3,addr=0.0,multifunction=on -device edu,bus=rp3,addr=0.1
#   (APPEND="intel_iommu=on iommu=pt")
#   capture-qemu.sh i440fx-multifn -machine pc -device e1000 -device edu \
#     -device virtio-blk-pci,drive=d0 -drive if=none,id=d0,file=<any file>,format=raw,readonly=on
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
name=${1:?usage: KERNEL=vmlinuz $0 NAME [QEMU ARGS...]}
shift
: "${KERNEL:?set KERNEL to a bzImage}"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/ir/bin" "$work/ir/proc" "$work/ir/sys" "$work/ir/dev" "$work/ir/tmp"
cp "$(command -v busybox)" "$work/ir/bin/busybox"
cp "$here/capture.sh" "$work/ir/capture.sh"
cat >"$work/ir/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs dev /dev
name=$(sed -n 's/.*cap.name=\([^ ]*\).*/\1/p' /proc/cmdline)
sh /capture.sh /tmp/cap/$name "booted by capture-qemu.sh: $(cat /proc/cmdline)" >/dev/null 2>&1 || echo CAPFAIL
echo CAPBEGIN
tar -C /tmp/cap -cz . | base64
echo CAPEND
poweroff -f
INIT
chmod +x "$work/ir/init"
(cd "$work/ir" && find . | cpio -o -H newc 2>/dev/null | gzip >"$work/initrd.gz")
timeout 300 qemu-system-x86_64 -accel tcg,thread=multi -m 512 -smp 1 -nographic -no-reboot \
	-kernel "$KERNEL" -initrd "$work/initrd.gz" \
	-append "console=ttyS0 quiet panic=-1 cap.name=$name ${APPEND:-}" "$@" >"$work/console.log" 2>&1
if grep -q CAPFAIL "$work/console.log" || ! grep -q CAPEND "$work/console.log"; then
	echo "capture-qemu: capture failed, console:" >&2
	tail -20 "$work/console.log" >&2
	exit 1
fi
[ ! -e "$here/sysfs/$name" ] || { echo "capture-qemu: $here/sysfs/$name exists" >&2; exit 1; }
sed -n '/CAPBEGIN/,/CAPEND/p' "$work/console.log" | tr -d '\r' | sed '1d;$d' | base64 -d | tar -xzf - -C "$here/sysfs"
echo "capture-qemu: wrote $here/sysfs/$name" >&2
