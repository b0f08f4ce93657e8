package broker

import (
	"fmt"
	"os"

	"github.com/dmsandbox/dmsandbox/pci"
	"github.com/dmsandbox/dmsandbox/pci/backend"
)

// AttachOptions are decided by the broker's caller (launcher, admin),
// never by the session's client.
type AttachOptions struct {
	Permissive bool          `json:"permissive,omitempty"`
	Grant      backend.Grant `json:"grant"`
}

// Attach gives device bdf to session id: reads its truth from sysfs,
// takes it out of quarantine through the backend, and lets the session
// use it.
func (b *Broker) Attach(id uint64, bdf pci.BDF, o AttachOptions) error {
	s, err := b.session(id)
	if err != nil {
		return err
	}
	b.authMu.Lock()
	defer b.authMu.Unlock()
	if err := b.checkAuthorized(s, bdf); err != nil {
		return err
	}
	dev, err := b.cfg.Sysfs.Device(bdf)
	if err != nil {
		return fmt.Errorf("broker: attach %s: %w", bdf, err)
	}
	if dev.Bridge {
		return fmt.Errorf("broker: attach %s: %w: a bridge cannot be passed through", bdf, pci.ErrRefused)
	}
	b.mu.Lock()
	other, owned := b.owner[bdf]
	if owned && other != id {
		b.mu.Unlock()
		return fmt.Errorf("%w: %s is attached to session %d (or its files are open there)", ErrConflict, bdf, other)
	}
	if err := b.locks.acquire(bdf, fmt.Sprintf("pid %d, session %d, domain %d", os.Getpid(), id, s.Domid)); err != nil {
		b.mu.Unlock()
		return err
	}
	b.owner[bdf] = id
	b.mu.Unlock()
	// owned by this session already: attached (refused below) or
	// reserved after a detach (its files were handed); a failure keeps
	// the reservation.
	reserved := owned

	s.mu.Lock()
	defer s.mu.Unlock()
	fail := func(err error) error {
		if !reserved {
			b.mu.Lock()
			b.disown(bdf, id)
			b.mu.Unlock()
		}
		b.event(s, "attach", fmt.Sprintf("bdf=%s failed: %v", bdf, err))
		return err
	}
	if s.closed {
		return fail(ErrClosed)
	}
	if _, held := s.devs[bdf]; held {
		return fail(fmt.Errorf("%w: %s is attached to session %d", ErrConflict, bdf, id))
	}
	if o.Grant.QEMUPid > 0 {
		s.Peer.PID = int32(o.Grant.QEMUPid)
	}
	it := Item{Kind: KindDevice, BDF: bdf.String()}
	if err := s.journal.add(it); err != nil {
		return fail(err)
	}
	if err := b.cfg.Backend.Assign(s.Domid, dev, o.Grant); err != nil {
		// Release must cope with a half-done assign.
		if rerr := b.cfg.Backend.Release(s.Domid, dev); rerr != nil {
			b.logf("release %s after failed assign: %v", bdf, rerr)
		} else {
			s.journal.del(it)
		}
		return fail(fmt.Errorf("broker: attach %s: %w", bdf, err))
	}
	// Mark the record before the session may use the device: from now
	// on a bus reset of a neighbour sees it as this domain's.
	if err := b.setOwner(bdf, ownerName(s.Domid)); err != nil {
		if rerr := b.cfg.Backend.Release(s.Domid, dev); rerr != nil {
			b.logf("release %s after failed owner record: %v", bdf, rerr)
		} else {
			s.journal.del(it)
		}
		return fail(fmt.Errorf("broker: attach %s: %w", bdf, err))
	}
	s.devs[bdf] = &sessionDevice{dev: dev, permissive: o.Permissive, writable: writableMask(dev, o.Permissive)}
	s.live.add(it)
	b.event(s, "attach", fmt.Sprintf("bdf=%s permissive=%v", bdf, o.Permissive))
	return nil
}

// disown frees bdf, held by session id, for any session of this broker
// or another. Only id's hold is given up: a caller that lost a race with
// the session's close must not free the device for its next holder.
// Called with b.mu held.
func (b *Broker) disown(bdf pci.BDF, id uint64) {
	if b.owner[bdf] != id {
		return
	}
	delete(b.owner, bdf)
	b.locks.release(bdf)
}

// Detach takes bdf away from session id: undoes everything the session
// did with it (mappings in its BARs, its pirqs and bindings), resets it
// and returns it to quarantine.
func (b *Broker) Detach(id uint64, bdf pci.BDF) error {
	s, err := b.session(id)
	if err != nil {
		return err
	}
	s.mu.Lock()
	if s.closed {
		// The close undid it and freed the device, which another
		// session may hold by now.
		s.mu.Unlock()
		return fmt.Errorf("broker: detach %s: %w", bdf, ErrClosed)
	}
	sd, ok := s.devs[bdf]
	if !ok {
		s.mu.Unlock()
		return fmt.Errorf("broker: detach %s: %w", bdf, ErrNoSession)
	}
	var plan []Item
	for _, it := range s.live.undoPlan() {
		if it.BDF == bdf.String() {
			plan = append(plan, it)
		}
	}
	failed := b.undo(s.ID, s.Domid, s.Peer, plan, s.devByBDF)
	for _, it := range plan {
		if !failed[it.String()] {
			s.live.remove(it)
			s.journal.del(it)
		}
	}
	delete(s.devs, bdf)
	handed := s.handed[bdf]
	s.mu.Unlock()
	if !handed {
		b.mu.Lock()
		b.disown(sd.dev.BDF, s.ID)
		b.mu.Unlock()
	} else {
		// Its files are still open in this session's device model:
		// reserved until the session ends (forget frees it).
		b.event(s, "detach", fmt.Sprintf("bdf=%s reserved until the session ends: its files were handed to the device model", bdf))
	}
	if len(failed) > 0 {
		return fmt.Errorf("broker: detach %s: %d undo steps failed (see audit log)", bdf, len(failed))
	}
	return nil
}
