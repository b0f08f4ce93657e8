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
//	{"v":2,"require_authorization":true,"authorizations":[
//	  {"bdf":"0000:03:00.0","domid":7,"boot_id":"5f0c…","since":"2026-11-26T16:00:00Z"},
//	  {"bdf":"0000:04:00.0","name":"sys-net","since":"2026-11-26T16:00:00Z"}]}
//
// An authorisation names its domain by domid or by name, never both.
// A domid-keyed one carries the host's boot_id: domids restart at 1 when
// the host boots, so one recorded before a reboot names a domain that no
// longer exists, and is dropped at load instead of being handed to
// whichever new domain gets that number. A name-keyed one is the site's
// standing policy for a domain it knows before it exists (xl create with
// pci=[...], a QubesOS qube): it lasts until withdrawn.
//
// require_authorization is the daemon's policy, written by the daemon
// that owns the file, so that an embedded broker (a launcher that finds
// no daemon) applies the same rule instead of guessing it. Version 1
// files (session 2: no policy, no boot_id) still load: their domid-keyed
// entries cannot be dated, so they are dropped like stale ones, and
// their policy is "required" (a daemon that kept a file was one that
// took authorisations).

const (
	authzVersion = 2
	// AuthorizationsFile is the file's name under Config.StateDir.
	AuthorizationsFile = "authorizations.json"
)

// Authorization is one device a domain may receive.
type Authorization struct {
	BDF   string `json:"bdf"`
	Domid uint32 `json:"domid,omitempty"`
	Name  string `json:"name,omitempty"`
	// BootID is the host boot a domid-keyed authorisation belongs to
	// (/proc/sys/kernel/random/boot_id).
	BootID string    `json:"boot_id,omitempty"`
	Since  time.Time `json:"since"`
	// Session is the live session of the domain holding the device, if
	// any (control replies only; not stored).
	Session uint64 `json:"session,omitempty"`
}

// Domain returns whom a names: its domid or its name.
func (a Authorization) Domain() Domain { return Domain{ID: a.Domid, Name: a.Name} }

type authzFile struct {
	V                    int             `json:"v"`
	RequireAuthorization *bool           `json:"require_authorization,omitempty"`
	Authorizations       []Authorization `json:"authorizations"`
}

// authzSet is what the file holds.
type authzSet struct {
	auth map[pci.BDF]Authorization
	// require is the policy the file records: nil when there is no file.
	require *bool
	// stale are the domid-keyed authorisations dropped at load: of
	// another boot, or undatable (version 1).
	stale []Authorization
}

// maxAuthzFile bounds what loadAuthz reads: a file this big was not
// written by a broker.
const maxAuthzFile = 4 << 20

// loadAuthz reads the authorization file at path; bootID is this boot's.
// A missing file is an empty set; anything unreadable, of an unknown
// version, naming a bad address, a bad domain or one device twice is an
// error (the broker refuses to start rather than guess which devices
// were authorised).
func loadAuthz(path, bootID string) (authzSet, error) {
	data, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return authzSet{auth: map[pci.BDF]Authorization{}}, nil
	}
	if err != nil {
		return authzSet{}, fmt.Errorf("broker: authorizations: %w", err)
	}
	return parseAuthz(path, data, bootID)
}

// parseAuthz decodes the file's contents; path names it in errors.
func parseAuthz(path string, data []byte, bootID string) (authzSet, error) {
	set := authzSet{auth: map[pci.BDF]Authorization{}}
	if len(data) > maxAuthzFile {
		return authzSet{}, fmt.Errorf("broker: authorizations %s: %d bytes, more than %d", path, len(data), maxAuthzFile)
	}
	var f authzFile
	if err := json.Unmarshal(data, &f); err != nil {
		return authzSet{}, fmt.Errorf("broker: authorizations %s: %w", path, err)
	}
	switch f.V {
	case 1:
		required := true
		f.RequireAuthorization = &required
	case authzVersion:
		if f.RequireAuthorization == nil {
			return authzSet{}, fmt.Errorf("broker: authorizations %s: no require_authorization", path)
		}
	default:
		return authzSet{}, fmt.Errorf("broker: authorizations %s: version %d, this build reads 1 and %d", path, f.V, authzVersion)
	}
	set.require = f.RequireAuthorization
	seen := map[pci.BDF]Domain{}
	for _, a := range f.Authorizations {
		bdf, err := pci.ParseBDF(a.BDF)
		if err != nil {
			return authzSet{}, fmt.Errorf("broker: authorizations %s: %w", path, err)
		}
		if err := a.Domain().check(); err != nil {
			return authzSet{}, fmt.Errorf("broker: authorizations %s: %s: %w", path, bdf, err)
		}
		if old, dup := seen[bdf]; dup {
			return authzSet{}, fmt.Errorf("broker: authorizations %s: %s listed twice (%s and %s)", path, bdf, old, a.Domain())
		}
		seen[bdf] = a.Domain()
		a.BDF, a.Session = bdf.String(), 0
		if a.Name != "" {
			a.BootID = "" // names outlive boots
		} else if f.V == 1 || bootID == "" || a.BootID != bootID {
			set.stale = append(set.stale, a)
			continue
		}
		set.auth[bdf] = a
	}
	return set, nil
}

// saveAuthz replaces the file at path with set and the policy require,
// durably.
func saveAuthz(path string, set map[pci.BDF]Authorization, require bool) error {
	f := authzFile{V: authzVersion, RequireAuthorization: &require, Authorizations: sortedAuthz(set)}
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
		if out[i].Name != out[j].Name {
			return out[i].Name < out[j].Name
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
