package broker

import (
	"errors"
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/dmsandbox/dmsandbox/pci"
	"github.com/dmsandbox/dmsandbox/pci/audit"
	"golang.org/x/sys/unix"
)

// Pre-authorisation: a site (an /etc/xen/scripts hook, a QubesOS-style
// daemon, `dmsandbox attach`) tells the broker which devices a domain may
// receive, by domid (a domain that runs now) or by name (one the site
// knows before it exists: `xl create` with pci=[...], a qube), before or
// while the domain runs. With the policy RequireAuthorization, Attach
// gives a session only devices authorised for its domain, so a device
// model's QMP `device_add` of any other device is refused (EACCES) and
// audited. Without it Attach is unchanged and the authorisations are only
// recorded.
//
// Rules:
//   - a device is authorised for one domain at a time; authorising it
//     for another is refused (EBUSY) naming the holder;
//   - authorising twice, or deauthorising what is not authorised, is
//     fine (hotplug scripts retry);
//   - a domid-keyed authorisation ends with the domain's session (the
//     device model closed it or died: the domain is gone or broken), and
//     with the boot (authz_store.go), because domids are reused and a
//     later domain with the same number must not inherit what the site
//     granted this one. A broker shutting down keeps them: the domains
//     still run. A name-keyed one lasts until withdrawn: the name is the
//     site's own, and Xen keeps it unique among running domains;
//   - deauthorising a device the domain's live session holds detaches it
//     there (the session's undo for that device: mappings, interrupts,
//     pirqs, then reset and quarantine). The site withdrew the device, so
//     the domain loses it now rather than whenever its device model lets
//     go; QEMU's later device_del finds nothing left to revoke.
//
// Lock order: authMu before s.mu and b.mu. Attach holds authMu for its
// whole run, so a deauthorisation cannot slip between Attach's check and
// the device being the session's.

// Sentinel errors of pre-authorisation.
var (
	// ErrNotAuthorized: RequireAuthorization is on and the device is not
	// authorised for the session's domain. Errors carrying it also wrap
	// unix.EACCES.
	ErrNotAuthorized = errors.New("broker: device not authorized for this domain")
)

func (b *Broker) authzPath() string {
	if b.cfg.AuthorizationsFile != "" {
		return b.cfg.AuthorizationsFile
	}
	return filepath.Join(b.cfg.StateDir, AuthorizationsFile)
}

// ownsAuthz: this broker writes its authorisations file (a daemon, or a
// broker with its own state); an embedded broker reading the daemon's
// file only reads it.
func (b *Broker) ownsAuthz() bool { return b.cfg.AuthorizationsFile == "" }

// loadAuthz reads the authorisations and settles the policy (New). A
// broker that owns its file drops the stale domid-keyed ones with an
// audit record and writes its policy down, so that an embedded broker
// started while it is down applies the same rule.
func (b *Broker) loadAuthz() error {
	b.bootID = b.cfg.BootID
	if b.bootID == "" {
		b.bootID = currentBootID()
	}
	set, err := loadAuthz(b.authzPath(), b.bootID)
	if err != nil {
		return err
	}
	b.auth, b.require = set.auth, b.cfg.RequireAuthorization
	if !b.ownsAuthz() {
		b.require = b.require || (set.require != nil && *set.require)
		return nil
	}
	// Audited before the file changes: a drop or a policy change never
	// goes unrecorded.
	for _, a := range set.stale {
		args := fmt.Sprintf("bdf=%s (recorded in another boot of the host, or undated)", a.BDF)
		if err := b.auditControl("deauthorize", a.Domid, Peer{}, args, nil); err != nil {
			return err
		}
	}
	if set.require != nil && *set.require != b.require {
		// A daemon restarted without --require-authorization turns it
		// off for the embedded brokers too: say so.
		args := fmt.Sprintf("require_authorization %v -> %v", *set.require, b.require)
		if err := b.auditControl("policy", 0, Peer{}, args, nil); err != nil {
			return err
		}
		b.logf("authorisation policy changed: %s", args)
	}
	return saveAuthz(b.authzPath(), b.auth, b.require)
}

// auditControl writes the one record of a control-channel request about
// authorisations: allow, or deny with the errno err carries.
func (b *Broker) auditControl(op string, domid uint32, peer Peer, args string, err error) error {
	r := &audit.Record{Domid: domid, PID: peer.PID, UID: peer.UID, Op: op, Args: args, Verdict: audit.Allow}
	if err != nil {
		r.Verdict, r.Err = audit.Deny, err.Error()
		var e unix.Errno
		if errors.As(err, &e) {
			r.Errno = int(e)
		}
	}
	if aerr := b.audit(r); aerr != nil {
		b.logf("audit %s: %v", op, aerr)
		return fmt.Errorf("broker: %s: audit: %w", op, aerr)
	}
	return nil
}

