package seccomp

import (
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strings"
	"sync"
)

//go:embed profiles/*.json
var profileFS embed.FS

// ErrUnknownProfile is returned by Load for a name that is not a loadable
// profile (no such file, or an abstract part).
var ErrUnknownProfile = errors.New("unknown seccomp profile")

// catalog holds every embedded profile file, parsed once.
var catalog = sync.OnceValues(func() (map[string]*fileProfile, error) {
	return readCatalog(profileFS, "profiles")
})

func readCatalog(fsys fs.FS, dir string) (map[string]*fileProfile, error) {
	ents, err := fs.ReadDir(fsys, dir)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", dir, err)
	}
	out := map[string]*fileProfile{}
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		p := path.Join(dir, e.Name())
		data, err := fs.ReadFile(fsys, p)
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", p, err)
		}
		fp, err := parseProfile(data)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		if fp.Name+".json" != e.Name() {
			return nil, fmt.Errorf("%s: profile name %q does not match the file name", p, fp.Name)
		}
		out[fp.Name] = fp
	}
	return out, nil
}

// Names returns the loadable profiles, sorted. Abstract parts are not listed.
func Names() []string {
	cat, err := catalog()
	if err != nil {
		return nil
	}
	var names []string
	for n, fp := range cat {
		if !fp.Abstract {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	return names
}

// Option changes how a profile is loaded.
type Option func(*options)

type options struct {
	logMode bool
	selfPID int
}

// LogMode makes the default action SCMP_ACT_LOG instead of killing the
// process: every call no rule allows is allowed and written to the kernel
// log (audit type=1326). For discovery only, never for production.
func LogMode() Option { return func(o *options) { o.logMode = true } }

// SelfPID tells the compiler the pid the confined program will have, so
// rules with op self_pid (kill, tgkill) allow signals to that pid only.
// The launcher knows it when QEMU is the init of its own PID namespace
// (pid 1). Without it, self_pid conditions allow any non-negative pid.
func SelfPID(pid int) Option { return func(o *options) { o.selfPID = pid } }

// Load composes the named profile with the parts it includes and checks
// the result. An unknown or abstract name returns ErrUnknownProfile.
func Load(name string, opts ...Option) (*Profile, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	if o.selfPID < 0 {
		return nil, fmt.Errorf("seccomp profile %s: negative self pid %d", name, o.selfPID)
	}
	cat, err := catalog()
	if err != nil {
		return nil, fmt.Errorf("seccomp profiles: %w", err)
	}
	return compose(cat, name, o)
}

// compose resolves includes depth first (each part once, its includes
// before its own rules) and checks that the rules for one syscall agree.
func compose(cat map[string]*fileProfile, name string, o options) (*Profile, error) {
	root, ok := cat[name]
	if !ok || root.Abstract {
		return nil, fmt.Errorf("%w: %q (known: %s)", ErrUnknownProfile, name, strings.Join(namesOf(cat), ", "))
	}
	var rules []Rule
	var parts []string
	done := map[string]bool{}
	onPath := map[string]bool{}
	var visit func(n string) error
	visit = func(n string) error {
		fp, ok := cat[n]
		if !ok {
			return fmt.Errorf("includes unknown part %q", n)
		}
		if onPath[n] {
			return fmt.Errorf("include cycle through %q", n)
		}
		if done[n] {
			return nil
		}
		onPath[n] = true
		for _, inc := range fp.Include {
			if err := visit(inc); err != nil {
				return err
			}
		}
		onPath[n] = false
		done[n] = true
		parts = append(parts, n)
		for i := range fp.Rules {
			rs, err := resolveRule(&fp.Rules[i], n)
			if err != nil {
				return fmt.Errorf("%s: rule %d: %w", n, i, err)
			}
			rules = append(rules, rs...)
		}
		return nil
	}
	if err := visit(name); err != nil {
		return nil, fmt.Errorf("seccomp profile %s: %w", name, err)
	}
	for i := range rules {
		for j := range rules[i].Args {
			c := &rules[i].Args[j]
			if c.Op != OpSelfPID {
				continue
			}
			if o.selfPID > 0 {
				c.Op, c.Value, c.Text = OpEqual, uint64(o.selfPID), fmt.Sprintf("self (%d)", o.selfPID)
			} else {
				c.Op, c.Mask, c.Value, c.Text = OpMaskedEqual, nonNegativePIDMask, 0, "self (any pid >= 0)"
			}
		}
	}
	set, err := newRuleSet(rules)
	if err != nil {
		return nil, fmt.Errorf("seccomp profile %s: %w", name, err)
	}
	return &Profile{name: name, summary: root.Summary, parts: parts, rules: set, opts: o}, nil
}

func namesOf(cat map[string]*fileProfile) []string {
	var n []string
	for k, fp := range cat {
		if !fp.Abstract {
			n = append(n, k)
		}
	}
	sort.Strings(n)
	return n
}
