// Package seccomp holds dmsandbox's seccomp profiles and their one compiler.
//
// Profiles are data: one JSON file per profile under profiles/, embedded in
// the binary, each rule carrying the code path that needs it. A profile
// includes shared parts (abstract profiles such as qemu-common, never loaded
// alone). Load composes and validates a profile; Config turns it into the
// configs.Seccomp that runc's libcontainer installs in the sandbox just
// before it executes QEMU; BPF exports the same program runc loads, so tests
// can run it in the userspace evaluator (Evaluate); Install loads it into the
// current process for the broker and for victim tests.
//
// The default action kills the whole process (SCMP_ACT_KILL_PROCESS). LogMode
// turns the default into SCMP_ACT_LOG for discovery (docs/seccomp.md).
//
// RunBench measures the compiled filters in child processes: the running
// binary re-executed with DMSANDBOX_SECCOMP_BENCH_CHILD set, which this
// package's init turns into the child's loop before main runs (bench.go).
//
// The package needs cgo (libseccomp, and the kernel and Xen headers the
// ioctl names come from).
package seccomp
