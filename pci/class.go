package pci

import "fmt"

// classNames maps base<<8|sub to a short name (PCI Code and ID Assignment
// specification). Only classes a passthrough operator meets are named.
var classNames = map[uint16]string{
	0x0000: "unclassified", 0x0100: "scsi", 0x0101: "ide", 0x0104: "raid", 0x0105: "ata",
	0x0106: "sata", 0x0107: "sas", 0x0108: "nvme", 0x0180: "storage",
	0x0200: "ethernet", 0x0280: "network", 0x0300: "vga", 0x0302: "3d", 0x0380: "display",
	0x0400: "video", 0x0401: "audio", 0x0403: "hd-audio", 0x0480: "multimedia",
	0x0500: "ram", 0x0580: "memory",
	0x0600: "host-bridge", 0x0601: "isa-bridge", 0x0604: "pci-bridge", 0x0607: "cardbus-bridge",
	0x0680: "bridge", 0x0700: "serial", 0x0780: "comm", 0x0800: "pic", 0x0805: "sd-host",
	0x0880: "system", 0x0c03: "usb", 0x0c05: "smbus", 0x0d00: "irda", 0x0d80: "wireless",
	0x1080: "crypto", 0x1180: "signal-proc", 0x1200: "accelerator", 0x1300: "instrumentation",
	0xff00: "unassigned", 0xffff: "unassigned",
}

// ClassName returns a short human name for a 24-bit class code.
func ClassName(class uint32) string {
	if n, ok := classNames[uint16(class>>8)]; ok {
		return n
	}
	switch uint8(class >> 16) {
	case 0x00:
		return "unclassified"
	case 0xff:
		return "unassigned"
	}
	return fmt.Sprintf("class-%06x", class)
}
