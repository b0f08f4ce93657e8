package broker

import (
	"github.com/dmsandbox/dmsandbox/pci"
)

// The config-space write filter, after xen-pciback's conf_space*.c: a
// guest (through QEMU) may change only the bits pciback lets a guest
// change on real hardware; everything else — BARs, the ROM BAR,
// interrupt line, capability pointers, MSI address/data (Xen programs
// those), vendor capabilities — is read-only unless the device was
// attached permissive (by the broker's config, never by the client).
//
// The filter is a per-byte mask over config space. A write is refused
// (EROFS) if it would change any bit outside the mask; writing back the
// value a read returned is always allowed, because QEMU writes whole
// registers of which it changed one field.

// Header fields.
const (
	cfgROM       = 0x30 // expansion ROM BAR (type 0 header)
	cfgCommand   = 0x04
	cfgStatus    = 0x06
	cfgCacheLine = 0x0c
	cfgLatency   = 0x0d

	// Command bits pciback lets a guest drive: I/O and memory decode
	// (pciback enables the device), bus master, parity and SERR
	// reporting, INTx disable.
	cmdGuest = 0x0001 | 0x0002 | 0x0004 | 0x0040 | 0x0100 | 0x0400
	// Status: the error bits are write-1-to-clear.
	statusRW1C = 0xf900

	msiCtrlWritable  = 0x0071 // enable, multiple message enable
	msixCtrlWritable = 0xc000 // enable, function mask
	pmcsrWritable    = 0x8103 // power state, PME enable, PME status (RW1C)
)

// writableMask computes the per-byte mask for dev.
func writableMask(dev *pci.Device, permissive bool) []byte {
	size := dev.ConfigSize
	if size < 64 {
		size = 256
	}
	m := make([]byte, size)
	if permissive {
		// Permissive opens unknown registers, as pciback's permissive
		// does, but the BARs and the ROM BAR stay the host's: moving
		// them would move the device under another device's window.
		for i := range m {
			m[i] = 0xff
		}
		for i := 0x10; i < 0x28; i++ {
			m[i] = 0
		}
		for i := 0x30; i < 0x34; i++ {
			m[i] = 0
		}
		return m
	}
	put16 := func(off int, v uint16) {
		if off+1 < len(m) {
			m[off] |= byte(v)
			m[off+1] |= byte(v >> 8)
		}
	}
	put16(cfgCommand, cmdGuest)
	// The ROM BAR's enable bit, not its address: SeaBIOS enables the ROM
	// of every device to run its option ROM (measured in the Xen rig with
	// a passed-through e1000e), and Xen's own QEMU, writing sysfs as root,
	// lets it through. pciback's PV rule swallows the write instead; a
	// refusal here would only cost the guest the device's boot ROM.
	if dev.ROM != nil {
		m[cfgROM] |= 0x01
	}
	put16(cfgStatus, statusRW1C)
	m[cfgCacheLine] = 0xff
	m[cfgLatency] = 0xff
	if c := dev.Caps.MSI; c != nil {
		put16(int(c.Offset)+2, msiCtrlWritable)
	}
	if c := dev.Caps.MSIX; c != nil {
		put16(int(c.Offset)+2, msixCtrlWritable)
	}
	if c := dev.Caps.PM; c != nil {
		put16(int(c.Offset)+4, pmcsrWritable)
	}
	return m
}

// filterWrite reports whether writing val over cur at off (size bytes)
// changes only writable bits.
func filterWrite(mask []byte, off, size int, cur, val uint32) bool {
	for i := 0; i < size; i++ {
		changed := byte((cur ^ val) >> (8 * i))
		if off+i >= len(mask) || changed&^mask[off+i] != 0 {
			if changed != 0 {
				return false
			}
		}
	}
	return true
}
