package pci

import (
	"encoding/binary"
	"fmt"
)

// Capability IDs this package interprets (PCI Local Bus 3.0 and PCIe 5.0
// capability ID registries). Others are listed in Capabilities.List only.
const (
	CapPM    = 0x01
	CapMSI   = 0x05
	CapVndr  = 0x09
	CapPCIe  = 0x10
	CapMSIX  = 0x11
	CapAF    = 0x13
	ExtSRIOV = 0x0010
	ExtACS   = 0x000d
	ExtARI   = 0x000e
)

// Config space layout (type 0 and type 1 headers).
const (
	cfgVendor     = 0x00
	cfgCommand    = 0x04
	cfgStatus     = 0x06
	cfgRevision   = 0x08
	cfgClass      = 0x09
	cfgHeaderType = 0x0e
	cfgCapPtr     = 0x34 // types 0 and 1
	cfgCardbusCap = 0x14 // type 2
	cfgBridgeCtl  = 0x3e // type 1
	cfgHeaderLen  = 0x40
	cfgLegacyLen  = 0x100
	cfgExtLen     = 0x1000

	statusCapList      = 1 << 4
	bridgeCtlBusReset  = 1 << 6
	headerTypeMask     = 0x7f
	headerMultiFn      = 0x80
	maxStandardCaps    = (cfgLegacyLen - cfgHeaderLen) / 4 // a list longer than this loops
	maxExtendedCaps    = (cfgExtLen - cfgLegacyLen) / 4
	pcieDevCapFLR      = 1 << 28
	pcieDevCtlFLR      = 1 << 15
	afCapFLR           = 1 << 1
	afCapTP            = 1 << 0
	afCtlFLR           = 1 << 0
	pmCSRNoSoftReset   = 1 << 3
	pmCSRStateMask     = 0x3
	msiCtlEnable       = 1 << 0
	msiCtl64           = 1 << 7
	msiCtlMask         = 1 << 8
	msixCtlEnable      = 1 << 15
	msixCtlTableSize   = 0x7ff
	msixBIRMask        = 0x7
	maxBAR             = 5
	headerTypeNormal   = 0
	headerTypeBridge   = 1
	headerTypeCardbus  = 2
	extCapHeaderAbsent = 0xffffffff
)

// CapID names one entry of a capability list, standard or extended, and
// where it sits in config space.
type CapID struct {
	ID       uint16 `json:"id"`
	Extended bool   `json:"extended,omitempty"`
	Offset   uint16 `json:"offset"`
}

// Name returns a short human name for the capability ("msi-x", "pcie"...),
// or its hex ID.
func (c CapID) Name() string {
	names := stdCapNames
	if c.Extended {
		names = extCapNames
	}
	if n, ok := names[c.ID]; ok {
		return n
	}
	if c.Extended {
		return fmt.Sprintf("ext-%#04x", c.ID)
	}
	return fmt.Sprintf("cap-%#02x", c.ID)
}

var stdCapNames = map[uint16]string{
	CapPM: "pm", 0x02: "agp", 0x03: "vpd", 0x04: "slot-id", CapMSI: "msi",
	0x06: "hotswap", 0x07: "pcix", 0x08: "ht", CapVndr: "vendor", 0x0a: "debug",
	0x0c: "hotplug", 0x0d: "ssvid", CapPCIe: "pcie", CapMSIX: "msi-x", 0x12: "sata", CapAF: "af",
	0x14: "ea",
}

var extCapNames = map[uint16]string{
	0x0001: "aer", 0x0002: "vc", 0x0003: "dsn", 0x000b: "vsec", ExtACS: "acs", ExtARI: "ari",
	0x000f: "ats", ExtSRIOV: "sr-iov", 0x0013: "pri", 0x0015: "rebar", 0x0018: "ltr",
	0x001b: "pasid", 0x001e: "l1ss",
}

// Capabilities is what config space says about a device's interrupts,
// power management and reset abilities. Nil pointers mean "absent".
type Capabilities struct {
	MSI   *MSI    `json:"msi,omitempty"`
	MSIX  *MSIX   `json:"msix,omitempty"`
	PM    *PM     `json:"pm,omitempty"`
	PCIe  *PCIe   `json:"pcie,omitempty"`
	AF    *AF     `json:"af,omitempty"`
	SRIOV *SRIOV  `json:"sriov,omitempty"`
	List  []CapID `json:"list"`
}

// MSI is the Message Signalled Interrupts capability.
type MSI struct {
	Offset   uint16 `json:"offset"`
	Vectors  int    `json:"vectors"` // multiple message capable: 1..32
	Addr64   bool   `json:"addr64"`
	Maskable bool   `json:"maskable"` // per-vector masking
	Enabled  bool   `json:"enabled"`
}

