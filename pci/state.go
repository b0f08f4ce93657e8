package pci

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"
)

// DefaultStateDir is where binding records live unless configured.
const DefaultStateDir = "/var/lib/dmsandbox/pci"

// stateVersion is the on-disk format version of a Record. A reader refuses
// versions it does not know rather than guess.
const stateVersion = 1

// Record is the persisted memory of one device made assignable: enough to
// give it back to the host after a crash or a restart of dmsandbox. One
// JSON file per device, <state dir>/<bdf>.json.
type Record struct {
	Version int `json:"version"`
	BDF     BDF `json:"bdf"`
	// Vendor and DeviceID guard against re-attaching a different device
	// that appeared at the same address (hotplug) in between.
	Vendor   uint16 `json:"vendor"`
	DeviceID uint16 `json:"device"`
	// Stub is the passthrough driver the device was moved to.
	Stub Stub `json:"stub"`
	// OriginalDriver is the driver bound before ("" for none);
	// OriginalOverride the previous driver_override ("" for none).
	OriginalDriver   string `json:"original_driver"`
	OriginalOverride string `json:"original_override,omitempty"`
	// Phase is "binding" while the host is being changed and "bound" once
	// the device sits on the stub. A "binding" record found at start is a
	// crash mid-way: the device must be given back, not used.
	Phase string `json:"phase"`
	// Owner is the domain (session) the broker assigned the device to, ""
	// while it is only quarantined.
	Owner string    `json:"owner,omitempty"`
	Time  time.Time `json:"time"`
}

// Record phases.
const (
	PhaseBinding = "binding"
	PhaseBound   = "bound"
)

// State is the directory of binding records.
type State struct{ Dir string }

func (st State) file(b BDF) string { return filepath.Join(st.Dir, b.String()+".json") }

// Load returns the record for b; an ErrNoRecord-wrapping error when none.
func (st State) Load(b BDF) (*Record, error) {
	data, err := os.ReadFile(st.file(b))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("pci %s: in %s: %w", b, st.Dir, ErrNoRecord)
	}
	if err != nil {
		return nil, fmt.Errorf("pci %s: %w", b, err)
	}
	var r Record
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("pci %s: %s: %v: %w", b, st.file(b), err, ErrMalformed)
	}
	if r.Version != stateVersion {
		return nil, fmt.Errorf("pci %s: %s: format version %d, this dmsandbox reads %d: %w", b, st.file(b), r.Version, stateVersion, ErrMalformed)
	}
	if r.BDF != b {
		return nil, fmt.Errorf("pci %s: %s names %s: %w", b, st.file(b), r.BDF, ErrMalformed)
	}
	return &r, nil
}

// Save writes the record durably: temp file, fsync, rename, fsync of the
// directory. A record that is not on disk before the host is changed is
// worthless after a crash.
func (st State) Save(r *Record) error {
	r.Version = stateVersion
	if err := os.MkdirAll(st.Dir, 0o700); err != nil {
		return fmt.Errorf("pci %s: state dir: %w", r.BDF, err)
	}
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("pci %s: %w", r.BDF, err)
	}
	f, err := os.CreateTemp(st.Dir, "."+r.BDF.String()+".tmp*")
	if err != nil {
		return fmt.Errorf("pci %s: %w", r.BDF, err)
	}
	tmp := f.Name()
	_, werr := f.Write(append(data, '\n'))
	serr := f.Sync()
	cerr := f.Close()
	if err := errors.Join(werr, serr, cerr); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("pci %s: write %s: %w", r.BDF, tmp, err)
	}
	if err := os.Rename(tmp, st.file(r.BDF)); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("pci %s: %w", r.BDF, err)
	}
	return syncDir(st.Dir)
}

// Remove deletes the record of b (no error when there is none).
func (st State) Remove(b BDF) error {
	if err := os.Remove(st.file(b)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("pci %s: %w", b, err)
	}
	return syncDir(st.Dir)
}

// List returns every record in the directory, sorted by address. A file
// that does not parse is an error: an unreadable record is a device whose
// way home is lost, and the operator must see it.
func (st State) List() ([]*Record, error) {
	ents, err := os.ReadDir(st.Dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("pci: state dir: %w", err)
	}
	var out []*Record
	var errs []error
	for _, e := range ents {
		name, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok || strings.HasPrefix(name, ".") {
			continue
		}
		b, err := ParseBDF(name)
		if err != nil {
			errs = append(errs, fmt.Errorf("pci: state dir %s: %q: %w", st.Dir, e.Name(), err))
			continue
		}
		r, err := st.Load(b)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].BDF.Less(out[j].BDF) })
	return out, errors.Join(errs...)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", dir, err)
	}
	return nil
}

// lock takes an exclusive, non-blocking flock on <dir>/.<bdf>.lock so that
// two dmsandbox processes never move the same device at once. The lock
// dies with the process, so a crash never leaves it held.
func (st State) lock(b BDF) (unlock func(), err error) {
	if err := os.MkdirAll(st.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("pci %s: state dir: %w", b, err)
	}
	path := filepath.Join(st.Dir, "."+b.String()+".lock")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("pci %s: %w", b, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("pci %s: another dmsandbox is changing this device (%s): %w", b, path, ErrRefused)
		}
		return nil, fmt.Errorf("pci %s: lock %s: %w", b, path, err)
	}
	return func() { f.Close() }, nil
}
