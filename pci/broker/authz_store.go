package broker

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/dmsandbox/dmsandbox/pci"
)

// The authorization file: which domain a site has pre-authorised to
// receive which device (`dmsandbox attach`). One JSON document, format
// version 1, replaced as a whole on every change: written to a temporary
// file, fsync'd, renamed over the old one, and the directory fsync'd, so
// a crash leaves either the old or the new set, never a torn one. Only
// the broker that owns the state directory writes it.
//
//	{"v":1,"authorizations":[{"bdf":"0000:03:00.0","domid":7,"since":"2026-11-26T16:00:00Z"}]}

const (
	authzVersion = 1
	// AuthorizationsFile is the file's name under Config.StateDir.
	AuthorizationsFile = "authorizations.json"
)

// Authorization is one device a domain may receive.
type Authorization struct {
	BDF   string    `json:"bdf"`
	Domid uint32    `json:"domid"`
	Since time.Time `json:"since"`
	// Session is the live session of the domain holding the device, if
	// any (control replies only; not stored).
	Session uint64 `json:"session,omitempty"`
}

type authzFile struct {
	V              int             `json:"v"`
	Authorizations []Authorization `json:"authorizations"`
}

// maxAuthzFile bounds what loadAuthz reads: a file this big was not
// written by a broker.
const maxAuthzFile = 4 << 20

// loadAuthz reads the authorization file at path. A missing file is an
// empty set; anything unreadable, of another version, naming a bad
// address or one device twice is an error (the broker refuses to start
// rather than guess which devices were authorised).
func loadAuthz(path string) (map[pci.BDF]Authorization, error) {
	out := map[pci.BDF]Authorization{}
	data, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return out, nil
	}
	if err != nil {
		return nil, fmt.Errorf("broker: authorizations: %w", err)
	}
	return parseAuthz(path, data)
}

// parseAuthz decodes the file's contents; path names it in errors.
func parseAuthz(path string, data []byte) (map[pci.BDF]Authorization, error) {
	out := map[pci.BDF]Authorization{}
	if len(data) > maxAuthzFile {
		return nil, fmt.Errorf("broker: authorizations %s: %d bytes, more than %d", path, len(data), maxAuthzFile)
	}
	var f authzFile
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("broker: authorizations %s: %w", path, err)
	}
	if f.V != authzVersion {
		return nil, fmt.Errorf("broker: authorizations %s: version %d, this build reads %d", path, f.V, authzVersion)
	}
	for _, a := range f.Authorizations {
		bdf, err := pci.ParseBDF(a.BDF)
		if err != nil {
			return nil, fmt.Errorf("broker: authorizations %s: %w", path, err)
		}
		if err := checkDomid(a.Domid); err != nil {
			return nil, fmt.Errorf("broker: authorizations %s: %s: %w", path, bdf, err)
		}
		if old, dup := out[bdf]; dup {
			return nil, fmt.Errorf("broker: authorizations %s: %s listed twice (domains %d and %d)", path, bdf, old.Domid, a.Domid)
		}
		a.BDF, a.Session = bdf.String(), 0
		out[bdf] = a
	}
	return out, nil
}

// saveAuthz replaces the file at path with set, durably.
func saveAuthz(path string, set map[pci.BDF]Authorization) error {
	f := authzFile{V: authzVersion, Authorizations: sortedAuthz(set)}
	data, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return fmt.Errorf("broker: authorizations %s: %w", path, err)
	}
	tmp := path + ".tmp"
	w, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("broker: authorizations: %w", err)
	}
	_, werr := w.Write(append(data, '\n'))
	serr := w.Sync()
	cerr := w.Close()
	for _, e := range []error{werr, serr, cerr} {
		if e != nil {
			os.Remove(tmp)
			return fmt.Errorf("broker: authorizations %s: %w", tmp, e)
		}
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("broker: authorizations: %w", err)
	}
	// The rename is durable only once the directory is.
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return fmt.Errorf("broker: authorizations: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("broker: authorizations: fsync %s: %w", filepath.Dir(path), err)
	}
	return nil
}

func sortedAuthz(set map[pci.BDF]Authorization) []Authorization {
	out := make([]Authorization, 0, len(set))
	for _, a := range set {
		out = append(out, a)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Domid != out[j].Domid {
			return out[i].Domid < out[j].Domid
		}
		return out[i].BDF < out[j].BDF
	})
	return out
}

// domidFirstReserved is Xen's DOMID_FIRST_RESERVED: ids from here on
// (DOMID_SELF, DOMID_IO, ...) never name a guest.
const domidFirstReserved = 0x7ff0

// checkDomid refuses ids that cannot be a guest's: 0 is the control
// domain (the host itself), and Xen's reserved ids.
func checkDomid(domid uint32) error {
	if domid == 0 || domid >= domidFirstReserved {
		return fmt.Errorf("domid %d is not a guest's (1..%d)", domid, domidFirstReserved-1)
	}
	return nil
}
