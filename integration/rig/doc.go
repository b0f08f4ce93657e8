// Package rig boots a nested "L1" Linux guest under QEMU/TCG with an emulated
// VT-d IOMMU and chosen PCI devices, runs a shell script inside it and returns
// the script's exit status and logs. It is the test rig for what this machine
// cannot do itself: real VFIO passthrough, bus resets, driver binding (see
// shared/RIGS.md for the measurements behind every choice here).
//
// The pieces, each in its own file:
//
//	kernel.go     Debian's linux-image, fetched with apt-get download and
//	              unpacked (never installed) into a cache directory
//	initramfs.go  busybox-static + the kernel modules (in modprobe order),
//	              cached by content hash; cpio.go writes the archive
//	guest/        the two init stages that run inside L1
//	qemu.go       the L0 QEMU command line
//	rig.go        Run: boot, timeout, one retry, collect the result
//	skip.go       SkipIfNoRig for tests
//
// Inside L1 the host's / is shared read-only over 9p; a tmpfs overlay on top
// of it is moved onto / (switch_root), so the guest sees the host's binaries
// (Go toolchain, qemu, bin/dmsandbox built by the test) at their host paths,
// can write anywhere (into RAM), and is a proper mount-namespace root:
// pivot_root, user namespaces and cgroups work, which a plain chroot into the
// 9p share does not allow. A second, writable 9p share (Result.OutDir on the
// host, $RIG_OUT in L1) carries the script, its log and its exit status back.
//
// L1 runs under TCG because this host's KVM (kvm_pvm) cannot boot a stock
// Linux kernel; inside L1, KVM works again (TCG emulates SVM/VMX).
package rig
