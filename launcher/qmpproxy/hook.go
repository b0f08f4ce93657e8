package qmpproxy

import "github.com/dmsandbox/dmsandbox/pci"

// Hook authorises PCI passthrough. The proxy calls Grant before it
// forwards a device_add of xen-pci-passthrough (and forwards nothing if
// Grant fails), and Revoke once the device is gone: after QEMU reports
// DEVICE_DELETED, when a query-pci reply no longer lists it, or when QEMU
// refused the device_add. The broker side (cmd/dmsandbox dm) implements
// it over the broker's control channel.
type Hook interface {
	Grant(domid uint32, bdf pci.BDF) error
	Revoke(domid uint32, bdf pci.BDF) error
}

// DenyHook refuses every passthrough: the proxy's default, so a proxy
// without a broker fails closed.
type DenyHook struct{}

// Grant implements Hook.
func (DenyHook) Grant(uint32, pci.BDF) error { return errNoBroker }

// Revoke implements Hook.
func (DenyHook) Revoke(uint32, pci.BDF) error { return nil }
