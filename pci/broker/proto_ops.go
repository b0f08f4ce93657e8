package broker

import (
	"encoding/binary"
	"fmt"
	"strings"

	"github.com/dmsandbox/dmsandbox/pci"
)

// Request and reply bodies of protocol v1. Each is a fixed-size struct of
// fixed-size fields encoded with encoding/binary in little-endian order, so
// the Go struct is the wire layout: field order and types are the format.
// Fields named Reserved must be zero. docs/broker-protocol.md mirrors these.

// Request is the body of a request frame.
type Request interface {
	Op() Op
}

// Hello opens the conversation. Client speaks the version in the header
// and here; the broker answers with HelloReply.
type Hello struct {
	Version  uint32
	Reserved uint32
}

// MaxHelloDevices is the number of device slots in HelloReply.
const MaxHelloDevices = 8

// HelloReply tells the client which domain and devices the session holds.
type HelloReply struct {
	Domid    uint32
	NDevices uint32
	Devices  [MaxHelloDevices]uint32 // WireBDF
}

// MemoryMapping mirrors xc_domain_memory_mapping(xch, domid, first_gfn,
// first_mfn, nr_mfns, add_mapping): frame numbers of 4 KiB pages.
type MemoryMapping struct {
	Domid    uint32
	Add      uint32 // 1 DPCI_ADD_MAPPING, 0 DPCI_REMOVE_MAPPING
	FirstGfn uint64
	FirstMfn uint64
	NrMfns   uint64
}

// IoportMapping mirrors xc_domain_ioport_mapping.
type IoportMapping struct {
	Domid      uint32
	Add        uint32
	FirstGport uint32
	FirstMport uint32
	NrPorts    uint32
	Reserved   uint32
}

// MapPirq mirrors xc_physdev_map_pirq(xch, domid, index, &pirq): index is
// the host GSI; Pirq is in/out (-1 asks Xen to choose).
type MapPirq struct {
	Domid    uint32
	Index    int32
	Pirq     int32
	Reserved uint32
}

// PirqReply carries the pirq Xen chose.
type PirqReply struct {
	Pirq     int32
	Reserved uint32
}

// MapPirqMSI mirrors xc_physdev_map_pirq_msi(xch, domid, index, &pirq,
// devfn, bus, entry_nr, table_base). Bus carries the PCI segment in its
// high 16 bits, as QEMU passes it. TableBase is 0 for MSI, the host MSI-X
// BAR address for MSI-X.
type MapPirqMSI struct {
	Domid     uint32
	Index     int32
	Pirq      int32
	Devfn     int32
	Bus       int32
	EntryNr   int32
	TableBase uint64
}

// UnmapPirq mirrors xc_physdev_unmap_pirq.
type UnmapPirq struct {
	Domid uint32
	Pirq  int32
}

// BindPtPciIrq mirrors xc_domain_bind_pt_pci_irq: MachineIrq is the pirq
// from MapPirq; Bus/Device/Intx name the guest's virtual slot and pin.
type BindPtPciIrq struct {
	Domid      uint32
	MachineIrq uint8
	Bus        uint8
	Device     uint8
	Intx       uint8
}

// UnbindPtIrq mirrors xc_domain_unbind_pt_irq.
type UnbindPtIrq struct {
	Domid      uint32
	MachineIrq uint8
	IrqType    uint8 // PT_IRQ_TYPE_PCI = 0 is the only one QEMU uses
	Bus        uint8
	Device     uint8
	Intx       uint8
	IsaIrq     uint8
	Reserved   uint16
}

// UpdateMsiIrq mirrors xc_domain_update_msi_irq.
type UpdateMsiIrq struct {
	Domid  uint32
	Gvec   uint32
	Pirq   uint32
	Gflags uint32
	Gtable uint64
}

// UnbindMsiIrq mirrors xc_domain_unbind_msi_irq.
type UnbindMsiIrq struct {
	Domid  uint32
	Gvec   uint32
	Pirq   uint32
	Gflags uint32
}

// ConfigRead reads Size (1, 2 or 4) bytes at Offset of a session device.
type ConfigRead struct {
	BDF      uint32 // WireBDF
	Offset   uint16
	Size     uint8
	Reserved uint8
}

// ConfigReadReply carries the value read.
type ConfigReadReply struct {
	Value    uint32
	Reserved uint32
}

