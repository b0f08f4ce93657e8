// Package dmargv turns the argv libxl gives a device model (QEMU's, as
// libxl_dm.c's libxl__build_device_model_args_new builds it in Xen
// 4.17-4.19) into what dmsandbox runs: a launcher.Spec for the confined
// QEMU, the QMP sockets the launcher serves on libxl's behalf, and the
// fds and host objects QEMU must be handed because it cannot reach them
// from inside the sandbox.
//
// Every option is in one of four classes (options.go):
//
//	kept        passed to QEMU unchanged (also every option this package
//	            does not know: QEMU decides what it means)
//	translated  rewritten so that QEMU gets an fd instead of a host path
//	            or a host privilege: libxl's QMP chardevs (served by the
//	            launcher's proxy), -incoming fd:N, -drive file=PATH,
//	            -netdev tap, -serial pty
//	dropped     superseded by the sandbox and logged: -chroot, -runas,
//	            -run-with chroot=/user=, -pidfile, -D
//	refused     weakens the sandbox or cannot work in it: -daemonize,
//	            -plugin, -L outside QEMU's data dirs, host devices on the
//	            argv (PCI passthrough comes only over QMP, through the
//	            broker), tap scripts
//
// Fd numbering: QEMU gets the launcher's management QMP socket as fd 3
// (launcher/fds.go) and Handed[k] as fd FirstFD+k, so the argv this
// package writes names those numbers, never libxl's.
package dmargv
