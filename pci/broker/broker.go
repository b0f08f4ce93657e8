// Package broker is the only privileged code path of dmsandbox after a
// sandbox starts: it performs, on behalf of a confined device model, the
// PCI passthrough operations the device model may not perform itself,
// after checking each against what sysfs says about the devices the
// domain was given, and it writes every request and verdict to the audit
// log before answering.
//
// Shape:
//
//	control channel (JSON, root, SO_PEERCRED) ── open/close session, attach/detach
//	        │
//	        ▼
//	   Broker ── sessions ── Session (one per domain; SOCK_SEQPACKET fd to QEMU)
//	        │                   │ decode → policy (pci truth) → journal → backend → audit → reply
//	        │                   └ EOF: undo everything, reset, quarantine
//	        └ state journal dir: a restarted broker undoes what a killed one left
//
// The session protocol is in proto.go and docs/broker-protocol.md.
package broker

import (
	"errors"
	"fmt"
	"log"
	"os"
	"sync"

	"github.com/dmsandbox/dmsandbox/pci"
	"github.com/dmsandbox/dmsandbox/pci/audit"
	"github.com/dmsandbox/dmsandbox/pci/backend"
	"golang.org/x/sys/unix"
)

// Config is what a Broker needs. Every field is required except Logger
// and AllowFake.
type Config struct {
	Backend  backend.Backend
	Sysfs    *pci.Sysfs
	Audit    *audit.Log
	StateDir string // state journals; created 0700
	// AllowFake admits the fake backend. Only tests and `broker try` set
	// it; a production config has no way to, so a broker that would
	// pretend to do passthrough refuses to start.
	AllowFake bool
	Logger    *log.Logger
}

// Sentinel errors of the control API.
var (
	ErrNoSession = errors.New("broker: no such session")
	ErrConflict  = errors.New("broker: already in use")
	ErrClosed    = errors.New("broker: session closed")
)

// Broker holds the sessions of one host.
type Broker struct {
	cfg Config

	mu       sync.Mutex
	serving  map[*Session]bool // sessions whose socket is still served (closed ones too)
	sessions map[uint64]*Session
	byDomid  map[uint32]*Session
	owner    map[pci.BDF]uint64 // device → session holding it (global exclusivity)
	nextID   uint64
}

// New checks cfg, finishes what a killed broker left (Recover) and
// returns a broker ready to open sessions.
func New(cfg Config) (*Broker, error) {
	switch {
	case cfg.Backend == nil:
		return nil, errors.New("broker: no backend")
	case cfg.Backend.Name() == "fake" && !cfg.AllowFake:
		return nil, errors.New("broker: the fake backend executes nothing; refused outside tests")
	case cfg.Sysfs == nil:
		return nil, errors.New("broker: no sysfs")
	case cfg.Audit == nil:
		return nil, errors.New("broker: no audit log (refusing to broker unaudited)")
	case cfg.StateDir == "":
		return nil, errors.New("broker: no state directory")
	}
	if cfg.Logger == nil {
		cfg.Logger = log.New(os.Stderr, "dmsandbox broker: ", log.LstdFlags)
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("broker: %w", err)
	}
	b := &Broker{cfg: cfg, serving: map[*Session]bool{}, sessions: map[uint64]*Session{}, byDomid: map[uint32]*Session{}, owner: map[pci.BDF]uint64{}}
	if err := b.recover(); err != nil {
		return nil, err
	}
	return b, nil
}

func (b *Broker) logf(format string, a ...any) { b.cfg.Logger.Printf(format, a...) }

func (b *Broker) audit(r *audit.Record) error { return b.cfg.Audit.Append(r) }

// event audits a session lifecycle event; failures are logged (there is
// no client to answer).
func (b *Broker) event(s *Session, op, args string) {
	r := &audit.Record{Op: op, Args: args, Verdict: audit.Event}
	if s != nil {
		r.Session, r.Domid, r.PID, r.UID = s.ID, s.Domid, s.Peer.PID, s.Peer.UID
	}
	if err := b.audit(r); err != nil {
		b.logf("audit %s: %v", op, err)
	}
}

