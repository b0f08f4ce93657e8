// Package xenrig boots Xen 4.17 with a Debian dom0 under QEMU/TCG (the
// nested Xen rig of shared/RIGS.md) and runs a bash script in dom0, so
// that DM mode can be tested with the real libxl: `xl create` of an HVM
// guest whose device_model_override is dmsandbox.
//
// It reuses the VFIO rig (integration/rig) for everything that is not
// Xen: the cache directory and its run lock (one nested guest at a time
// on this machine), Debian's kernel, and the initramfs whose two init
// stages mount the host's / read-only over 9p under a tmpfs overlay,
// switch_root into it and run $RIG_OUT/script.sh. What differs:
//
//	xen.go   the Xen debs (apt-get download, dpkg -x, never installed)
//	         and the multiboot xen.elf, cached
//	boot.go  the L0 command line: xen.elf as -kernel, the dom0 kernel and
//	         initramfs as multiboot modules (-initrd "vmlinuz args,initrd"),
//	         the CPU model dom0 survives under TCG, timeout and one retry
//
// Xen itself is not installed in dom0: the script copies the unpacked
// tree over the (RAM) overlay root, then starts xenstored, xen-init-dom0
// and xenconsoled as Debian's xencommons would.
package xenrig
