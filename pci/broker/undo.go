package broker

import (
	"errors"
	"fmt"
	"os"

	"github.com/dmsandbox/dmsandbox/pci"
	"github.com/dmsandbox/dmsandbox/pci/audit"
	"golang.org/x/sys/unix"
)

// undo executes plan (from liveSet.undoPlan) through the backend,
// auditing each step. It goes on after a failure — a half-undone session
// is worse than a fully undone one with a logged error — and returns the
// steps that failed, by Item.String.
func (b *Broker) undo(id uint64, domid uint32, peer Peer, plan []Item, dev func(string) *pci.Device) map[string]bool {
	failed := map[string]bool{}
	be := b.cfg.Backend
	for _, it := range plan {
		var err error
		switch it.Kind {
		case KindMem:
			err = be.MemoryMapping(domid, it.Guest, it.Host, it.Count, false)
		case KindIO:
			err = be.IoportMapping(domid, uint32(it.Guest), uint32(it.Host), uint32(it.Count), false)
		case KindMSI:
			err = be.UnbindMsiIrq(domid, it.Gvec, it.Pirq, it.Gflags)
		case KindIntx:
			err = be.UnbindPtIrq(domid, it.Pirq, it.Slot[0], it.Slot[1], it.Slot[2])
		case KindPirq:
			err = be.UnmapPirq(domid, it.Pirq)
		case KindDevice:
			d := dev(it.BDF)
			if d == nil {
				d, err = b.deviceForUndo(it.BDF)
			}
			if err == nil {
				// Reset before quarantine so the next owner finds no
				// state of this guest; a device without a reset method
				// is still released, loudly.
				if rerr := be.Reset(d, b.resetOptions(domid)); rerr != nil {
					b.auditUndo(id, domid, peer, "undo_reset", it, rerr)
				} else {
					b.auditUndo(id, domid, peer, "undo_reset", it, nil)
				}
				err = be.Release(domid, d)
				// The device is back in quarantine: nobody's now.
				if err == nil {
					err = b.setOwner(d.BDF, "")
				}
			}
		}
		b.auditUndo(id, domid, peer, "undo", it, err)
		if err != nil {
			failed[it.String()] = true
		}
	}
	return failed
}

func (b *Broker) auditUndo(id uint64, domid uint32, peer Peer, op string, it Item, err error) {
	r := &audit.Record{Session: id, Domid: domid, PID: peer.PID, UID: peer.UID, Op: op, Args: it.String(), Verdict: audit.Allow}
	if err != nil {
		r.Verdict, r.Err = audit.Failed, err.Error()
		var e unix.Errno
		if errors.As(err, &e) {
			r.Errno = int(e)
		}
		b.logf("session %d: %s %s: %v", id, op, it, err)
	}
	if aerr := b.audit(r); aerr != nil {
		b.logf("audit: %v", aerr)
	}
}

// forgetOtherBoot clears the owner records of a journal of another boot
// (see recover), with one audit record.
func (b *Broker) forgetOtherBoot(st journalState, plan []Item) {
	for _, it := range plan {
		if it.Kind != KindDevice {
			continue
		}
		if bdf, err := pci.ParseBDF(it.BDF); err == nil {
			if err := b.setOwner(bdf, ""); err != nil {
				b.logf("recover session %d: %s: %v", st.session, bdf, err)
			}
		}
	}
	b.event(nil, "recover", fmt.Sprintf("session=%d domid=%d: journal of another boot (%s): nothing to undo, owner records cleared", st.session, st.domid, st.bootID))
}

// recoverLocks takes the device lock of each device in plan for the
// recovery; steps of a device locked by another broker process are
// dropped from the plan (see recover). It returns the plan to run and
// the locks taken, to release afterwards.
func (b *Broker) recoverLocks(st journalState, plan []Item) ([]Item, []pci.BDF) {
	var locked []pci.BDF
	skip := map[string]bool{}
	b.mu.Lock()
	for _, it := range plan {
		if it.Kind != KindDevice {
			continue
		}
		bdf, err := pci.ParseBDF(it.BDF)
		if err != nil {
			continue
		}
		if err := b.locks.acquire(bdf, fmt.Sprintf("pid %d, recovering session %d of domain %d", os.Getpid(), st.session, st.domid)); err != nil {
			skip[it.BDF] = true
			b.auditUndo(st.session, st.domid, Peer{}, "undo_skipped", it, err)
			continue
		}
		locked = append(locked, bdf)
	}
	b.mu.Unlock()
	if len(skip) == 0 {
		return plan, locked
	}
	kept := plan[:0:0]
	for _, it := range plan {
		if !skip[it.BDF] {
			kept = append(kept, it)
		}
	}
	return kept, locked
}

func (b *Broker) deviceForUndo(name string) (*pci.Device, error) {
	bdf, err := pci.ParseBDF(name)
	if err != nil {
		return nil, err
	}
	d, err := b.cfg.Sysfs.Device(bdf)
	if err != nil {
		// The device is gone (hot-unplugged): nothing left to reset, but
		// the backend still drops its permissions on the address.
		return &pci.Device{BDF: bdf}, nil
	}
	return d, nil
}

// recover undoes what the journals of a previous broker process say is
// live. Called by New before any session opens.
//
// Two cases are not this broker's to undo:
//   - a journal of another boot: the reboot took the domain and every
//     mapping, binding and pirq with it, and reset the devices; a domain
//     with that domid now is another one. Only the devices' owner records
//     are cleared, and the journal goes;
//   - a device whose lock another broker process holds (devlock.go): the
//     killed broker's domain is gone and libxl deassigned the device, and
//     another broker gave it to a live session since. Every step of that
//     device is skipped (audited) and dropped: resetting it would pull
//     it from under its new domain.
func (b *Broker) recover() error {
	states, err := readJournals(b.cfg.StateDir)
	if err != nil {
		return err
	}
	for _, st := range states {
		if st.session > b.nextID {
			b.nextID = st.session
		}
		plan := st.live.undoPlan()
		b.event(nil, "recover", fmt.Sprintf("session=%d domid=%d live=%d journal=%s", st.session, st.domid, len(plan), st.path))
		if st.bootID != "" && st.bootID != b.bootID {
			b.forgetOtherBoot(st, plan)
			if err := os.Remove(st.path); err != nil {
				return fmt.Errorf("broker: recover: %w", err)
			}
			continue
		}
		plan, locked := b.recoverLocks(st, plan)
		failed := b.undo(st.session, st.domid, Peer{}, plan, func(string) *pci.Device { return nil })
		b.mu.Lock()
		for _, bdf := range locked {
			b.locks.release(bdf)
		}
		b.mu.Unlock()
		if len(failed) > 0 {
			// Keep the journal: the next start tries again.
			b.logf("recover session %d: %d undo steps failed; journal kept at %s", st.session, len(failed), st.path)
			continue
		}
		if err := os.Remove(st.path); err != nil {
			return fmt.Errorf("broker: recover: %w", err)
		}
	}
	return nil
}
