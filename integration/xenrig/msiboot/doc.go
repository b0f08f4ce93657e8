// Package msiboot builds boot-sector guests that exercise MSI on QEMU's
// edu PCI device (msiboot) and MSI-X on QEMU's e1000e (msixboot), and
// reads back what they reported.
//
// Each guest is one 512-byte MBR boot sector (GNU as, real mode) on a
// 1 MiB raw disk. SeaBIOS loads it; it scans bus 0 (devices 0-31,
// function 0) for its device, sets memory decode and bus master, programs
// the interrupt, has the device raise it and takes it in a real-mode IVT
// handler, which acknowledges it to the device and sends the local APIC
// an EOI. Each step is a line on the debug port 0xE9; under Xen the lines
// are in `xl dmesg` as "(dN) MSIBOOT: ..." or "(dN) MSIXBOOT: ...", under
// plain QEMU on an isa-debugcon at iobase 0xe9. Both end in "done" and
// then halt with interrupts enabled (Xen powers off a domain whose vCPUs
// all halt with IF = 0).
//
// msiboot (Build, Parse) finds edu (1234:11e8), programs its MSI
// capability (address 0xFEE00000, data = vector 0x60) and enables it,
// has edu raise an interrupt (BAR 0 + 0x60) and acknowledges it (BAR 0 +
// 0x64):
//
//	MSIBOOT: edu at 00:04.0 bar0 f3000000
//	MSIBOOT: msi enabled, vector 0x60
//	MSIBOOT: got interrupt, status 0000005a
//	MSIBOOT: done
//
// or "no edu", "no msi", "no interrupt" (then "done").
//
// msixboot (BuildMSIX, ParseMSIX) finds an e1000e (8086:10d3), walks the
// capability list to MSI-X (11h), finds its table through Table
// Offset/BIR (a 32-bit memory BAR; the e1000e's is BAR 3), programs table
// entry 0 (address 0xFEE00000, upper 0, data = vector 0x61, vector
// control 0: unmasked), then sets the MSI-X enable bit with the function
// mask clear. It routes the e1000e's "other" cause to entry 0 (IVAR
// 0xE4), unmasks it (IMS 0xD0) and sets it (ICS 0xC8), which makes
// QEMU's e1000e send entry 0's message; the handler reads the causes from
// ICR (0xC0) and writes them back to clear them:
//
//	MSIXBOOT: e1000e at 00:05.0 bar0 f3000000
//	MSIXBOOT: msix enabled, entry 0 vector 0x61
//	MSIXBOOT: got interrupt, icr 81000000
//	MSIXBOOT: done
//
// or "no e1000e", "no msix" (no capability, or the table in a BAR it
// cannot use: I/O, 64-bit, unassigned), "no interrupt" (then "done").
// bar0 is the BAR 0 register as read; the table's address is not printed
// (no room). The icr value is the causes register: bit 24 ("other") must
// be set, bit 31 (asserted) is, and others may be (link status change).
//
// Under Xen with the device passed through, the config and table writes
// are what make QEMU's xen_pt map a pirq for the device
// (xc_physdev_map_pirq_msi; for MSI-X with the entry number and the
// table's BAR) and bind it to the guest vector (xc_domain_update_msi_irq):
// for MSI when the enable bit is set, for MSI-X when it is set with an
// entry programmed and unmasked first. "got interrupt" is then the
// device's message delivered to the guest through Xen.
//
// Files:
//
//	msiboot.S      the MSI boot sector, with a why-comment for each step
//	               (unreal mode for the accesses above 1 MiB, masked
//	               8259s, APIC software enable, EOI)
//	msixboot.S     the MSI-X boot sector, likewise; it fits 510 bytes by
//	               a few tricks said at its top (strings end in bit 7)
//	build.go       Build and BuildMSIX: as, ld and objcopy (binutils) in
//	               a directory, the source embedded, the image checked
//	               (size, 55AAh)
//	report.go      Parse and Check: the MSIBOOT lines out of a log (xl
//	               dmesg, a debugcon file), with a fuzz target
//	msixreport.go  ParseMSIX and Check: the MSIXBOOT lines, likewise
//
// The images are assembled when needed rather than committed: binutils is
// there wherever this module builds (cgo needs gcc, which pulls it in),
// and the source is then the only copy. The tests boot them in plain QEMU
// (q35 and pc, TCG and KVM when /dev/kvm opens) and check the lines, with
// two controls each that must fail: no device (no edu; edu but no
// e1000e), and the interrupt left disabled (assembled with NO_MSI_ENABLE
// or NO_MSIX_ENABLE: the same write with the enable bit clear), where no
// interrupt may arrive.
package msiboot
