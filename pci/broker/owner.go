package broker

import (
	"errors"
	"fmt"
	"strconv"

	"github.com/dmsandbox/dmsandbox/pci"
)

// ownerName is how a domain is named in pci's binding records and in
// `dmsandbox pci reset --domain`: "domid:7".
func ownerName(domid uint32) string { return "domid:" + strconv.FormatUint(uint64(domid), 10) }

// resetOptions tell pci who holds the device being reset (the session's
// domain) and who holds each neighbour (the records), so a bus reset is
// allowed when every other device behind the bridge is idle or this
// domain's. Without records every quarantined neighbour counts as
// unknown and blocks it.
func (b *Broker) resetOptions(domid uint32) pci.ResetOptions {
	opt := pci.ResetOptions{Domain: ownerName(domid)}
	if b.cfg.Records != nil {
		opt.Owner = b.cfg.Records.Owner
	}
	return opt
}

// setOwner marks (owner != "") or clears the record of bdf. A device with
// no record (on pciback by hand, the fake backend) has nothing to mark:
// its neighbours keep treating it as unknown, which only refuses more.
func (b *Broker) setOwner(bdf pci.BDF, owner string) error {
	if b.cfg.Records == nil {
		return nil
	}
	err := b.cfg.Records.SetOwner(bdf, owner)
	if errors.Is(err, pci.ErrNoRecord) {
		b.logf("%s: no pci binding record in %s; owner %q not recorded", bdf, b.cfg.Records.Dir, owner)
		return nil
	}
	if err != nil {
		return fmt.Errorf("owner record: %w", err)
	}
	return nil
}
