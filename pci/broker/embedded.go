package broker

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/dmsandbox/dmsandbox/pci"
	"github.com/dmsandbox/dmsandbox/pci/audit"
	"github.com/dmsandbox/dmsandbox/pci/backend"
)

// EmbeddedConfig configures a broker living inside the launcher process.
type EmbeddedConfig struct {
	Backend   backend.Backend // required; the Embedded owns it from now on
	SysfsRoot string          // "/" if empty
	AuditDir  string          // required
	StateDir  string          // required; per launcher, e.g. /run/dmsandbox/dom7/broker
	// PCIStateDir holds pci's binding records (Config.Records); empty:
	// no records, bus resets beside quarantined devices refused.
	PCIStateDir string
	// Buffered turns the audit log's durable group commit off (records
	// are synced every 100ms). Production leaves it false.
	Buffered  bool
	Syslog    bool // copy audit records to syslog
	AllowFake bool // tests only
	// RequireAuthorization and AuthorizationsFile: Config's. An embedded
	// broker requiring authorisation reads the site's file (the daemon's,
	// /var/lib/dmsandbox/broker/authorizations.json) once, at start.
	RequireAuthorization bool
	AuthorizationsFile   string
	// LockDir: Config's (the daemon's, so that both exclude each other).
	LockDir string
}

// Embedded is a broker in the launcher's own process: the same code as the
// daemon, without the control socket. It implements Controller.
type Embedded struct {
	*Broker
	log *audit.Log
	be  backend.Backend
}

// NewEmbedded opens the audit log, recovers the state directory and
// returns a ready broker.
func NewEmbedded(cfg EmbeddedConfig) (*Embedded, error) {
	if cfg.Backend == nil {
		return nil, errors.New("broker: embedded: no backend")
	}
	opts := audit.Options{Dir: cfg.AuditDir, Durable: !cfg.Buffered}
	if cfg.Syslog {
		w, err := audit.Syslog()
		if err != nil {
			return nil, err
		}
		opts.Copy = w
	}
	al, err := audit.Open(opts)
	if err != nil {
		return nil, err
	}
	var records *pci.State
	if cfg.PCIStateDir != "" {
		records = &pci.State{Dir: cfg.PCIStateDir}
	}
	b, err := New(Config{Backend: cfg.Backend, Sysfs: pci.NewSysfs(cfg.SysfsRoot), Audit: al, StateDir: cfg.StateDir,
		Records: records, AllowFake: cfg.AllowFake,
		RequireAuthorization: cfg.RequireAuthorization, AuthorizationsFile: cfg.AuthorizationsFile, LockDir: cfg.LockDir})
	if err != nil {
		al.Close()
		return nil, err
	}
	return &Embedded{Broker: b, log: al, be: cfg.Backend}, nil
}

// Audit returns the embedded broker's audit log.
func (e *Embedded) Audit() *audit.Log { return e.log }

// Open implements Controller; the peer is this process.
func (e *Embedded) Open(domid uint32, name string) (uint64, *os.File, error) {
	s, f, err := e.OpenSession(domid, name, Peer{PID: int32(os.Getpid()), UID: uint32(os.Getuid())})
	if err != nil {
		return 0, nil, err
	}
	return s.ID, f, nil
}

// Close implements Controller.
func (e *Embedded) Close(session uint64) error { return e.CloseSession(session) }

// Shutdown closes every session (undoing them), then the audit log and
// the backend.
func (e *Embedded) Shutdown() error {
	err := e.Broker.Close()
	if lerr := e.log.Close(); err == nil {
		err = lerr
	}
	if berr := e.be.Close(); err == nil {
		err = berr
	}
	return err
}

// Connect returns the daemon at socket if one is listening there, else
// builds an embedded broker with embedded() — the default on a machine
// where no daemon runs.
func Connect(socket string, embedded func() (*Embedded, error)) (Controller, error) {
	if _, err := os.Stat(socket); err == nil {
		c, err := DialControl(socket)
		if err == nil {
			return c, nil
		}
		// A socket file nobody listens on is a dead daemon's leftover;
		// anything else (permission) is an error, not a reason to
		// silently broker in-process next to a live daemon.
		if !errors.Is(err, fs.ErrNotExist) && !isConnRefused(err) {
			return nil, err
		}
	}
	if embedded == nil {
		return nil, fmt.Errorf("broker: no daemon at %s and no embedded broker configured", filepath.Clean(socket))
	}
	return embedded()
}
