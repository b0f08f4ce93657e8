package broker

import (
	"github.com/dmsandbox/dmsandbox/pci"
)

// controlAuthz answers the authorisation control ops (authz.go). Any
// root control connection may use them: they hold no session.
func (b *Broker) controlAuthz(req ControlRequest, peer Peer) ControlReply {
	d := Domain{ID: req.Domid, Name: req.Name}
	if !d.IsZero() {
		// Checked before anything reaches the audit log's text.
		if err := d.check(); err != nil {
			return ControlReply{Error: err.Error()}
		}
	}
	if req.Op == "authorizations" {
		list, err := b.Authorizations(d, peer)
		if err != nil {
			return ControlReply{Error: err.Error()}
		}
		return ControlReply{OK: true, Authorizations: list}
	}
	bdf, err := pci.ParseBDF(req.BDF)
	if err != nil {
		return ControlReply{Error: err.Error()}
	}
	if req.Op == "authorize" {
		err = b.Authorize(d, bdf, peer)
	} else {
		err = b.Deauthorize(d, bdf, peer)
	}
	if err != nil {
		return ControlReply{Error: err.Error()}
	}
	return ControlReply{OK: true}
}

// Authorize asks the daemon to let domain d receive bdf (idempotent).
func (c *ControlClient) Authorize(d Domain, bdf pci.BDF) error {
	_, _, err := c.call(ControlRequest{Op: "authorize", Domid: d.ID, Name: d.Name, BDF: bdf.String()})
	return err
}

// Deauthorize asks the daemon to withdraw bdf from domain d, detaching
// it if the domain's session holds it (idempotent).
func (c *ControlClient) Deauthorize(d Domain, bdf pci.BDF) error {
	_, _, err := c.call(ControlRequest{Op: "deauthorize", Domid: d.ID, Name: d.Name, BDF: bdf.String()})
	return err
}

// Authorizations lists the daemon's authorisations of domain d (the zero
// Domain: all).
func (c *ControlClient) Authorizations(d Domain) ([]Authorization, error) {
	rep, _, err := c.call(ControlRequest{Op: "authorizations", Domid: d.ID, Name: d.Name})
	return rep.Authorizations, err
}