// auditArgs starts a control record's arguments: the device, and the
// domain's name when the record's domid cannot say which domain.
func auditArgs(d Domain, bdf pci.BDF) string {
	if d.Name != "" {
		return fmt.Sprintf("name=%s bdf=%s", d.Name, bdf)
	}
	return fmt.Sprintf("bdf=%s", bdf)
}

// Authorize lets domain d receive device bdf. peer is who asked (audit).
// Idempotent; EBUSY if bdf is authorised for another domain.
func (b *Broker) Authorize(d Domain, bdf pci.BDF, peer Peer) error {
	b.authMu.Lock()
	defer b.authMu.Unlock()
	args := auditArgs(d, bdf)
	err := b.authorize(d, bdf, &args)
	// Nothing is acknowledged unaudited: a failed record fails the request
	// (the authorisation, if stored, stays: it grants nothing by itself).
	if aerr := b.auditControl("authorize", d.ID, peer, args, err); err == nil {
		err = aerr
	}
	return err
}

func (b *Broker) authorize(d Domain, bdf pci.BDF, args *string) error {
	if err := d.check(); err != nil {
		return fmt.Errorf("broker: authorize %s: %w (%w)", bdf, err, unix.EINVAL)
	}
	if !b.ownsAuthz() {
		return fmt.Errorf("broker: authorize %s: the daemon's authorisations are the daemon's to change (%w)", bdf, unix.EPERM)
	}
	if old, ok := b.auth[bdf]; ok {
		if old.Domain() == d {
			*args += " (already)"
			return nil
		}
		return fmt.Errorf("broker: authorize %s for %s: %w: authorized for %s (%w)", bdf, d, ErrConflict, old.Domain(), unix.EBUSY)
	}
	// A typo must not silently authorise nothing: the device must exist
	// and be passable (deauthorize works for vanished devices).
	dev, err := b.cfg.Sysfs.Device(bdf)
	if err != nil {
		return fmt.Errorf("broker: authorize %s: %w (%w)", bdf, err, unix.ENODEV)
	}
	if dev.Bridge {
		return fmt.Errorf("broker: authorize %s: %w: a bridge cannot be passed through (%w)", bdf, pci.ErrRefused, unix.EINVAL)
	}
	next := make(map[pci.BDF]Authorization, len(b.auth)+1)
	for k, v := range b.auth {
		next[k] = v
	}
	a := Authorization{BDF: bdf.String(), Domid: d.ID, Name: d.Name, Since: time.Now().UTC().Truncate(time.Second)}
	if d.Name == "" {
		a.BootID = b.bootID
	}
	next[bdf] = a
	// Durable before it counts.
	if err := saveAuthz(b.authzPath(), next, b.require); err != nil {
		return fmt.Errorf("%w (%w)", err, unix.EIO)
	}
	b.auth = next
	return nil
}

// Deauthorize withdraws device bdf from domain d, detaching it from the
// domain's live session if that holds it. Idempotent: a device not
// authorised for d (nor held by its session) is fine. A device
// authorised for another domain is refused (EBUSY): that is not this
// domain's to withdraw.
func (b *Broker) Deauthorize(d Domain, bdf pci.BDF, peer Peer) error {
	b.authMu.Lock()
	defer b.authMu.Unlock()
	args := auditArgs(d, bdf)
	err := b.deauthorize(d, bdf, &args)
	if aerr := b.auditControl("deauthorize", d.ID, peer, args, err); err == nil {
		err = aerr
	}
	return err
}

func (b *Broker) deauthorize(d Domain, bdf pci.BDF, args *string) error {
	if err := d.check(); err != nil {
		return fmt.Errorf("broker: deauthorize %s: %w (%w)", bdf, err, unix.EINVAL)
	}
	if !b.ownsAuthz() {
		return fmt.Errorf("broker: deauthorize %s: the daemon's authorisations are the daemon's to change (%w)", bdf, unix.EPERM)
	}
	old, ok := b.auth[bdf]
	switch {
	case ok && old.Domain() != d:
		return fmt.Errorf("broker: deauthorize %s for %s: %w: authorized for %s (%w)", bdf, d, ErrConflict, old.Domain(), unix.EBUSY)
	case ok:
		next := make(map[pci.BDF]Authorization, len(b.auth))
		for k, v := range b.auth {
			if k != bdf {
				next[k] = v
			}
		}
		// Withdrawn on disk first: if the detach below fails half-way,
		// the device still cannot be attached again.
		if err := saveAuthz(b.authzPath(), next, b.require); err != nil {
			return fmt.Errorf("%w (%w)", err, unix.EIO)
		}
		b.auth = next
	default:
		*args += " (not authorized)"
	}
	id, held := b.holder(d, bdf)
	if !held {
		return nil
	}
	err := b.Detach(id, bdf)
	switch {
	case err == nil:
		*args += fmt.Sprintf(" detached from session %d", id)
	case errors.Is(err, ErrNoSession):
		// Detached already; held only because its files were handed
		// to the device model: reserved until the session ends.
		*args += fmt.Sprintf(" (reserved by session %d until it ends)", id)
	case errors.Is(err, ErrClosed):
		*args += fmt.Sprintf(" (session %d closed meanwhile)", id)
	default:
		*args += fmt.Sprintf(" detach from session %d failed", id)
		return fmt.Errorf("broker: deauthorize %s: %w (%w)", bdf, err, unix.EIO)
	}
	return nil
}

