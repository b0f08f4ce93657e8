// Package optionrom makes a minimal PCI option ROM a BIOS will run: a
// 4 KiB image whose init entry returns at once (one page, so the ROM BAR
// QEMU gives the device is a whole page: a passthrough maps BARs into a
// guest by pages). The nested Xen rig
// gives one to the edu device it passes through (QEMU's romfile=), so
// that SeaBIOS in the guest enables the device's ROM BAR and runs the
// ROM through it: QEMU's xen_pt then maps the ROM BAR into the guest
// (memory_mapping) and forwards the enable bit (a config write), both
// through the broker. The e1000e's own ROM (iPXE) did that once but
// sometimes crashed SeaBIOS under nested TCG; this one does nothing.
//
// Layout (PCI Firmware Specification 3.0, "PCI Expansion ROM"):
//
//	0x00  55 AA          ROM signature
//	0x02  08             size in 512-byte blocks
//	0x03  CB             init entry: RETF (the BIOS far-calls seg:0003)
//	0x18  1C 00          offset of the PCI data structure
//	0x1C  "PCIR" vendor device 0000 1800 00 class[3] 0800 0000 00 80 0000
//	0xFFF checksum       the bytes of the image sum to 0 (mod 256)
package optionrom

import "encoding/binary"

// Size is the image size: one page, eight 512-byte blocks.
const Size = 4096

const pcirOffset = 0x1c

// ROM returns the image for a device vendor:device of class (the 24-bit
// class code, e.g. 0x00ff00). The BIOS runs a ROM only on the device whose
// IDs its PCI data structure names.
func ROM(vendor, device uint16, class uint32) []byte {
	b := make([]byte, Size)
	b[0], b[1] = 0x55, 0xaa
	b[2] = Size / 512
	b[3] = 0xcb // RETF
	binary.LittleEndian.PutUint16(b[0x18:], pcirOffset)
	p := b[pcirOffset:]
	copy(p, "PCIR")
	binary.LittleEndian.PutUint16(p[4:], vendor)
	binary.LittleEndian.PutUint16(p[6:], device)
	binary.LittleEndian.PutUint16(p[0xa:], 0x18) // structure length
	p[0xc] = 0                                   // structure revision
	p[0xd], p[0xe], p[0xf] = byte(class), byte(class>>8), byte(class>>16)
	binary.LittleEndian.PutUint16(p[0x10:], Size/512) // image length
	p[0x14] = 0                                       // code type: x86
	p[0x15] = 0x80                                    // last image
	var sum byte
	for _, c := range b[:Size-1] {
		sum += c
	}
	b[Size-1] = -sum
	return b
}
