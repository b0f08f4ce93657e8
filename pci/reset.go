package pci

import (
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Reset methods, named as the kernel names them in `reset_method`, in the
// order dmsandbox tries them: a function-level reset touches only the
// device; a PM reset only the device but not every device resets on it; a
// secondary bus reset resets everything behind the bridge.
const (
	MethodFLR   = "flr"    // PCIe Device Control "Initiate FLR"
	MethodAFFLR = "af_flr" // Advanced Features FLR (conventional PCI)
	MethodPM    = "pm"     // D0 → D3hot → D0
	MethodBus   = "bus"    // secondary bus reset of the parent bridge
)

// Routes a reset can take.
const (
	ViaKernel = "kernel" // sysfs reset_method + reset: the kernel saves and restores state
	ViaConfig = "config" // config-space writes by dmsandbox, header saved and restored
)

// ResetOptions says who holds what, which decides whether a bus reset may
// hit the device's neighbours.
type ResetOptions struct {
	// Timeout bounds each kernel write and each wait for the device to
	// come back; 0 means DefaultTimeout.
	Timeout time.Duration
	// Domain is the owner of the device being reset ("" for none).
	Domain string
	// Owner tells who holds another device: known is false when dmsandbox
	// has no record of it. Nil means no records at all.
	Owner func(BDF) (owner string, known bool)
	// Sleep waits between the steps of a config-space reset; nil means
	// time.Sleep (tests pass a no-op so they do not wait).
	Sleep func(time.Duration)
}

// Verdict is one method's applicability: Why is empty when it applies.
type Verdict struct {
	Method string `json:"method"`
	Via    string `json:"via,omitempty"`
	Why    string `json:"why,omitempty"`
}

// ResetResult reports the method used and why earlier ones were passed.
type ResetResult struct {
	BDF      BDF       `json:"bdf"`
	Method   string    `json:"method"`
	Via      string    `json:"via"`
	Verdicts []Verdict `json:"verdicts"`
}

// ResetPlan decides, without touching the device, which method applies
// first and why each one does or does not.
func (s *Sysfs) ResetPlan(d *Device, opt ResetOptions) []Verdict {
	modern := s.kernelHasResetMethod()
	var out []Verdict
	// kernelRoute picks the route for a method the device supports.
	kernelRoute := func(m string) (via, why string) {
		switch {
		case d.HasResetMethod:
			for _, k := range d.ResetMethods {
				if k == m {
					return ViaKernel, ""
				}
			}
			return "", fmt.Sprintf("the kernel does not offer %s for this device (reset_method: %s)", m, listOrNone(d.ResetMethods))
		case modern:
			// Since 5.15 the attribute is hidden when the kernel knows
			// no method: it has a quirk against what config says.
			return "", "the kernel offers no reset for this device (no reset_method attribute)"
		default:
			return ViaConfig, ""
		}
	}

	// FLR, PCIe then AF.
	switch {
	case d.Caps.PCIe != nil && d.Caps.PCIe.FLR:
		via, why := kernelRoute(MethodFLR)
		out = append(out, Verdict{Method: MethodFLR, Via: via, Why: why})
	case d.Caps.AF != nil && d.Caps.AF.FLR:
		via, why := kernelRoute(MethodAFFLR)
		out = append(out, Verdict{Method: MethodAFFLR, Via: via, Why: why})
	default:
		out = append(out, Verdict{Method: MethodFLR, Why: "no FLR capability (neither PCIe DevCap FLR nor AF FLR)"})
	}

	// PM. The current D-state does not matter: the kernel wakes the
	// device (runtime PM) before its reset, and from D3hot the config
	// route's transition to D0 is the reset itself.
	switch {
	case d.Caps.PM == nil:
		out = append(out, Verdict{Method: MethodPM, Why: "no PM capability"})
	case d.Caps.PM.NoSoftReset:
		out = append(out, Verdict{Method: MethodPM, Why: "PM No_Soft_Reset is set: D3hot→D0 keeps the device's state"})
	default:
		via, why := kernelRoute(MethodPM)
		out = append(out, Verdict{Method: MethodPM, Via: via, Why: why})
	}

	// Secondary bus reset of the parent bridge.
	out = append(out, s.busVerdict(d, opt, modern))
	return out
}

func (s *Sysfs) busVerdict(d *Device, opt ResetOptions, modern bool) Verdict {
	v := Verdict{Method: MethodBus}
	if d.Bridge {
		v.Why = "the device is a bridge: a reset would hit every device below it"
		return v
	}
	if d.Parent == nil {
		v.Why = "on a root bus: there is no bridge whose secondary bus could be reset"
		return v
	}
	behind, err := s.Behind(*d.Parent)
	if err != nil {
		v.Why = fmt.Sprintf("cannot list devices behind %s: %v", d.Parent, err)
		return v
	}
	var busy []string
	for _, o := range behind {
		if o.BDF == d.BDF {
			continue
		}
		if why := siblingBusy(o, opt); why != "" {
			busy = append(busy, o.BDF.String()+" "+why)
		}
	}
	if len(busy) > 0 {
		v.Why = fmt.Sprintf("resetting %s's secondary bus would also reset %s", d.Parent, strings.Join(busy, "; "))
		return v
	}
	switch {
	case len(behind) > 1:
		// The kernel does a bus reset only for a device alone on its
		// bus (pci_parent_bus_reset). Its reset_method list cannot be
		// trusted here: Linux computes it when it first finds the
		// device, so the first device scanned on a shared bus lists
		// "bus" (it was alone then) and selecting it later fails with
		// EINVAL. The neighbours decide: every one of them is idle or
		// ours, so dmsandbox resets the bridge itself and restores
		// each device's header.
		v.Via = ViaConfig
	case d.HasResetMethod && contains(d.ResetMethods, MethodBus):
		v.Via = ViaKernel
	case modern:
		v.Why = fmt.Sprintf("the kernel does not offer a bus reset for this device (reset_method: %s): it is quirked against one", listOrNone(d.ResetMethods))
	default:
		v.Via = ViaConfig
	}
	return v
}

// siblingBusy says why another device behind the same bridge may not be
// reset along with ours, or "" when it may: it has no driver, or it is on
// a quarantine driver and dmsandbox knows it as idle or the same domain's.
func siblingBusy(o *Device, opt ResetOptions) string {
	if o.Bridge && (o.Driver == "" || o.Driver == "pcieport") {
		return "" // a bridge port: the devices below it are checked themselves
	}
	if o.Driver == "" {
		return ""
	}
	if !quarantineDrivers[o.Driver] {
		return fmt.Sprintf("(in use by host driver %s)", o.Driver)
	}
	owner, known := "", false
	if opt.Owner != nil {
		owner, known = opt.Owner(o.BDF)
	}
	switch {
	case !known:
		return fmt.Sprintf("(on %s without a dmsandbox record: another VMM may use it)", o.Driver)
	case owner == "" || owner == opt.Domain:
		return ""
	default:
		return fmt.Sprintf("(assigned to %s)", owner)
	}
}

// Reset resets the device with the first method that applies. The error,
// when none does, wraps ErrNoReset and lists every method with its reason.
func (s *Sysfs) Reset(b BDF, opt ResetOptions) (*ResetResult, error) {
	d, err := s.Device(b)
	if err != nil {
		return nil, err
	}
	if opt.Timeout <= 0 {
		opt.Timeout = DefaultTimeout
	}
	if opt.Sleep == nil {
		opt.Sleep = time.Sleep
	}
	// A device a host driver is using is not ours to reset: the driver
	// would find its device changed under it.
	if d.Driver != "" && !quarantineDrivers[d.Driver] {
		return nil, fmt.Errorf("pci %s: in use by host driver %s; make it assignable first: %w", b, d.Driver, ErrRefused)
	}
	// Any reset of an SR-IOV physical function clears VF Enable: its
	// virtual functions vanish under whoever uses them.
	if n := len(d.VirtFns); n > 0 {
		return nil, fmt.Errorf("pci %s: SR-IOV physical function with %d virtual functions enabled: a reset would remove them: %w", b, n, ErrRefused)
	}
	res := &ResetResult{BDF: b, Verdicts: s.ResetPlan(d, opt)}
	for _, v := range res.Verdicts {
		if v.Why != "" {
			continue
		}
		res.Method, res.Via = v.Method, v.Via
		if v.Via == ViaKernel {
			err = s.kernelReset(d, v.Method, opt)
			// A bus reset the kernel listed but now refuses to select
			// (EINVAL, "Unsupported reset method"): the list is stale,
			// a device appeared on the bus after it was computed. The
			// neighbours were checked above, so the config-space route
			// is as safe as it would have been from the start. Nothing
			// was changed: a refused selection leaves reset_method as
			// it was. FLR and PM are not retried this way: the kernel
			// refusing them is a quirk dmsandbox does not go around.
			if v.Method == MethodBus && errors.Is(err, errSelectRefused) {
				res.Via = ViaConfig
				err = s.configReset(d, v.Method, opt)
			}
		} else {
			err = s.configReset(d, v.Method, opt)
		}
		if err != nil {
			return res, fmt.Errorf("pci %s: %s reset via %s: %w", b, v.Method, v.Via, err)
		}
		return res, nil
	}
	// Old kernels (< 5.15) offer `reset` without a choice of method.
	if !d.HasResetMethod && d.HasReset && !s.kernelHasResetMethod() {
		res.Method, res.Via = "kernel-default", ViaKernel
		if err := s.writeAttr(filepath.Join(s.DevicePath(b), "reset"), []byte("1"), opt.Timeout); err != nil {
			return res, fmt.Errorf("pci %s: reset: %w", b, err)
		}
		return res, nil
	}
	var why []string
	for _, v := range res.Verdicts {
		why = append(why, v.Method+": "+v.Why)
	}
	return res, fmt.Errorf("pci %s: %w: %s", b, ErrNoReset, strings.Join(why, "; "))
}

// errSelectRefused: the kernel refused to select a method its own
// reset_method listed (EINVAL): the list is stale.
var errSelectRefused = errors.New("the kernel refuses the method it listed")

// kernelReset selects one method in reset_method, triggers `reset`, and
// puts the kernel's list back: reset_method is shared state, and vfio-pci
// uses it on its own resets.
func (s *Sysfs) kernelReset(d *Device, method string, opt ResetOptions) (err error) {
	dir := s.DevicePath(d.BDF)
	if err := s.writeAttr(filepath.Join(dir, "reset_method"), []byte(method), opt.Timeout); err != nil {
		if errors.Is(err, syscall.EINVAL) {
			return fmt.Errorf("select %s: %w: %w", method, errSelectRefused, err)
		}
		return fmt.Errorf("select %s: %w", method, err)
	}
	defer func() {
		restore := strings.Join(d.ResetMethods, " ")
		if restore == "" {
			restore = "default"
		}
		if rerr := s.writeAttr(filepath.Join(dir, "reset_method"), []byte(restore), opt.Timeout); rerr != nil && err == nil {
			err = fmt.Errorf("restore reset_method %q: %w", restore, rerr)
		}
	}()
	return s.writeAttr(filepath.Join(dir, "reset"), []byte("1"), opt.Timeout)
}

// kernelHasResetMethod: whether the running kernel has the reset_method
// attribute (Linux ≥ 5.15). If any device shows it, yes; otherwise the
// kernel release decides. An unreadable release counts as modern, which
// means trusting the kernel over config space (fewer raw writes).
func (s *Sysfs) kernelHasResetMethod() bool {
	if bdfs, err := s.List(); err == nil {
		for _, b := range bdfs {
			if exists(filepath.Join(s.DevicePath(b), "reset_method")) {
				return true
			}
		}
	}
	rel, err := readBounded(filepath.Join(s.Root, "proc", "sys", "kernel", "osrelease"), maxAttr)
	if err != nil {
		return true
	}
	major, minor, ok := parseRelease(string(rel))
	return !ok || major > 5 || major == 5 && minor >= 15
}

func parseRelease(r string) (major, minor int, ok bool) {
	parts := strings.SplitN(strings.TrimSpace(r), ".", 3)
	if len(parts) < 2 {
		return 0, 0, false
	}
	minorTxt := parts[1]
	if i := strings.IndexFunc(minorTxt, func(c rune) bool { return c < '0' || c > '9' }); i >= 0 {
		minorTxt = minorTxt[:i]
	}
	var err1, err2 error
	major, err1 = strconv.Atoi(parts[0])
	minor, err2 = strconv.Atoi(minorTxt)
	return major, minor, errors.Join(err1, err2) == nil
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

func listOrNone(l []string) string {
	if len(l) == 0 {
		return "none"
	}
	return strings.Join(l, " ")
}
