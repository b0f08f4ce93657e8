package main

import (
	"errors"
	"fmt"
	"os"
	"sync"

	"github.com/dmsandbox/dmsandbox/pci"
	"github.com/dmsandbox/dmsandbox/pci/backend"
	"github.com/dmsandbox/dmsandbox/pci/broker"
)

// brokerHook is the QMP proxy's passthrough hook (qmpproxy.Hook) over
// the broker daemon's control channel: a device_add of
// xen-pci-passthrough is forwarded to QEMU only once the broker has
// attached the device to this domain's session; a deleted device is
// detached. With no daemon listening every grant fails: passthrough
// fails closed. The session opens at the first grant and closes (undoing
// everything it holds) when DM mode ends.
type brokerHook struct {
	socket string
	grant  backend.Grant

	mu      sync.Mutex
	ctrl    *broker.ControlClient
	session uint64
	sfd     *os.File // our end of the session socket, held so the session lives
}

func (h *brokerHook) open(domid uint32) error {
	if h.ctrl != nil {
		return nil
	}
	c, err := broker.DialControl(h.socket)
	if err != nil {
		return fmt.Errorf("no broker daemon: %w", err)
	}
	id, f, err := c.Open(domid)
	if err != nil {
		c.Shutdown()
		return err
	}
	h.ctrl, h.session, h.sfd = c, id, f
	return nil
}

// Grant implements qmpproxy.Hook.
func (h *brokerHook) Grant(domid uint32, bdf pci.BDF) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.open(domid); err != nil {
		return err
	}
	return h.ctrl.Attach(h.session, bdf, broker.AttachOptions{Grant: h.grant})
}

// Revoke implements qmpproxy.Hook.
func (h *brokerHook) Revoke(domid uint32, bdf pci.BDF) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.ctrl == nil {
		return errors.New("no broker session")
	}
	return h.ctrl.Detach(h.session, bdf)
}

// close ends the session: the broker undoes whatever it still holds.
func (h *brokerHook) close() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.ctrl == nil {
		return nil
	}
	err := h.ctrl.Close(h.session)
	h.sfd.Close()
	h.ctrl.Shutdown()
	h.ctrl = nil
	return err
}
