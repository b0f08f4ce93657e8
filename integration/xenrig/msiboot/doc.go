// Package msiboot builds a boot-sector guest that exercises MSI on QEMU's
// edu PCI device, and reads back what it reported.
//
// The guest is one 512-byte MBR boot sector (msiboot.S, GNU as, real
// mode) on a 1 MiB raw disk. SeaBIOS loads it; it finds edu (1234:11e8)
// on bus 0, sets memory decode and bus master, programs the MSI
// capability (address 0xFEE00000, data = vector 0x60) and enables it,
// has edu raise an interrupt (BAR 0 + 0x60) and takes it in a real-mode
// IVT handler, which acknowledges it (BAR 0 + 0x64) and sends the local
// APIC an EOI. Each step is a line on the debug port 0xE9:
//
//	MSIBOOT: edu at 00:04.0 bar0 f3000000
//	MSIBOOT: msi enabled, vector 0x60
//	MSIBOOT: got interrupt, status 0000005a
//	MSIBOOT: done
//
// or "no edu", "no msi", "no interrupt" (then "done"). Under Xen those
// lines are in `xl dmesg` as "(dN) MSIBOOT: ..."; under plain QEMU on an
// isa-debugcon at iobase 0xe9. In a Xen guest with edu passed through,
// the MSI config writes are what make QEMU's xen_pt map a pirq for the
// device (xc_physdev_map_pirq_msi) and bind it to the vector
// (xc_domain_update_msi_irq), and "got interrupt" is the device's MSI
// delivered to the guest through Xen.
//
// Files:
//
//	msiboot.S  the boot sector, with a why-comment for each step (unreal
//	           mode for the accesses above 1 MiB, masked 8259s, APIC
//	           software enable, EOI)
//	build.go   Build: as, ld and objcopy (binutils) in a directory, the
//	           source embedded, the image checked (size, 55AAh)
//	report.go  Parse and Check: the MSIBOOT lines out of a log (xl dmesg,
//	           a debugcon file), with a fuzz target
//
// The image is assembled when needed rather than committed: binutils is
// there wherever this module builds (cgo needs gcc, which pulls it in),
// and the source is then the only copy. The tests boot it in plain QEMU
// (q35 and pc, TCG and KVM when /dev/kvm opens) and check the lines,
// with two controls that must fail: no edu device, and MSI left disabled
// (assembled with NO_MSI_ENABLE), where no interrupt may arrive.
package msiboot