// domainEnded withdraws every domid-keyed authorisation of domid once
// its session has ended (see the rules above), with one audit record
// naming them.
func (b *Broker) domainEnded(domid uint32) {
	if !b.ownsAuthz() {
		// An embedded broker reading the daemon's file: that file is
		// the daemon's to change (several launchers writing it back
		// would lose each other's updates), and this broker's copy
		// dies with the domain anyway.
		return
	}
	b.authMu.Lock()
	defer b.authMu.Unlock()
	next := make(map[pci.BDF]Authorization, len(b.auth))
	var gone []string
	for k, v := range b.auth {
		if v.Name == "" && v.Domid == domid {
			gone = append(gone, k.String())
			continue
		}
		next[k] = v
	}
	if len(gone) == 0 {
		return
	}
	sort.Strings(gone)
	err := saveAuthz(b.authzPath(), next, b.require)
	if err == nil {
		b.auth = next
	} else {
		err = fmt.Errorf("%w (%w)", err, unix.EIO)
		b.logf("domain %d ended, its authorisations kept: %v", domid, err)
	}
	args := "bdf=" + strings.Join(gone, ",") + " (the domain's session ended)"
	if aerr := b.auditControl("deauthorize", domid, Peer{}, args, err); aerr != nil {
		b.logf("audit: %v", aerr)
	}
}

// holder returns the live session of domain d if it holds bdf.
func (b *Broker) holder(d Domain, bdf pci.BDF) (uint64, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	s, ok := b.sessions[b.owner[bdf]]
	if !ok || !d.of(s) {
		return 0, false
	}
	return s.ID, true
}

// Authorizations lists the authorisations of domain d (the zero Domain:
// of every domain), each with the live session holding the device, if
// any. A domid filter also lists the name-keyed authorisations of the
// domain running under that domid. peer is who asked (audit).
func (b *Broker) Authorizations(d Domain, peer Peer) ([]Authorization, error) {
	b.authMu.Lock()
	list := sortedAuthz(b.auth)
	b.authMu.Unlock()
	name := d.Name
	if d.ID != 0 {
		b.mu.Lock()
		if s, ok := b.byDomid[d.ID]; ok {
			name = s.Name
		}
		b.mu.Unlock()
	}
	out := list[:0]
	for _, a := range list {
		if !d.IsZero() && !(d.ID != 0 && a.Domid == d.ID) && !(name != "" && a.Name == name) {
			continue
		}
		bdf, _ := pci.ParseBDF(a.BDF) // stored ones parsed at load or authorize
		a.Session, _ = b.holder(a.Domain(), bdf)
		out = append(out, a)
	}
	args := "all domains"
	switch {
	case d.Name != "":
		args = "name=" + d.Name
	case d.ID != 0:
		args = fmt.Sprintf("domid=%d", d.ID)
	}
	args += fmt.Sprintf(" count=%d", len(out))
	if err := b.auditControl("authorizations", d.ID, peer, args, nil); err != nil {
		return nil, err
	}
	return out, nil
}

// checkAuthorized is Attach's gate. Called with authMu held. Refusals
// are audited here (deny, EACCES): the attach path's own record is an
// event.
func (b *Broker) checkAuthorized(s *Session, bdf pci.BDF) error {
	if !b.require {
		return nil
	}
	a, ok := b.auth[bdf]
	if ok && a.Domain().of(s) {
		return nil
	}
	why := "not authorized"
	if ok {
		why = "authorized for " + a.Domain().String()
	}
	err := fmt.Errorf("%w: attach %s to domain %d: %s; see dmsandbox attach (%w)", ErrNotAuthorized, bdf, s.Domid, why, unix.EACCES)
	r := &audit.Record{Session: s.ID, Domid: s.Domid, PID: s.Peer.PID, UID: s.Peer.UID, Op: "attach",
		Args: "bdf=" + bdf.String(), Verdict: audit.Deny, Errno: int(unix.EACCES), Err: err.Error()}
	if aerr := b.audit(r); aerr != nil {
		b.logf("audit attach: %v", aerr)
	}
	return err
}
