package pci

import (
	"errors"
	"strings"
)

// Summary is a device with the host's verdicts on it: what `dmsandbox pci
// ls` and `pci show` print.
type Summary struct {
	*Device
	ClassName string `json:"class_name"`
	// Assignable to the stub asked about; WhyNot says why not.
	Assignable bool   `json:"assignable"`
	Stub       Stub   `json:"stub"`
	WhyNot     string `json:"why_not,omitempty"`
	// Warnings do not refuse but deserve a look (an interface that is up).
	Warnings []string `json:"warnings,omitempty"`
	// Reset is the reset plan: every method and whether it applies.
	Reset []Verdict `json:"reset"`
	// GroupMembers are the devices in the same IOMMU group (itself included).
	GroupMembers []BDF `json:"iommu_group_members,omitempty"`
	// Record is the binding record when dmsandbox made the device assignable.
	Record *Record `json:"record,omitempty"`
}

// Summarize computes the verdicts for d. Errors reading the group or the
// record end up in WhyNot rather than failing the listing.
func (s *Sysfs) Summarize(d *Device, to Stub, deny DenyList, st *State) *Summary {
	sum := &Summary{Device: d, ClassName: d.ClassName(), Stub: to}
	var owner func(BDF) (string, bool)
	if st != nil {
		if r, err := st.Load(d.BDF); err == nil {
			sum.Record = r
		}
		owner = st.Owner
	}
	if err := s.Assignable(d, to, deny); err != nil {
		sum.WhyNot = Reason(err, d.BDF)
	} else {
		sum.Assignable = true
		sum.Warnings, _ = s.InUse(d)
	}
	opt := ResetOptions{Owner: owner}
	if sum.Record != nil {
		opt.Domain = sum.Record.Owner
	}
	sum.Reset = s.ResetPlan(d, opt)
	if d.IOMMUGroup >= 0 {
		sum.GroupMembers, _ = s.IOMMUGroupDevices(d.IOMMUGroup)
	}
	return sum
}

// ResetMethodsApplicable lists the methods of the plan that apply.
func (sum *Summary) ResetMethodsApplicable() []string {
	var out []string
	for _, v := range sum.Reset {
		if v.Why == "" {
			out = append(out, v.Method)
		}
	}
	return out
}

// Reason strips an error of this package down to its reason: without the
// "pci BDF: " prefix and the sentinel suffix, for tables.
func Reason(err error, b BDF) string {
	msg := err.Error()
	msg = strings.TrimPrefix(msg, "pci "+b.String()+": ")
	for _, s := range []error{ErrRefused, ErrNoReset, ErrMalformed, ErrNoDevice, ErrTimeout} {
		if errors.Is(err, s) {
			msg = strings.TrimSuffix(msg, ": "+s.Error())
		}
	}
	return msg
}

// Owner is a ResetOptions.Owner backed by the records: a device is known
// when dmsandbox holds a record for it.
func (st State) Owner(b BDF) (string, bool) {
	r, err := st.Load(b)
	if err != nil {
		return "", false
	}
	return r.Owner, true
}

// SetOwner records that domain owner holds b ("" when it gives it back),
// so that a bus reset of a neighbour knows b is this domain's and not
// another VMM's. It holds the device's lock, so it never races an
// assignable-add or -remove of the same device; a record that is missing
// is an ErrNoRecord-wrapping error.
func (st State) SetOwner(b BDF, owner string) error {
	unlock, err := st.lock(b)
	if err != nil {
		return err
	}
	defer unlock()
	r, err := st.Load(b)
	if err != nil {
		return err
	}
	if r.Owner == owner {
		return nil
	}
	r.Owner = owner
	return st.Save(r)
}
