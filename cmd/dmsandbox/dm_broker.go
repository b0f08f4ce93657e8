package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/dmsandbox/dmsandbox/launcher"
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
// everything it holds) when DM mode ends — or, when a daemon is there,
// before QEMU starts (handTo), so QEMU inherits the session for the shim.
type brokerHook struct {
	socket string
	// name is the domain's name (libxl's -name), given to the broker so
	// that authorisations by name (`dmsandbox attach --domain`) match.
	name  string
	grant backend.Grant
	// embed, if set, makes the in-process broker used when no daemon
	// socket exists (dm_embedded.go).
	embed func(domid uint32) (*broker.Embedded, error)

	mu      sync.Mutex
	ctrl    broker.Controller // the daemon's control channel, or an embedded broker
	session uint64
	sfd     *os.File // our end of the session socket, held so the session lives
}

func (h *brokerHook) open(domid uint32) error {
	if h.ctrl != nil {
		return nil
	}
	// The daemon if its socket answers; else (no socket, or a dead
	// daemon's leftover) the broker in this process, same code, with
	// its own audit log and state (broker.Connect; docs/broker.md).
	var embed func() (*broker.Embedded, error)
	if h.embed != nil {
		embed = func() (*broker.Embedded, error) { return h.embed(domid) }
	}
	c, err := broker.Connect(h.socket, embed)
	if err != nil {
		return fmt.Errorf("no broker daemon: %w", err)
	}
	id, f, err := c.Open(domid, h.name)
	if err != nil {
		c.Shutdown()
		return err
	}
	h.ctrl, h.session, h.sfd = c, id, f
	return nil
}

// setGrant records who the sandbox is, once it runs: the grant every
// attach passes on.
func (h *brokerHook) setGrant(g backend.Grant) {
	h.mu.Lock()
	h.grant = g
	h.mu.Unlock()
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

// envShim overrides where DM mode finds the libxenctrl shim.
const envShim = "DMSANDBOX_SHIM"

// shimName is the shim `make build` puts beside the binary; packages
// install it under /usr/lib/dmsandbox.
const shimName = "libdmsb-shim.so"

// findShim locates the shim: $DMSANDBOX_SHIM, beside this executable, or
// /usr/lib/dmsandbox.
func findShim() (string, error) {
	if p := os.Getenv(envShim); p != "" {
		if !filepath.IsAbs(p) {
			return "", fmt.Errorf("%s=%q is not absolute", envShim, p)
		}
		return p, nil
	}
	var tried []string
	if exe, err := os.Executable(); err == nil {
		tried = append(tried, filepath.Join(filepath.Dir(exe), shimName))
	}
	tried = append(tried, filepath.Join("/usr/lib/dmsandbox", shimName))
	for _, p := range tried {
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
			return p, nil
		}
	}
	return "", fmt.Errorf("no %s at %v (make build, or set %s)", shimName, tried, envShim)
}

// handTo opens the domain's broker session before QEMU starts and hands
// it to QEMU: the session socket as one more inherited fd, the shim in
// LD_PRELOAD (copied into the sandbox root at its host path) and
// DMSANDBOX_BROKER_FD naming the fd. QEMU's xen_pt then reaches the
// broker for every privileged call and for the device files it opens
// itself; nothing else changes in QEMU. Without a daemon (or without the
// shim) QEMU runs as before and passthrough fails closed: the proxy's
// device_add grant needs the daemon, and a restricted QEMU's own
// hypercalls are refused by Xen.
func (h *brokerHook) handTo(spec *launcher.Spec, domid uint32) error {
	src, err := findShim()
	if err != nil {
		return err
	}
	// Whatever libxl's environment preloads would run in QEMU beside
	// the shim: refuse rather than guess the order.
	for _, kv := range spec.Env {
		if strings.HasPrefix(kv, "LD_PRELOAD=") || strings.HasPrefix(kv, shimFDEnv+"=") {
			return fmt.Errorf("QEMU's environment already sets %s", kv[:strings.IndexByte(kv, '=')])
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.open(domid); err != nil {
		return err
	}
	spec.Files = append(spec.Files, launcher.HandedFile{Name: "broker", File: h.sfd})
	fd := launcher.FirstFileFD(*spec) + len(spec.Files) - 1
	for _, kv := range spec.Env {
		if len(kv) >= len("LD_PRELOAD=") && kv[:len("LD_PRELOAD=")] == "LD_PRELOAD=" {
			return errors.New("QEMU's environment already has LD_PRELOAD")
		}
	}
	spec.Env = append(spec.Env, "LD_PRELOAD="+shimInRoot, fmt.Sprintf("%s=%d", shimFDEnv, fd))
	// At a fixed path in the root, whatever its host path: a shim built
	// in a checkout under /tmp or /run would sit under a directory the
	// sandbox mounts over (CI found it so), and one under /var would
	// take /var from the qdisk images' scaffold (launcher/images.go).
	spec.RootFiles = append(spec.RootFiles, launcher.RootFile{Path: shimInRoot, Host: src})
	return nil
}

// shimInRoot is where the minimal root holds the shim.
const shimInRoot = "/usr/lib/dmsandbox/" + shimName

// shimFDEnv is the variable the shim reads its session fd from.
const shimFDEnv = "DMSANDBOX_BROKER_FD"
