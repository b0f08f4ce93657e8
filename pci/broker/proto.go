package broker

// The session channel, protocol version 1.
//
// A session is one SOCK_SEQPACKET socket per domain. The broker creates the
// pair, keeps one end and hands the other to the device model (QEMU's
// libxenctrl shim, or the launcher on its behalf). Who is speaking is the
// socket itself: no message carries a credential, and the domid in a
// request is only checked against the session's.
//
// Every datagram is one frame: a 24-byte header followed by an op-specific
// body of exactly the size the op defines. SOCK_SEQPACKET keeps frame
// boundaries, so a frame that is short, long or lies about its length is
// detected, answered with an error and the next frame starts clean.
//
//	   client (shim in QEMU)                          broker
//	   ─────────────────────                          ──────
//	   HELLO  seq=1 {version=1}          ─────────▶
//	                                     ◀─────────   HELLO reply seq=1 status=0
//	                                                  {domid, devices[]}
//	   MEMORY_MAPPING seq=2 {domid, add,  ─────────▶  decode ─ policy (sysfs truth)
//	     gfn, mfn, nr}                                   │ refused: audit, reply errno
//	                                                     ▼
//	                                                  journal (fsync) ─ backend ─ audit
//	                                     ◀─────────   reply seq=2 status=0 (after the
//	                                                  audit record is durable)
//	   ...one request in flight at a time; seq strictly increases...
//	   close(fd) / process death         ─── EOF ──▶  undo the session in reverse:
//	                                                  unmap, unbind, unmap pirqs,
//	                                                  reset, back to quarantine
//
// Frame layout (little-endian, naturally aligned, no padding holes):
//
//	 0               4       6       8               12              16              20              24
//	 ├───────────────┼───────┼───────┼───────────────┼───────────────┼───────────────┼───────────────┤
//	 │ magic "DMSB"  │version│  op   │    flags      │     seq       │  body length  │ reserved (0)  │
//	 └───────────────┴───────┴───────┴───────────────┴───────────────┴───────────────┴───────────────┘
//	 then body: request struct of the op; a reply body starts with
//	 {int32 status, uint32 reserved} and continues with the op's result struct.
//
// docs/broker-protocol.md lists every op's struct with offsets.

import (
	"encoding/binary"
)

// Wire constants of protocol version 1.
const (
	Magic      uint32 = 0x42534d44 // "DMSB" as bytes on the wire
	Version    uint16 = 1
	HeaderSize        = 24
	// MaxFrame bounds every frame; the largest v1 body is 48 bytes. The
	// receive buffer is one byte larger so an oversized frame is seen.
	MaxFrame = 256
	// ReplyPrefix is the {status, reserved} that starts every reply body.
	ReplyPrefix = 8
)

// Flags.
const (
	// FlagReply marks a frame sent by the broker.
	FlagReply uint32 = 1 << 0
)

// Op names a request. Values are part of the wire format: never renumber.
type Op uint16

// Ops of protocol version 1. One per libxenctrl call QEMU's hw/xen/xen_pt*.c
// makes, plus hello, config read/write, reset, and open_file for the files
// Xen QEMU opens itself (hw/xen/xen-host-pci-device.c, xen_pt_msi.c).
const (
	OpHello         Op = 1  // negotiate; learn the session's domid and devices
	OpMemoryMapping Op = 2  // xc_domain_memory_mapping
	OpIoportMapping Op = 3  // xc_domain_ioport_mapping
	OpMapPirq       Op = 4  // xc_physdev_map_pirq (INTx: GSI → pirq)
	OpMapPirqMSI    Op = 5  // xc_physdev_map_pirq_msi
	OpUnmapPirq     Op = 6  // xc_physdev_unmap_pirq
	OpBindPtPciIrq  Op = 7  // xc_domain_bind_pt_pci_irq
	OpUnbindPtIrq   Op = 8  // xc_domain_unbind_pt_irq
	OpUpdateMsiIrq  Op = 9  // xc_domain_update_msi_irq
	OpUnbindMsiIrq  Op = 10 // xc_domain_unbind_msi_irq
	OpConfigRead    Op = 11 // read config space (sysfs config)
	OpConfigWrite   Op = 12 // write config space through the filter
	OpReset         Op = 13 // reset a device of the session
	OpOpenFile      Op = 14 // a read-only fd of a sysfs file of a session device (SCM_RIGHTS)
	opMax              = OpOpenFile
)

var opNames = map[Op]string{
	OpHello: "hello", OpMemoryMapping: "memory_mapping", OpIoportMapping: "ioport_mapping",
	OpMapPirq: "map_pirq", OpMapPirqMSI: "map_pirq_msi", OpUnmapPirq: "unmap_pirq",
	OpBindPtPciIrq: "bind_pt_pci_irq", OpUnbindPtIrq: "unbind_pt_irq",
	OpUpdateMsiIrq: "update_msi_irq", OpUnbindMsiIrq: "unbind_msi_irq",
	OpConfigRead: "config_read", OpConfigWrite: "config_write", OpReset: "reset",
	OpOpenFile: "open_file",
}

func (o Op) String() string {
	if n, ok := opNames[o]; ok {
		return n
	}
	return "op" + itoa(uint64(o))
}

// OpByName is the inverse of Op.String for known ops.
func OpByName(name string) (Op, bool) {
	for o, n := range opNames {
		if n == name {
			return o, true
		}
	}
	return 0, false
}

// Header is the fixed 24-byte frame header.
type Header struct {
	Magic    uint32
	Version  uint16
	Op       Op
	Flags    uint32
	Seq      uint32
	Length   uint32 // body length in bytes
	Reserved uint32 // must be zero in v1
}

func (h Header) put(b []byte) {
	le := binary.LittleEndian
	le.PutUint32(b[0:], h.Magic)
	le.PutUint16(b[4:], h.Version)
	le.PutUint16(b[6:], uint16(h.Op))
	le.PutUint32(b[8:], h.Flags)
	le.PutUint32(b[12:], h.Seq)
	le.PutUint32(b[16:], h.Length)
	le.PutUint32(b[20:], h.Reserved)
}

func getHeader(b []byte) Header {
	le := binary.LittleEndian
	return Header{
		Magic:    le.Uint32(b[0:]),
		Version:  le.Uint16(b[4:]),
		Op:       Op(le.Uint16(b[6:])),
		Flags:    le.Uint32(b[8:]),
		Seq:      le.Uint32(b[12:]),
		Length:   le.Uint32(b[16:]),
		Reserved: le.Uint32(b[20:]),
	}
}

func itoa(v uint64) string {
	var b [20]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + v%10)
		v /= 10
		if v == 0 {
			return string(b[i:])
		}
	}
}