// MSIX is the MSI-X capability: where the vector table and the pending bit
// array live. The broker checks guest MSI-X mappings against these.
type MSIX struct {
	Offset      uint16 `json:"offset"`
	TableSize   int    `json:"table_size"` // entries, 1..2048
	TableBAR    int    `json:"table_bar"`  // 0..5
	TableOffset uint32 `json:"table_offset"`
	PBABAR      int    `json:"pba_bar"`
	PBAOffset   uint32 `json:"pba_offset"`
	Enabled     bool   `json:"enabled"`
}

// TableBytes is the size of the MSI-X table in its BAR (16 bytes a vector).
func (m *MSIX) TableBytes() uint64 { return uint64(m.TableSize) * 16 }

// PBABytes is the size of the pending bit array (one bit a vector, in
// 64-bit words).
func (m *MSIX) PBABytes() uint64 { return uint64((m.TableSize+63)/64) * 8 }

// PM is the Power Management capability.
type PM struct {
	Offset uint16 `json:"offset"`
	// NoSoftReset: the device keeps its state across D3hot→D0, so a PM
	// transition is not a reset.
	NoSoftReset bool `json:"no_soft_reset"`
	PowerState  int  `json:"power_state"` // current D-state 0..3
}

// PCIe is the PCI Express capability.
type PCIe struct {
	Offset  uint16 `json:"offset"`
	Version int    `json:"version"`
	Type    int    `json:"port_type"` // 0 endpoint, 1 legacy endpoint, 4 root port, 5/6 switch ports, 9 RCiEP...
	FLR     bool   `json:"flr"`       // Device Capabilities: Function Level Reset
}

// PCIe device/port types (PCIe capability register bits 7:4).
const (
	PCIeEndpoint       = 0x0
	PCIeLegacyEndpoint = 0x1
	PCIeRootPort       = 0x4
	PCIeUpstreamPort   = 0x5
	PCIeDownstreamPort = 0x6
	PCIeToPCIBridge    = 0x7
	PCIToPCIeBridge    = 0x8
	PCIeRCIEP          = 0x9
	PCIeRCEC           = 0xa
)

// AF is the Advanced Features capability (conventional PCI FLR).
type AF struct {
	Offset uint16 `json:"offset"`
	FLR    bool   `json:"flr"`
	TP     bool   `json:"tp"` // transactions pending bit supported
}

// SRIOV is the SR-IOV extended capability of a physical function.
type SRIOV struct {
	Offset   uint16 `json:"offset"`
	TotalVFs int    `json:"total_vfs"`
	NumVFs   int    `json:"num_vfs"`
}

// ParseCapabilities walks the standard capability list of config space and,
// when config holds more than 256 bytes, the extended list. config is
// untrusted (a device controls it): a pointer into the header, a pointer
// past the end, a loop, or a register a capability needs lying outside
// config is an error, never a panic. A config shorter than the 64-byte
// header is an error; a device without a capability list (status bit 4
// clear) has none.
func ParseCapabilities(config []byte) (Capabilities, error) {
	var c Capabilities
	if len(config) < cfgHeaderLen {
		return c, fmt.Errorf("config space truncated: %d bytes, want at least %d: %w", len(config), cfgHeaderLen, ErrMalformed)
	}
	if err := c.parseStandard(config); err != nil {
		return c, err
	}
	if len(config) > cfgLegacyLen {
		if err := c.parseExtended(config); err != nil {
			return c, err
		}
	}
	return c, nil
}

func (c *Capabilities) parseStandard(cfg []byte) error {
	if le16(cfg, cfgStatus)&statusCapList == 0 {
		return nil
	}
	ptrAt := cfgCapPtr
	if cfg[cfgHeaderType]&headerTypeMask == headerTypeCardbus {
		ptrAt = cfgCardbusCap
	}
	limit := min(len(cfg), cfgLegacyLen)
	seen := map[int]bool{}
	// The low two bits of every pointer are reserved and must be ignored.
	for p := int(cfg[ptrAt]) &^ 3; p != 0; p = int(cfg[p+1]) &^ 3 {
		if p < cfgHeaderLen {
			return fmt.Errorf("capability pointer %#x points into the header: %w", p, ErrMalformed)
		}
		if p+2 > limit {
			return fmt.Errorf("capability pointer %#x past end of config (%d bytes): %w", p, limit, ErrMalformed)
		}
		if seen[p] || len(seen) >= maxStandardCaps {
			return fmt.Errorf("capability list loops at %#x: %w", p, ErrMalformed)
		}
		seen[p] = true
		id := cfg[p]
		c.List = append(c.List, CapID{ID: uint16(id), Offset: uint16(p)})
		if err := c.decodeStandard(cfg[:limit], id, p); err != nil {
			return fmt.Errorf("capability %s at %#x: %w", CapID{ID: uint16(id)}.Name(), p, err)
		}
	}
	return nil
}

// need checks that the n bytes a capability reads from offset p lie in cfg.
func need(cfg []byte, p, n int) error {
	if p+n > len(cfg) {
		return fmt.Errorf("needs %d bytes, config ends at %#x: %w", n, len(cfg), ErrMalformed)
	}
	return nil
}

