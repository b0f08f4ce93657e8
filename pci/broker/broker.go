// Package broker is the only privileged code path of dmsandbox after a
// sandbox starts: it performs, on behalf of a confined device model, the
// PCI passthrough operations the device model may not perform itself,
// after checking each against what sysfs says about the devices the
// domain was given, and it writes every request and verdict to the audit
// log before answering.
//
// Shape:
//
//	control channel (JSON, root, SO_PEERCRED) ── open/close session, attach/detach,
//	        │                                     authorize/deauthorize by domid (authz.go)
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
	// Records are pci's binding records (pci.DefaultStateDir in
	// production, the directory `dmsandbox pci assignable-add` and the
	// vfio backend write). The broker marks a device's record with its
	// domain while a session holds it, and tells resets who holds the
	// neighbours, so that a bus reset is allowed when every device
	// behind the bridge is idle or the same domain's. Nil: no records,
	// and a bus reset beside any quarantined device is refused.
	Records *pci.State
	// AllowFake admits the fake backend. Only tests and `broker try` set
	// it; a production config has no way to, so a broker that would
	// pretend to do passthrough refuses to start.
	AllowFake bool
	Logger    *log.Logger
	// RequireAuthorization makes Attach refuse (EACCES, audited) any
	// device not pre-authorised for the session's domain (Authorize;
	// `dmsandbox attach`). Off: Attach as before, authorisations are
	// only recorded.
	RequireAuthorization bool
	// AuthorizationsFile is where authorisations persist; empty:
	// StateDir/authorizations.json, which this broker owns and writes
	// (with its policy, at start and on every change). An embedded
	// broker points it at the daemon's file to honour the site's
	// authorisations and policy: authorisation is then required if
	// either RequireAuthorization or the daemon's file says so.
	AuthorizationsFile string
	// BootID overrides this boot's id (tests); empty: the kernel's.
	BootID string
	// LockDir holds the device locks that keep a device to one session
	// across broker processes (devlock.go; DefaultLockDir in
	// production). Empty: exclusivity within this broker only.
	LockDir string
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
	locks    devLocks           // the owned devices' cross-process locks, kept with owner
	nextID   uint64

	authMu  sync.Mutex // outermost: held by Attach and (de)authorisation (authz.go)
	auth    map[pci.BDF]Authorization
	require bool   // effective policy (Config.RequireAuthorization, or the daemon's file's)
	bootID  string // stamped on domid-keyed authorisations
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
	b := &Broker{cfg: cfg, serving: map[*Session]bool{}, sessions: map[uint64]*Session{}, byDomid: map[uint32]*Session{}, owner: map[pci.BDF]uint64{},
		locks: devLocks{dir: cfg.LockDir}}
	last, err := loadLastID(cfg.StateDir)
	if err != nil {
		return nil, err
	}
	b.nextID = last
	if err := b.loadAuthz(); err != nil {
		return nil, err
	}
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

// OpenSession creates the session of domain domid (called name, if the
// launcher knows it; "" otherwise) and returns the client
// end of its socket. The caller owns the returned file: hand it to the
// device model (SCM_RIGHTS or fd inheritance) and close its own copy.
func (b *Broker) OpenSession(domid uint32, name string, peer Peer) (*Session, *os.File, error) {
	if name != "" {
		if err := CheckDomainName(name); err != nil {
			return nil, nil, fmt.Errorf("broker: open: %w", err)
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if old, ok := b.byDomid[domid]; ok {
		return nil, nil, fmt.Errorf("%w: domain %d has session %d", ErrConflict, domid, old.ID)
	}
	// Xen keeps names unique among live domains; a second session
	// claiming a live one's name is not a domain, and would match the
	// name's authorisations.
	for _, old := range b.byDomid {
		if name != "" && old.Name == name {
			return nil, nil, fmt.Errorf("%w: domain %d (session %d) is called %q", ErrConflict, old.Domid, old.ID, name)
		}
	}
	// ... nor another broker process's (devlock.go).
	opened := false
	if name != "" {
		if err := b.locks.acquireName(name, fmt.Sprintf("pid %d, domain %d", os.Getpid(), domid)); err != nil {
			return nil, nil, err
		}
		defer func() {
			if !opened {
				b.locks.releaseName(name)
			}
		}()
	}
	id, err := b.allocID()
	if err != nil {
		return nil, nil, err
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
	j, err := createJournal(b.cfg.StateDir, id, domid, b.bootID)
	if err != nil {
		conn.Close()
		cli.Close()
		return nil, nil, err
	}
	s := &Session{b: b, ID: id, Domid: domid, Name: name, Peer: peer, conn: conn, devs: map[pci.BDF]*sessionDevice{}, journal: j, done: make(chan struct{})}
	b.sessions[id] = s
	b.byDomid[domid] = s
	b.serving[s] = true
	opened = true
	args := fmt.Sprintf("domid=%d", domid)
	if name != "" {
		args += " name=" + name
	}
	b.event(s, "session_open", args)
	go func() {
		s.serve()
		b.mu.Lock()
		delete(b.serving, s)
		b.mu.Unlock()
	}()
	return s, cli, nil
}

// CloseSession undoes session id. Its socket stays open until the client
// hangs up; every request on it is answered ESHUTDOWN.
func (b *Broker) CloseSession(id uint64) error {
	s, err := b.session(id)
	if err != nil {
		return err
	}
	if s.close("closed by control channel") {
		b.domainEnded(s.Domid)
	}
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
	Name    string   `json:"name,omitempty"`
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
		si := SessionInfo{ID: s.ID, Domid: s.Domid, Name: s.Name, Peer: s.Peer}
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
		if s.Name != "" {
			b.locks.releaseName(s.Name)
		}
	}
	for bdf, id := range b.owner {
		if id == s.ID {
			b.disown(bdf, s.ID)
		}
	}
	b.mu.Unlock()
	b.event(s, "session_close", why)
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
