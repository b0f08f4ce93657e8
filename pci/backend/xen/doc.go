// Package xen is the broker backend for Xen: it performs the libxenctrl
// calls QEMU's hw/xen/xen_pt*.c makes — and the iomem/ioport/irq
// permission grants libxl makes around them — on behalf of a device model
// running under dm_restrict, which may not make them itself.
//
// It is cgo against Debian's libxen-dev and built only with the build tag
// `xen` (`go build -tags 'seccomp xen' ./...`); without the tag, New
// returns an error so a broker configured for Xen fails closed.
package xen
