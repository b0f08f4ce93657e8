package broker

import (
	"fmt"
	"os"
	"strings"
)

// Domain names the domain an authorisation is for: by domid (a domain
// that exists now), or by name (one the site knows before it exists:
// `xl create` with pci=[...], a QubesOS qube). Exactly one is set.
type Domain struct {
	ID   uint32
	Name string
}

// ByDomid names domain id.
func ByDomid(id uint32) Domain { return Domain{ID: id} }

// ByName names the domain called name.
func ByName(name string) Domain { return Domain{Name: name} }

func (d Domain) String() string {
	if d.Name != "" {
		return fmt.Sprintf("domain %q", d.Name)
	}
	return fmt.Sprintf("domain %d", d.ID)
}

// IsZero: neither set (Authorizations: every domain).
func (d Domain) IsZero() bool { return d.ID == 0 && d.Name == "" }

func (d Domain) check() error {
	switch {
	case d.ID != 0 && d.Name != "":
		return fmt.Errorf("%s names domain %d too: one of domid and name", d, d.ID)
	case d.Name != "":
		return CheckDomainName(d.Name)
	default:
		return checkDomid(d.ID)
	}
}

// of says whether the session's domain is d.
func (d Domain) of(s *Session) bool {
	if d.Name != "" {
		return s.Name == d.Name
	}
	return s.Domid == d.ID
}

// maxDomainName bounds a name; libxl's own names are far shorter in
// practice (QubesOS caps qube names at 31 characters).
const maxDomainName = 64

// CheckDomainName accepts what a site would name a domain and nothing
// that could be mistaken for something else: no control characters or
// spaces (the audit log and `attach --list` print it in columns), no
// comma or equals sign (libxl passes the name to QEMU's -name unescaped,
// where they start options), not all digits (xl reads those as a domid),
// at most maxDomainName bytes.
func CheckDomainName(name string) error {
	if name == "" || len(name) > maxDomainName {
		return fmt.Errorf("domain name %q: want 1 to %d characters", name, maxDomainName)
	}
	digits := true
	for _, c := range name {
		if c <= ' ' || c == 0x7f || c > '~' || strings.ContainsRune(`"\,=`, c) {
			return fmt.Errorf("domain name %q: printable ASCII without spaces, quotes, backslashes, commas or equals signs only", name)
		}
		if c < '0' || c > '9' {
			digits = false
		}
	}
	if digits {
		return fmt.Errorf("domain name %q: all digits reads as a domid", name)
	}
	return nil
}

// bootIDFile holds the kernel's random id of this boot.
const bootIDFile = "/proc/sys/kernel/random/boot_id"

// currentBootID reads this boot's id; a host without it (no procfs) has
// domid-keyed authorisations that never survive a broker restart.
func currentBootID() string {
	b, err := os.ReadFile(bootIDFile)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}
