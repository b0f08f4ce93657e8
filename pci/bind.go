package pci

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// Binder moves devices between host drivers and a passthrough stub,
// remembering in State where each came from.
type Binder struct {
	Sysfs   *Sysfs
	State   State
	Deny    DenyList
	Timeout time.Duration // per kernel write; 0 means DefaultTimeout
}

func (bd *Binder) drvPath(drv, file string) string {
	return bd.Sysfs.path("bus", "pci", "drivers", drv, file)
}

// Add makes the device assignable: it hands it to the stub driver and
// leaves it there, quarantined (see docs/pci.md). It is idempotent: a
// device already on the stub with a record is returned as is.
//
// The order matters and each step says why.
func (bd *Binder) Add(b BDF, to Stub) (*Record, error) {
	return bd.add(b, to, true)
}

// AddGroup makes every member of b's IOMMU group assignable (bridge ports
// in the group stay on pcieport, which VFIO accepts), for groups whose
// members are only usable together, such as the functions of a
// multi-function device without ACS. Every member is checked before any is
// touched; if one fails to bind, those already moved are given back.
func (bd *Binder) AddGroup(b BDF, to Stub) ([]*Record, error) {
	s := bd.Sysfs
	d, err := s.Device(b)
	if err != nil {
		return nil, err
	}
	if to != StubVFIO || d.IOMMUGroup < 0 {
		r, err := bd.Add(b, to)
		if err != nil {
			return nil, err
		}
		return []*Record{r}, nil
	}
	members, err := s.IOMMUGroupDevices(d.IOMMUGroup)
	if err != nil {
		return nil, fmt.Errorf("pci %s: %w", b, err)
	}
	var todo []BDF
	for _, m := range members {
		md, err := s.Device(m)
		if err != nil {
			return nil, err
		}
		if md.Bridge && (md.Driver == "" || md.Driver == "pcieport") {
			continue
		}
		if err := s.assignableAlone(md, to, bd.Deny); err != nil {
			return nil, fmt.Errorf("pci %s: group %d member: %w", b, d.IOMMUGroup, err)
		}
		todo = append(todo, m)
	}
	var done []*Record
	for _, m := range todo {
		r, err := bd.add(m, to, false)
		if err != nil {
			// Undo in reverse, the failed member first: its record
			// (phase binding) knows where it came from.
			undo := make([]BDF, 0, len(done)+1)
			if _, lerr := bd.State.Load(m); lerr == nil {
				undo = append(undo, m)
			}
			for i := len(done) - 1; i >= 0; i-- {
				undo = append(undo, done[i].BDF)
			}
			for _, u := range undo {
				if _, rerr := bd.Remove(u); rerr != nil {
					err = errors.Join(err, fmt.Errorf("undo: %w", rerr))
				}
			}
			return nil, err
		}
		done = append(done, r)
	}
	if err := s.GroupViable(d); err != nil {
		return done, err
	}
	return done, nil
}

func (bd *Binder) add(b BDF, to Stub, checkGroup bool) (*Record, error) {
	s := bd.Sysfs
	unlock, err := bd.State.lock(b)
	if err != nil {
		return nil, err
	}
	defer unlock()
	d, err := s.Device(b)
	if err != nil {
		return nil, err
	}
	if old, err := bd.State.Load(b); err == nil {
		if old.Stub == to && d.Driver == to.Driver() && old.Phase == PhaseBound {
			return old, nil
		}
		// A record that does not match the host is a device left
		// half-way (crash) or moved by someone else: give it back
		// first, do not stack a second record over the first.
		return nil, fmt.Errorf("pci %s: a binding record exists (stub %s, phase %s, driver now %q); run assignable-remove first: %w",
			b, old.Stub, old.Phase, d.Driver, ErrRefused)
	} else if !errors.Is(err, ErrNoRecord) {
		return nil, err
	}

	// 1. Policy before any change: bridges, chipset, deny list, group
	// (AddGroup checks the group as a whole instead).
	check := s.Assignable
	if !checkGroup {
		check = s.assignableAlone
	}
	if err := check(d, to, bd.Deny); err != nil {
		return nil, err
	}
	// 2. The stub must be loaded, or drivers_probe would leave the device
	// on no driver at all.
	if !exists(bd.drvPath(to.Driver(), "")) {
		return nil, fmt.Errorf("pci %s: driver %s is not loaded (modprobe %s): %w", b, to.Driver(), to, ErrRefused)
	}
	// 3. Remember where the device came from, durably, before touching
	// it: after a crash between here and the end, the record is what
	// gives it back.
	rec := &Record{
		BDF: b, Vendor: d.Vendor, DeviceID: d.DeviceID, Stub: to,
		OriginalDriver: d.Driver, OriginalOverride: d.DriverOverride,
		Phase: PhaseBinding, Time: time.Now().UTC(),
	}
	if d.Driver == to.Driver() {
		// Already on the stub (someone else put it there): adopt it,
		// and on remove let the kernel pick a host driver.
		rec.OriginalDriver = ""
	}
	if err := bd.State.Save(rec); err != nil {
		return nil, err
	}
	// 4. driver_override, not new_id: it names this one device, where
	// new_id would grab every device with the same ids.
	if err := s.writeAttr(filepath.Join(s.DevicePath(b), "driver_override"), []byte(to.Driver()+"\n"), bd.Timeout); err != nil {
		return nil, fmt.Errorf("pci %s: set driver_override: %w", b, err)
	}
	// 5. Unbind from the host driver; the override keeps it from coming
	// back on its own.
	if d.Driver != "" && d.Driver != to.Driver() {
		if err := s.writeAttr(bd.drvPath(d.Driver, "unbind"), []byte(b.String()), bd.Timeout); err != nil {
			return nil, fmt.Errorf("pci %s: unbind from %s: %w", b, d.Driver, err)
		}
	}
	// 6. Ask the kernel to probe: with the override only the stub matches.
	if d.Driver != to.Driver() {
		if err := s.writeAttr(s.path("bus", "pci", "drivers_probe"), []byte(b.String()), bd.Timeout); err != nil {
			return nil, fmt.Errorf("pci %s: drivers_probe: %w", b, err)
		}
	}
	// 7. Trust the result, not the writes.
	now, err := linkBase(filepath.Join(s.DevicePath(b), "driver"))
	if err != nil {
		return nil, fmt.Errorf("pci %s: %w", b, err)
	}
	if now != to.Driver() {
		// Not ErrRefused: the host was changed. The record stays.
		return nil, fmt.Errorf("pci %s: after probe the device is on %q, not %s (record kept in %s; assignable-remove undoes)",
			b, orNoneStr(now), to.Driver(), bd.State.Dir)
	}
	rec.Phase = PhaseBound
	if err := bd.State.Save(rec); err != nil {
		return nil, err
	}
	return rec, nil
}

