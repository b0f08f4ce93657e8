package pci

// Device is what the host knows about one PCI function, read from sysfs in
// one pass. It is a snapshot: binding or resetting changes the host, not
// this value; read it again.
type Device struct {
	BDF       BDF    `json:"bdf"`
	Vendor    uint16 `json:"vendor"`
	DeviceID  uint16 `json:"device"`
	SubVendor uint16 `json:"subsystem_vendor"`
	SubDevice uint16 `json:"subsystem_device"`
	Class     uint32 `json:"class"` // base<<16 | sub<<8 | prog-if
	Revision  uint8  `json:"revision"`
	// HeaderType is the config header layout: 0 endpoint, 1 PCI bridge,
	// 2 CardBus bridge.
	HeaderType    uint8 `json:"header_type"`
	MultiFunction bool  `json:"multifunction,omitempty"`
	BARs          []BAR `json:"bars"`
	ROM           *BAR  `json:"rom,omitempty"`
	// IRQ is the legacy interrupt (GSI on x86) from sysfs `irq`; 0 when
	// the device has no INTx pin routed.
	IRQ        int          `json:"irq"`
	Caps       Capabilities `json:"caps"`
	ConfigSize int          `json:"config_size"`
	// IOMMUGroup is the group number, -1 when the device is in none (no
	// IOMMU, or IOMMU off): such a device cannot be isolated.
	IOMMUGroup int `json:"iommu_group"`
	// ResetMethods is the kernel's `reset_method` list, in the kernel's
	// order (e.g. "flr", "pm", "bus"). Empty when the attribute is absent,
	// which on kernels since 5.15 means the kernel knows no method.
	ResetMethods []string `json:"reset_methods"`
	// HasResetMethod and HasReset say whether the `reset_method` and
	// `reset` attributes exist.
	HasResetMethod bool `json:"has_reset_method_attr"`
	HasReset       bool `json:"has_reset_attr"`
	// Driver is the name of the bound driver, "" when none.
	Driver string `json:"driver"`
	// DriverOverride is the content of `driver_override`, "" when unset.
	DriverOverride string `json:"driver_override,omitempty"`
	// Bridge: a PCI-to-PCI or CardBus bridge (header type 1 or 2), with
	// the secondary and subordinate bus numbers it forwards.
	Bridge         bool  `json:"bridge,omitempty"`
	SecondaryBus   uint8 `json:"secondary_bus,omitempty"`
	SubordinateBus uint8 `json:"subordinate_bus,omitempty"`
	// Parent is the bridge directly above the device, nil on a root bus.
	Parent *BDF `json:"parent,omitempty"`
	// Ancestors lists every bridge above the device, outermost first.
	Ancestors []BDF `json:"ancestors,omitempty"`
	// PhysFn is the SR-IOV physical function of a virtual function;
	// VirtFns the virtual functions of a physical one.
	PhysFn  *BDF  `json:"physfn,omitempty"`
	VirtFns []BDF `json:"virtfns,omitempty"`
}

// BaseClass is the top byte of the class code (0x02 network, 0x06 bridge...).
func (d *Device) BaseClass() uint8 { return uint8(d.Class >> 16) }

// SubClass is the middle byte of the class code.
func (d *Device) SubClass() uint8 { return uint8(d.Class >> 8) }

// ClassName is a short human name of the class.
func (d *Device) ClassName() string { return ClassName(d.Class) }

// HasFLR: the device advertises Function Level Reset, through the PCIe
// capability or the Advanced Features capability.
func (d *Device) HasFLR() bool {
	return d.Caps.PCIe != nil && d.Caps.PCIe.FLR || d.Caps.AF != nil && d.Caps.AF.FLR
}

// BAR returns the assigned BAR with the given index, or nil.
func (d *Device) BAR(i int) *BAR {
	for k := range d.BARs {
		if d.BARs[k].Index == i {
			return &d.BARs[k]
		}
	}
	return nil
}
