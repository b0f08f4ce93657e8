// Package integration holds the tests that exercise dmsandbox against real
// facilities: real QEMU, cgroups, seccomp, and, through the rig package, a
// nested L1 guest with an emulated IOMMU where VFIO passthrough is real.
// It has no non-test code of its own; see rig/ for the harness.
package integration
