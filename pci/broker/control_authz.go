package broker

import (
	"github.com/dmsandbox/dmsandbox/pci"
)

// controlAuthz answers the domid-keyed control ops (authz.go). Any root
// control connection may use them: they hold no session.
func (b *Broker) controlAuthz(req ControlRequest, peer Peer) ControlReply {
	if req.Op == "authorizations" {
		list, err := b.Authorizations(req.Domid, peer)
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
		err = b.Authorize(req.Domid, bdf, peer)
	} else {
		err = b.Deauthorize(req.Domid, bdf, peer)
	}
	if err != nil {
		return ControlReply{Error: err.Error()}
	}
	return ControlReply{OK: true}
}

// Authorize asks the daemon to let domain domid receive bdf (idempotent).
func (c *ControlClient) Authorize(domid uint32, bdf pci.BDF) error {
	_, _, err := c.call(ControlRequest{Op: "authorize", Domid: domid, BDF: bdf.String()})
	return err
}

// Deauthorize asks the daemon to withdraw bdf from domain domid,
// detaching it if the domain's session holds it (idempotent).
func (c *ControlClient) Deauthorize(domid uint32, bdf pci.BDF) error {
	_, _, err := c.call(ControlRequest{Op: "deauthorize", Domid: domid, BDF: bdf.String()})
	return err
}

// Authorizations lists the daemon's authorisations of domid (0: all).
func (c *ControlClient) Authorizations(domid uint32) ([]Authorization, error) {
	rep, _, err := c.call(ControlRequest{Op: "authorizations", Domid: domid})
	return rep.Authorizations, err
}