// Remove gives an assignable device back to the driver it had before Add
// (per its record), clears driver_override and deletes the record. Without
// a record it refuses: the original driver is unknown.
func (bd *Binder) Remove(b BDF) (*Record, error) {
	s := bd.Sysfs
	unlock, err := bd.State.lock(b)
	if err != nil {
		return nil, err
	}
	defer unlock()
	rec, err := bd.State.Load(b)
	if err != nil {
		return nil, err
	}
	d, err := s.Device(b)
	if err != nil {
		return nil, err
	}
	// The address may now hold another device (hot-unplug, re-plug):
	// binding it to the old driver would be a guess.
	if d.Vendor != rec.Vendor || d.DeviceID != rec.DeviceID {
		return nil, fmt.Errorf("pci %s: record is for %04x:%04x, device is %04x:%04x: %w",
			b, rec.Vendor, rec.DeviceID, d.Vendor, d.DeviceID, ErrRefused)
	}
	if rec.Owner != "" {
		return nil, fmt.Errorf("pci %s: assigned to %s: %w", b, rec.Owner, ErrRefused)
	}
	// A third driver took the device meanwhile: someone else acted on
	// it; do not fight them.
	if d.Driver != "" && d.Driver != rec.Stub.Driver() && d.Driver != rec.OriginalDriver {
		return nil, fmt.Errorf("pci %s: now on %s, neither %s nor the original %q: %w",
			b, d.Driver, rec.Stub.Driver(), rec.OriginalDriver, ErrRefused)
	}
	// 1. Off the stub (if the crash left it there).
	if d.Driver != "" && d.Driver != rec.OriginalDriver {
		if err := s.writeAttr(bd.drvPath(d.Driver, "unbind"), []byte(b.String()), bd.Timeout); err != nil {
			return nil, fmt.Errorf("pci %s: unbind from %s: %w", b, d.Driver, err)
		}
	}
	// 2. Restore driver_override; "\n" clears it.
	if err := s.writeAttr(filepath.Join(s.DevicePath(b), "driver_override"), []byte(rec.OriginalOverride+"\n"), bd.Timeout); err != nil {
		return nil, fmt.Errorf("pci %s: restore driver_override: %w", b, err)
	}
	// 3. Back to the original driver by name, so a different driver that
	// also matches the ids does not win; with none recorded, let the
	// kernel choose.
	if d.Driver != rec.OriginalDriver || rec.OriginalDriver == "" {
		target := s.path("bus", "pci", "drivers_probe")
		if rec.OriginalDriver != "" {
			target = bd.drvPath(rec.OriginalDriver, "bind")
		}
		if err := s.writeAttr(target, []byte(b.String()), bd.Timeout); err != nil {
			return nil, fmt.Errorf("pci %s: rebind to %q: %w", b, rec.OriginalDriver, err)
		}
	}
	now, err := linkBase(filepath.Join(s.DevicePath(b), "driver"))
	if err != nil {
		return nil, fmt.Errorf("pci %s: %w", b, err)
	}
	if rec.OriginalDriver != "" && now != rec.OriginalDriver {
		return nil, fmt.Errorf("pci %s: after bind the device is on %q, not %s (record kept)",
			b, orNoneStr(now), rec.OriginalDriver)
	}
	if err := bd.State.Remove(b); err != nil {
		return nil, err
	}
	return rec, nil
}

func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

// Recover gives back every device a crash left half-way (records in phase
// binding), for a dmsandbox or broker that starts up. Devices fully bound
// stay quarantined: they were made assignable on purpose. It returns the
// records it undid and the joined errors of those it could not.
func (bd *Binder) Recover() ([]*Record, error) {
	recs, err := bd.State.List()
	var errs []error
	if err != nil {
		errs = append(errs, err)
	}
	var undone []*Record
	for _, r := range recs {
		if r.Phase != PhaseBinding {
			continue
		}
		if _, err := bd.Remove(r.BDF); err != nil {
			errs = append(errs, err)
			continue
		}
		undone = append(undone, r)
	}
	return undone, errors.Join(errs...)
}

func orNoneStr(s string) string {
	if s == "" {
		return "no driver"
	}
	return s
}