// OpenSession creates the session of domain domid and returns the client
// end of its socket. The caller owns the returned file: hand it to the
// device model (SCM_RIGHTS or fd inheritance) and close its own copy.
func (b *Broker) OpenSession(domid uint32, peer Peer) (*Session, *os.File, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if old, ok := b.byDomid[domid]; ok {
		return nil, nil, fmt.Errorf("%w: domain %d has session %d", ErrConflict, domid, old.ID)
	}
	b.nextID++
	id := b.nextID
	// Journal IDs must not collide with those of an earlier broker run
	// whose journals are still being undone: skip taken names.
	for {
		if _, err := os.Stat(journalPath(b.cfg.StateDir, id)); os.IsNotExist(err) {
			break
		}
		b.nextID++
		id = b.nextID
	}
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("broker: socketpair: %w", err)
	}
	srv, cli := os.NewFile(uintptr(fds[0]), "broker-session"), os.NewFile(uintptr(fds[1]), fmt.Sprintf("session-%d", id))
	conn := newPacketConn(srv)
	if err := conn.passCred(); err != nil {
		conn.Close()
		cli.Close()
		return nil, nil, fmt.Errorf("broker: session socket: SO_PASSCRED: %w", err)
	}
	j, err := createJournal(b.cfg.StateDir, id, domid)
	if err != nil {
		conn.Close()
		cli.Close()
		return nil, nil, err
	}
	s := &Session{b: b, ID: id, Domid: domid, Peer: peer, conn: conn, devs: map[pci.BDF]*sessionDevice{}, journal: j, done: make(chan struct{})}
	b.sessions[id] = s
	b.byDomid[domid] = s
	b.serving[s] = true
	b.event(s, "session_open", fmt.Sprintf("domid=%d", domid))
	go func() {
		s.serve()
		b.mu.Lock()
		delete(b.serving, s)
		b.mu.Unlock()
	}()
	return s, cli, nil
}

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
	dev, err := b.cfg.Sysfs.Device(bdf)
	if err != nil {
		return fmt.Errorf("broker: attach %s: %w", bdf, err)
	}
	if dev.Bridge {
		return fmt.Errorf("broker: attach %s: %w: a bridge cannot be passed through", bdf, pci.ErrRefused)
	}
	b.mu.Lock()
	if other, ok := b.owner[bdf]; ok {
		b.mu.Unlock()
		return fmt.Errorf("%w: %s is attached to session %d", ErrConflict, bdf, other)
	}
	b.owner[bdf] = id
	b.mu.Unlock()

	s.mu.Lock()
	defer s.mu.Unlock()
	fail := func(err error) error {
		b.mu.Lock()
		delete(b.owner, bdf)
		b.mu.Unlock()
		b.event(s, "attach", fmt.Sprintf("bdf=%s failed: %v", bdf, err))
		return err
	}
	if s.closed {
		return fail(ErrClosed)
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
	s.devs[bdf] = &sessionDevice{dev: dev, permissive: o.Permissive, writable: writableMask(dev, o.Permissive)}
	s.live.add(it)
	b.event(s, "attach", fmt.Sprintf("bdf=%s permissive=%v", bdf, o.Permissive))
	return nil
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
	s.mu.Unlock()
	b.mu.Lock()
	delete(b.owner, sd.dev.BDF)
	b.mu.Unlock()
	if len(failed) > 0 {
		return fmt.Errorf("broker: detach %s: %d undo steps failed (see audit log)", bdf, len(failed))
	}
	return nil
}

// CloseSession undoes session id. Its socket stays open until the client
// hangs up; every request on it is answered ESHUTDOWN.
func (b *Broker) CloseSession(id uint64) error {
	s, err := b.session(id)
	if err != nil {
		return err
	}
	s.close("closed by control channel")
	return nil
}

// Session returns the session with id.
func (b *Broker) session(id uint64) (*Session, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	s, ok := b.sessions[id]
	if !ok {
		return nil, fmt.Errorf("%w: %d", ErrNoSession, id)
	}
	return s, nil
}

// SessionInfo is a session as the control channel lists it.
type SessionInfo struct {
	ID      uint64   `json:"id"`
	Domid   uint32   `json:"domid"`
	Peer    Peer     `json:"peer"`
	Devices []string `json:"devices"`
	Live    []string `json:"live"`
}

// Sessions lists open sessions.
func (b *Broker) Sessions() []SessionInfo {
	b.mu.Lock()
	ss := make([]*Session, 0, len(b.sessions))
	for _, s := range b.sessions {
		ss = append(ss, s)
	}
	b.mu.Unlock()
	var out []SessionInfo
	for _, s := range ss {
		s.mu.Lock()
		si := SessionInfo{ID: s.ID, Domid: s.Domid, Peer: s.Peer}
		for _, sd := range s.sortedDevs() {
			si.Devices = append(si.Devices, sd.dev.BDF.String())
		}
		for _, it := range s.live.items {
			si.Live = append(si.Live, it.String())
		}
		s.mu.Unlock()
		out = append(out, si)
	}
	return out
}

// forget removes a closed session from the tables and frees its devices.
func (b *Broker) forget(s *Session, why string) {
	b.mu.Lock()
	if b.sessions[s.ID] == s {
		delete(b.sessions, s.ID)
		delete(b.byDomid, s.Domid)
	}
	for bdf, id := range b.owner {
		if id == s.ID {
			delete(b.owner, bdf)
		}
	}
	b.mu.Unlock()
	b.event(s, "session_close", why)
}

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
				if rerr := be.Reset(d); rerr != nil {
					b.auditUndo(id, domid, peer, "undo_reset", it, rerr)
				} else {
					b.auditUndo(id, domid, peer, "undo_reset", it, nil)
				}
				err = be.Release(domid, d)
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
		failed := b.undo(st.session, st.domid, Peer{}, plan, func(string) *pci.Device { return nil })
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

// Close closes every session (undoing them) and waits for their serving
// goroutines. The backend and audit log stay open: they belong to the
// caller.
func (b *Broker) Close() error {
	b.mu.Lock()
	ss := make([]*Session, 0, len(b.serving))
	for s := range b.serving {
		ss = append(ss, s)
	}
	b.mu.Unlock()
	for _, s := range ss {
		s.close("broker shutting down")
		s.conn.Shutdown()
		<-s.done
	}
	return nil
}
