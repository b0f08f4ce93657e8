// Package pci is the host's truth about PCI devices: what sysfs says a device
// is (ids, class, BARs, interrupt, capabilities parsed from config space,
// IOMMU group, reset methods, driver, SR-IOV relations, the bridge above it
// and its siblings), how to bind it to a passthrough stub driver and back,
// and how to reset it.
//
// Every decision the broker takes about a device rests on this package, so
// it parses defensively: sysfs files and config space are treated as
// untrusted input (a malicious or broken device controls its own config
// space), and every parser returns an error naming the device and the file
// instead of panicking. The sysfs root is injectable (Sysfs.Root) so that
// the same code runs against trees captured from QEMU-emulated devices
// (testdata/sysfs/, made by testdata/capture.sh).
//
// A device is only ever named by a BDF, obtained from ParseBDF or from a
// sysfs listing.
package pci