// ConfigWrite writes Size bytes of Value at Offset, through the filter.
type ConfigWrite struct {
	BDF       uint32
	Offset    uint16
	Size      uint8
	Reserved  uint8
	Value     uint32
	Reserved2 uint32
}

// Reset resets a session device with the first method that applies.
type Reset struct {
	BDF      uint32
	Reserved uint32
}

// OpenFile asks for a read-only fd of one file of a session device: what
// QEMU's hw/xen/xen-host-pci-device.c opens under /sys/bus/pci/devices/BDF/
// (File 1-8, Addr 0), or the resource file of the BAR holding the MSI-X
// table or PBA that contains host address Addr (FileMSIXBar; BDF may be
// WireAnyBDF), which xen_pt_msi.c would mmap through /dev/mem. The fd
// travels as SCM_RIGHTS on the reply datagram.
type OpenFile struct {
	BDF  uint32 // WireBDF, or WireAnyBDF with FileMSIXBar
	File uint32 // File*
	Addr uint64 // FileMSIXBar: host address in the MSI-X table or PBA; else 0
}

// OpenFileReply: for FileMSIXBar the BAR's host start and size (the fd's
// offset 0 is Base); zero for the other files.
type OpenFileReply struct {
	Base uint64
	Size uint64
}

// Files of OpenFile. Values are part of the wire format (enum dmsb_file).
const (
	FileConfig          uint32 = 1
	FileResource        uint32 = 2
	FileVendor          uint32 = 3
	FileDevice          uint32 = 4
	FileSubsystemVendor uint32 = 5
	FileSubsystemDevice uint32 = 6
	FileClass           uint32 = 7
	FileIRQ             uint32 = 8
	FileMSIXBar         uint32 = 9
)

// WireAnyBDF in OpenFile.BDF (FileMSIXBar only) lets the broker find the
// session device whose MSI-X table or PBA holds Addr: the shim sees an
// mmap of /dev/mem, which names no device. It is also WireBDF of
// ffff:ff:1f.7: open_file always reads it as "any", so the files of a
// device at that address cannot be opened this way.
const WireAnyBDF uint32 = 0xffffffff

// fileNames are the sysfs names of files 1-8 and the audit name of all.
var fileNames = map[uint32]string{
	FileConfig: "config", FileResource: "resource", FileVendor: "vendor", FileDevice: "device",
	FileSubsystemVendor: "subsystem_vendor", FileSubsystemDevice: "subsystem_device",
	FileClass: "class", FileIRQ: "irq", FileMSIXBar: "msix_bar",
}

// FileName is the name of an OpenFile file ("file<N>" if unknown).
func FileName(f uint32) string {
	if n, ok := fileNames[f]; ok {
		return n
	}
	return "file" + itoa(uint64(f))
}

func (Hello) Op() Op         { return OpHello }
func (MemoryMapping) Op() Op { return OpMemoryMapping }
func (IoportMapping) Op() Op { return OpIoportMapping }
func (MapPirq) Op() Op       { return OpMapPirq }
func (MapPirqMSI) Op() Op    { return OpMapPirqMSI }
func (UnmapPirq) Op() Op     { return OpUnmapPirq }
func (BindPtPciIrq) Op() Op  { return OpBindPtPciIrq }
func (UnbindPtIrq) Op() Op   { return OpUnbindPtIrq }
func (UpdateMsiIrq) Op() Op  { return OpUpdateMsiIrq }
func (UnbindMsiIrq) Op() Op  { return OpUnbindMsiIrq }
func (ConfigRead) Op() Op    { return OpConfigRead }
func (ConfigWrite) Op() Op   { return OpConfigWrite }
func (Reset) Op() Op         { return OpReset }
func (OpenFile) Op() Op      { return OpOpenFile }

// NewRequest returns a pointer to a zero body for op, or nil if op is
// unknown.
func NewRequest(op Op) Request { return newRequest(op) }