func (c *Capabilities) decodeStandard(cfg []byte, id byte, p int) error {
	off := uint16(p)
	switch id {
	case CapPM:
		if err := need(cfg, p, 6); err != nil {
			return err
		}
		csr := le16(cfg, p+4)
		if c.PM == nil { // the first instance counts, as in the kernel's pci_find_capability
			c.PM = &PM{Offset: off, NoSoftReset: csr&pmCSRNoSoftReset != 0, PowerState: int(csr & pmCSRStateMask)}
		}
	case CapMSI:
		if err := need(cfg, p, 4); err != nil {
			return err
		}
		ctl := le16(cfg, p+2)
		mmc := int(ctl>>1) & 7
		if mmc > 5 {
			return fmt.Errorf("msi multiple message capable %d is reserved: %w", mmc, ErrMalformed)
		}
		if c.MSI == nil {
			c.MSI = &MSI{Offset: off, Vectors: 1 << mmc, Addr64: ctl&msiCtl64 != 0, Maskable: ctl&msiCtlMask != 0, Enabled: ctl&msiCtlEnable != 0}
		}
	case CapMSIX:
		if err := need(cfg, p, 12); err != nil {
			return err
		}
		ctl := le16(cfg, p+2)
		tbl, pba := le32(cfg, p+4), le32(cfg, p+8)
		m := &MSIX{
			Offset:      off,
			TableSize:   int(ctl&msixCtlTableSize) + 1,
			TableBAR:    int(tbl & msixBIRMask),
			TableOffset: tbl &^ msixBIRMask,
			PBABAR:      int(pba & msixBIRMask),
			PBAOffset:   pba &^ msixBIRMask,
			Enabled:     ctl&msixCtlEnable != 0,
		}
		// BIR 6 and 7 are reserved: a table there cannot be mapped or
		// checked, so the device is treated as malformed (fail closed).
		if m.TableBAR > maxBAR || m.PBABAR > maxBAR {
			return fmt.Errorf("msi-x table BIR %d / PBA BIR %d reserved: %w", m.TableBAR, m.PBABAR, ErrMalformed)
		}
		if c.MSIX == nil {
			c.MSIX = m
		}
	case CapPCIe:
		if err := need(cfg, p, 8); err != nil {
			return err
		}
		reg := le16(cfg, p+2)
		devcap := le32(cfg, p+4)
		if c.PCIe == nil {
			c.PCIe = &PCIe{Offset: off, Version: int(reg & 0xf), Type: int(reg>>4) & 0xf, FLR: devcap&pcieDevCapFLR != 0}
		}
	case CapAF:
		if err := need(cfg, p, 6); err != nil {
			return err
		}
		capb := cfg[p+3]
		if c.AF == nil {
			c.AF = &AF{Offset: off, FLR: capb&afCapFLR != 0, TP: capb&afCapTP != 0}
		}
	}
	return nil
}

func (c *Capabilities) parseExtended(cfg []byte) error {
	limit := min(len(cfg), cfgExtLen)
	seen := map[int]bool{}
	for p := cfgLegacyLen; p != 0; {
		if p < cfgLegacyLen {
			return fmt.Errorf("extended capability pointer %#x below 0x100: %w", p, ErrMalformed)
		}
		if p+4 > limit {
			return fmt.Errorf("extended capability pointer %#x past end of config (%d bytes): %w", p, limit, ErrMalformed)
		}
		if seen[p] || len(seen) >= maxExtendedCaps {
			return fmt.Errorf("extended capability list loops at %#x: %w", p, ErrMalformed)
		}
		seen[p] = true
		h := le32(cfg, p)
		// An all-zero or all-ones header at 0x100 means no extended
		// capabilities (conventional device, or a config space the
		// kernel cannot reach); the kernel's pci_find_ext_capability
		// stops the same way.
		if h == 0 || h == extCapHeaderAbsent {
			if p == cfgLegacyLen {
				return nil
			}
			return fmt.Errorf("extended capability header %#x at %#x: %w", h, p, ErrMalformed)
		}
		id := uint16(h)
		c.List = append(c.List, CapID{ID: id, Extended: true, Offset: uint16(p)})
		if id == ExtSRIOV && c.SRIOV == nil {
			if err := need(cfg[:limit], p, 0x14); err != nil {
				return fmt.Errorf("extended capability sr-iov at %#x: %w", p, err)
			}
			c.SRIOV = &SRIOV{Offset: uint16(p), TotalVFs: int(le16(cfg, p+0x0e)), NumVFs: int(le16(cfg, p+0x10))}
		}
		p = int(h>>20) &^ 3
	}
	return nil
}

func le16(b []byte, off int) uint16 { return binary.LittleEndian.Uint16(b[off:]) }
func le32(b []byte, off int) uint32 { return binary.LittleEndian.Uint32(b[off:]) }
