package broker

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/dmsandbox/dmsandbox/pci"
	"golang.org/x/sys/unix"
)

// Device locks: one device, one session, across broker processes. The
// owner table (Broker.owner) makes a device exclusive within one broker;
// but a launcher that finds no daemon runs its own embedded broker, so
// two brokers can run at once (one started while the other restarts).
// Each device a session owns is therefore also held as an flock(2) on
// LockDir/DDDD:BB:DD.F.lock: the kernel drops it when the holder closes
// it or dies, so a killed broker never leaves a device locked, and a
// second broker's attach of a held device fails (EBUSY) naming the
// holder. LockDir lives on a tmpfs (/run): locks mean nothing across
// boots.
//
// A restarted broker's recovery takes each journaled device's lock
// before undoing it, and skips (audited) a device another broker process
// holds: libxl deassigned it when the killed broker's domain went, and
// another broker gave it to a live session since (undo.go, recover).

// DefaultLockDir is where the daemon and DM mode's embedded brokers
// keep their device locks.
const DefaultLockDir = "/run/dmsandbox/devices"

// The same locks keep a domain name to one live session across broker
// processes (name=NAME.lock, the name path-escaped): two sessions
// claiming one name would both match the name's authorisations.
type devLocks struct {
	dir  string              // "" : no cross-process locking
	held map[string]*os.File // by lock file name
}

// acquire takes bdf's lock for holder (a description written into the
// file for whoever is refused next). Called with b.mu held.
func (l *devLocks) acquire(bdf pci.BDF, holder string) error {
	return l.take(bdf.String(), bdf.String(), holder)
}

// release drops bdf's lock, if held. Called with b.mu held.
func (l *devLocks) release(bdf pci.BDF) { l.drop(bdf.String()) }

// acquireName and releaseName: the same for a domain name.
func (l *devLocks) acquireName(name, holder string) error {
	return l.take("name="+url.PathEscape(name), fmt.Sprintf("domain name %q", name), holder)
}

func (l *devLocks) releaseName(name string) { l.drop("name=" + url.PathEscape(name)) }

func (l *devLocks) take(key, what, holder string) error {
	if l.dir == "" {
		return nil
	}
	if _, ok := l.held[key]; ok {
		return nil
	}
	if err := os.MkdirAll(l.dir, 0o700); err != nil {
		return fmt.Errorf("broker: lock of %s: %w", what, err)
	}
	p := filepath.Join(l.dir, key+".lock")
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("broker: lock of %s: %w", what, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			who, _ := os.ReadFile(p)
			return fmt.Errorf("%w: %s is held by another broker process (%s) (%w)", ErrConflict, what, strings.TrimSpace(string(who)), unix.EBUSY)
		}
		return fmt.Errorf("broker: lock of %s: flock %s: %w", what, p, err)
	}
	// Who holds it, for the refusal above; best effort (the lock, not
	// the text, is what excludes).
	if err := f.Truncate(0); err == nil {
		f.WriteAt([]byte(holder+"\n"), 0)
	}
	if l.held == nil {
		l.held = map[string]*os.File{}
	}
	l.held[key] = f
	return nil
}

// drop releases the lock key, if held. The file stays: removing it
// would race with another broker's open and lock of the same path.
func (l *devLocks) drop(key string) {
	if f, ok := l.held[key]; ok {
		f.Close()
		delete(l.held, key)
	}
}