func newRequest(op Op) Request {
	switch op {
	case OpHello:
		return &Hello{}
	case OpMemoryMapping:
		return &MemoryMapping{}
	case OpIoportMapping:
		return &IoportMapping{}
	case OpMapPirq:
		return &MapPirq{}
	case OpMapPirqMSI:
		return &MapPirqMSI{}
	case OpUnmapPirq:
		return &UnmapPirq{}
	case OpBindPtPciIrq:
		return &BindPtPciIrq{}
	case OpUnbindPtIrq:
		return &UnbindPtIrq{}
	case OpUpdateMsiIrq:
		return &UpdateMsiIrq{}
	case OpUnbindMsiIrq:
		return &UnbindMsiIrq{}
	case OpConfigRead:
		return &ConfigRead{}
	case OpConfigWrite:
		return &ConfigWrite{}
	case OpReset:
		return &Reset{}
	case OpOpenFile:
		return &OpenFile{}
	}
	return nil
}

// BodySize is the request body size of op, or -1 for an unknown op.
func BodySize(op Op) int {
	r := newRequest(op)
	if r == nil {
		return -1
	}
	return binary.Size(r)
}

// WireBDF encodes a PCI address as segment<<16 | bus<<8 | devfn, the way
// QEMU and Xen pack it.
func WireBDF(b pci.BDF) uint32 {
	return uint32(b.Domain)<<16 | uint32(b.Bus)<<8 | uint32(b.Dev)<<3 | uint32(b.Fn)
}

// BDFFromWire decodes WireBDF.
func BDFFromWire(v uint32) pci.BDF {
	return pci.BDF{Domain: uint16(v >> 16), Bus: uint8(v >> 8), Dev: uint8(v>>3) & 0x1f, Fn: uint8(v) & 7}
}

// String renders a request for logs and audit records.
func describe(r Request) string {
	switch v := r.(type) {
	case *ConfigRead:
		return fmt.Sprintf("bdf=%s off=%#x size=%d", BDFFromWire(v.BDF), v.Offset, v.Size)
	case *ConfigWrite:
		return fmt.Sprintf("bdf=%s off=%#x size=%d value=%#x", BDFFromWire(v.BDF), v.Offset, v.Size, v.Value)
	case *Reset:
		return fmt.Sprintf("bdf=%s", BDFFromWire(v.BDF))
	case *OpenFile:
		bdf := BDFFromWire(v.BDF).String()
		if v.BDF == WireAnyBDF {
			bdf = "any"
		}
		return fmt.Sprintf("bdf=%s file=%s addr=%#x", bdf, FileName(v.File), v.Addr)
	case *MemoryMapping:
		return fmt.Sprintf("domid=%d add=%d gfn=%#x mfn=%#x nr=%#x", v.Domid, v.Add, v.FirstGfn, v.FirstMfn, v.NrMfns)
	case *IoportMapping:
		return fmt.Sprintf("domid=%d add=%d gport=%#x mport=%#x nr=%#x", v.Domid, v.Add, v.FirstGport, v.FirstMport, v.NrPorts)
	case *MapPirqMSI:
		return fmt.Sprintf("domid=%d index=%d pirq=%d bus=%#x devfn=%#x entry=%d table_base=%#x", v.Domid, v.Index, v.Pirq, v.Bus, v.Devfn, v.EntryNr, v.TableBase)
	case *MapPirq:
		return fmt.Sprintf("domid=%d index=%d pirq=%d", v.Domid, v.Index, v.Pirq)
	case *UnmapPirq:
		return fmt.Sprintf("domid=%d pirq=%d", v.Domid, v.Pirq)
	case *BindPtPciIrq:
		return fmt.Sprintf("domid=%d machine_irq=%d bus=%d device=%d intx=%d", v.Domid, v.MachineIrq, v.Bus, v.Device, v.Intx)
	case *UnbindPtIrq:
		return fmt.Sprintf("domid=%d machine_irq=%d type=%d bus=%d device=%d intx=%d isa_irq=%d", v.Domid, v.MachineIrq, v.IrqType, v.Bus, v.Device, v.Intx, v.IsaIrq)
	case *UpdateMsiIrq:
		return fmt.Sprintf("domid=%d gvec=%#x pirq=%d gflags=%#x gtable=%#x", v.Domid, v.Gvec, v.Pirq, v.Gflags, v.Gtable)
	case *UnbindMsiIrq:
		return fmt.Sprintf("domid=%d gvec=%#x pirq=%d gflags=%#x", v.Domid, v.Gvec, v.Pirq, v.Gflags)
	}
	return strings.TrimPrefix(fmt.Sprintf("%+v", r), "&")
}
