#!/bin/bash
# capture.sh — copy the parts of a Linux sysfs that package pci reads into a
# tree rooted like "/", so that `dmsandbox pci --sysfs-root DEST ...` and the
# unit tests (NewSysfs(DEST)) work on it.
#
# usage: capture.sh [-s SRC_ROOT] DEST [NOTE]
#   SRC_ROOT  root of the system to capture (default /); reads SRC_ROOT/sys
#             and SRC_ROOT/proc/sys/kernel/osrelease
#   DEST      output directory (created; must not exist or be empty)
#   NOTE      free text stored in DEST/CAPTURE (e.g. the QEMU command line)
#
# Run it as root: config space beyond 64 bytes is readable by root only.
#
# Layout written (symlinks keep their original *relative* targets, so they
# resolve inside DEST exactly as they do under /sys):
#   sys/bus/pci/devices/<bdf>           -> ../../../devices/pci0000:00/.../<bdf>
#   sys/devices/pci.../<bdf>/           config resource irq vendor device class
#                                       subsystem_vendor subsystem_device revision
#                                       reset_method driver_override enable
#                                       power_state local_cpulist numa_node
#                                       reset (empty: only its presence matters)
#                                       driver iommu_group physfn virtfn* (links)
#   sys/bus/pci/drivers/<name>/         bind unbind new_id remove_id (empty files)
#   sys/bus/pci/drivers_probe           (empty file)
#   sys/kernel/iommu_groups/<n>/devices/<bdf> -> ../../../../devices/.../<bdf>
#   sys/kernel/iommu_groups/<n>/type
#   proc/sys/kernel/osrelease
#   CAPTURE                             where, when, uname, NOTE
#
# The writable files (driver_override, unbind, drivers_probe, reset_method,
# reset, config) are plain files in the copy; tests copy the tree to a temp
# dir and let a fake kernel record and simulate writes.
set -euo pipefail

src=/
while getopts s: opt; do
	case $opt in
	s) src=$OPTARG ;;
	*) echo "usage: $0 [-s SRC_ROOT] DEST [NOTE]" >&2; exit 2 ;;
	esac
done
shift $((OPTIND - 1))
[ $# -ge 1 ] || { echo "usage: $0 [-s SRC_ROOT] DEST [NOTE]" >&2; exit 2; }
dest=$1
note=${2:-}
src=${src%/}
sys=$src/sys

[ -d "$sys/bus/pci/devices" ] || { echo "capture: $sys/bus/pci/devices: not a sysfs" >&2; exit 1; }
if [ -e "$dest" ] && [ -n "$(ls -A "$dest")" ]; then
	echo "capture: $dest exists and is not empty" >&2
	exit 1
fi
[ "$(id -u)" = 0 ] || echo "capture: warning: not root, config space will be cut to 64 bytes" >&2
mkdir -p "$dest"

# copy_file SRC DST: cat, not cp — sysfs reports every attribute as 4096
# bytes long; unreadable (write-only) attributes are skipped.
copy_file() {
	if cat "$1" >"$2.tmp" 2>/dev/null; then
		mv "$2.tmp" "$2"
	else
		rm -f "$2.tmp"
	fi
}

attrs="config resource irq vendor device class subsystem_vendor subsystem_device revision
reset_method driver_override enable power_state local_cpulist numa_node"

drivers=""
for link in "$sys"/bus/pci/devices/*; do
	[ -L "$link" ] || continue
	bdf=$(basename "$link")
	target=$(readlink "$link")              # ../../../devices/pci0000:00/...
	mkdir -p "$dest/sys/bus/pci/devices"
	ln -s "$target" "$dest/sys/bus/pci/devices/$bdf"
	out=$dest/sys/bus/pci/devices/$target
	mkdir -p "$out"
	for a in $attrs; do
		[ -e "$sys/bus/pci/devices/$bdf/$a" ] && copy_file "$sys/bus/pci/devices/$bdf/$a" "$out/$a"
	done
	[ -e "$sys/bus/pci/devices/$bdf/reset" ] && : >"$out/reset"
	for l in driver iommu_group physfn "$sys/bus/pci/devices/$bdf"/virtfn*; do
		l=$(basename "$l")
		[ -L "$sys/bus/pci/devices/$bdf/$l" ] || continue
		ln -s "$(readlink "$sys/bus/pci/devices/$bdf/$l")" "$out/$l"
	done
done

# Drivers: every registered PCI driver, as a directory of empty control
# files, so binding code finds the attributes it writes.
mkdir -p "$dest/sys/bus/pci/drivers"
for d in "$sys"/bus/pci/drivers/*; do
	[ -d "$d" ] || continue
	n=$(basename "$d")
	mkdir -p "$dest/sys/bus/pci/drivers/$n"
	for f in bind unbind new_id remove_id; do
		[ -e "$d/$f" ] && : >"$dest/sys/bus/pci/drivers/$n/$f"
	done
done
: >"$dest/sys/bus/pci/drivers_probe"

# IOMMU groups.
if [ -d "$sys/kernel/iommu_groups" ]; then
	mkdir -p "$dest/sys/kernel/iommu_groups"
	for g in "$sys"/kernel/iommu_groups/*; do
		[ -d "$g" ] || continue
		n=$(basename "$g")
		mkdir -p "$dest/sys/kernel/iommu_groups/$n/devices"
		[ -e "$g/type" ] && copy_file "$g/type" "$dest/sys/kernel/iommu_groups/$n/type"
		for m in "$g"/devices/*; do
			[ -L "$m" ] || continue
			ln -s "$(readlink "$m")" "$dest/sys/kernel/iommu_groups/$n/devices/$(basename "$m")"
		done
	done
fi

mkdir -p "$dest/proc/sys/kernel"
copy_file "$src/proc/sys/kernel/osrelease" "$dest/proc/sys/kernel/osrelease"

{
	echo "captured: $(date -u +%Y-%m-%dT%H:%M:%SZ) from ${src:-/} by pci/testdata/capture.sh"
	echo "uname: $(uname -a)"
	[ -n "$note" ] && echo "note: $note"
	echo "devices:"
	for link in "$dest"/sys/bus/pci/devices/*; do
		b=$(basename "$link")
		printf '  %s %s:%s class %s driver %s\n' "$b" \
			"$(cat "$link/vendor" 2>/dev/null)" "$(cat "$link/device" 2>/dev/null)" \
			"$(cat "$link/class" 2>/dev/null)" "$(basename "$(readlink "$link/driver" 2>/dev/null || echo none)")"
	done
} >"$dest/CAPTURE"
echo "capture: wrote $dest" >&2
