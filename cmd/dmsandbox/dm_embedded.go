package main

import (
	"os"
	"path/filepath"

	"github.com/dmsandbox/dmsandbox/launcher/dmargv"
	"github.com/dmsandbox/dmsandbox/pci"
	"github.com/dmsandbox/dmsandbox/pci/broker"
)

// Where DM mode's embedded broker keeps its audit log and state journal:
// one directory per sandbox name (xen-dm-DOMID), so that launchers of
// different domains never share a hash chain or a journal, and the next
// launcher of a domid (the name lock serialises them) recovers what a
// killed one left.
const (
	embeddedAuditBase = "/var/log/dmsandbox/embedded"
	embeddedStateBase = "/var/lib/dmsandbox/embedded"
)

// embeddedBroker is the broker DM mode runs in its own process when no
// daemon socket exists (issue: "embedded in the launcher when no daemon
// socket exists; same code"): the xen backend (a binary built with the
// xen tag), the host's sysfs, durable audit. Where a daemon has run, its
// authorisations file holds its authorisations and its policy
// (--require-authorization); the embedded broker reads both, once, and
// applies them: a daemon that is down must not turn mandatory
// pre-authorisation off.
func embeddedBroker(domid uint32) (*broker.Embedded, error) {
	be, err := openBackend("xen", "/", pci.DefaultStateDir)
	if err != nil {
		return nil, err
	}
	name := dmargv.SandboxName(int(domid))
	cfg := broker.EmbeddedConfig{Backend: be, SysfsRoot: "/",
		AuditDir: filepath.Join(embeddedAuditBase, name), StateDir: filepath.Join(embeddedStateBase, name),
		PCIStateDir: pci.DefaultStateDir, LockDir: broker.DefaultLockDir}
	if authz := filepath.Join(defaultBrokerState, broker.AuthorizationsFile); fileExists(authz) {
		cfg.AuthorizationsFile = authz
	}
	e, err := broker.NewEmbedded(cfg)
	if err != nil {
		be.Close()
		return nil, err
	}
	return e, nil
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
