package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/dmsandbox/dmsandbox/pci"
)

// The pci command: the host's view of PCI devices, and making them
// assignable (quarantined on a stub driver) and back. See docs/pci.md.
func init() {
	register(command{Name: "pci", Summary: "list, show, make assignable and reset PCI devices", Run: pciCmd})
}

const pciUsage = `usage: dmsandbox pci SUBCOMMAND [FLAGS]
  ls                          every device: ids, class, driver, IOMMU group, reset methods, assignable or why not
  show BDF                    one device: BARs, capabilities, IRQ, group, reset plan, binding record
  assignable-add BDF          hand the device to a stub driver (--to vfio-pci|xen-pciback) and quarantine it;
                              --group: every member of its IOMMU group (all or none)
  assignable-remove BDF       give it back to the driver it had before
  assignable-list             devices dmsandbox made assignable (its records)
  recover                     give back devices a crash left half-way (records in phase binding)
  reset BDF                   reset with the first method that applies (FLR, PM, secondary bus)
flags (every subcommand): --json --sysfs-root DIR (default /) --state-dir DIR (default ` + pci.DefaultStateDir + `)
  --to vfio-pci|xen-pciback (ls, show, assignable-add)  --deny-file FILE (default ` + defaultDenyFile + `)
  --timeout DURATION (assignable-*, reset)  --domain NAME (reset: the domain the device belongs to)
exit codes: 0 done; 1 failed (device missing, kernel error, timeout); 2 usage; 3 deny file invalid;
  4 refused, nothing done (bridge, deny list, group not viable, no reset method applies, busy neighbours)`

// defaultDenyFile lists devices never to give away; absent means none.
const defaultDenyFile = "/etc/dmsandbox/pci-deny"

type pciFlags struct {
	json     bool
	root     string
	stateDir string
	to       string
	denyFile string
	timeout  time.Duration
	domain   string
	group    bool
}

func pciCmd(args []string) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprintln(os.Stderr, pciUsage)
		if len(args) == 0 {
			return ExitUsage
		}
		return ExitOK
	}
	sub, args := args[0], args[1:]
	fl := pciFlags{}
	fset := flag.NewFlagSet("pci "+sub, flag.ContinueOnError)
	fset.SetOutput(io.Discard)
	fset.BoolVar(&fl.json, "json", false, "JSON output")
	fset.StringVar(&fl.root, "sysfs-root", "/", "root under which sys/bus/pci lives")
	fset.StringVar(&fl.stateDir, "state-dir", pci.DefaultStateDir, "binding records")
	fset.StringVar(&fl.to, "to", string(pci.StubVFIO), "stub driver: vfio-pci or xen-pciback")
	fset.StringVar(&fl.denyFile, "deny-file", defaultDenyFile, "devices never to make assignable")
	fset.DurationVar(&fl.timeout, "timeout", pci.DefaultTimeout, "bound on each kernel write")
	fset.StringVar(&fl.domain, "domain", "", "reset: the domain owning the device")
	fset.BoolVar(&fl.group, "group", false, "assignable-add: every member of the device's IOMMU group")
	// A BDF may come before or after the flags.
	var pos []string
	for len(args) > 0 {
		if err := fset.Parse(args); err != nil {
			return pciUsageErr(sub, err)
		}
		if fset.NArg() == 0 {
			break
		}
		pos = append(pos, fset.Arg(0))
		args = fset.Args()[1:]
	}
	stub, err := pci.ParseStub(fl.to)
	if err != nil {
		return pciUsageErr(sub, err)
	}
	s := pci.NewSysfs(fl.root)
	st := pci.State{Dir: fl.stateDir}

	needBDF := func() (pci.BDF, bool) {
		if len(pos) != 1 {
			pciUsageErr(sub, fmt.Errorf("want one device address, got %d arguments", len(pos)))
			return pci.BDF{}, false
		}
		b, err := pci.ParseBDF(pos[0])
		if err != nil {
			pciUsageErr(sub, err)
			return pci.BDF{}, false
		}
		return b, true
	}
	switch sub {
	case "ls", "assignable-list", "recover":
		if len(pos) != 0 {
			return pciUsageErr(sub, fmt.Errorf("unexpected argument %q", pos[0]))
		}
	}
	switch sub {
	case "ls":
		deny, code := pciDeny(fl)
		if code != ExitOK {
			return code
		}
		return pciLs(s, stub, deny, st, fl)
	case "show":
		b, ok := needBDF()
		if !ok {
			return ExitUsage
		}
		deny, code := pciDeny(fl)
		if code != ExitOK {
			return code
		}
		return pciShow(s, b, stub, deny, st, fl)
	case "assignable-add":
		b, ok := needBDF()
		if !ok {
			return ExitUsage
		}
		deny, code := pciDeny(fl)
		if code != ExitOK {
			return code
		}
		bd := &pci.Binder{Sysfs: s, State: st, Deny: deny, Timeout: fl.timeout}
		var recs []*pci.Record
		if fl.group {
			recs, err = bd.AddGroup(b, stub)
		} else {
			var rec *pci.Record
			if rec, err = bd.Add(b, stub); err == nil {
				recs = []*pci.Record{rec}
			}
		}
		if err != nil {
			return pciFail(sub, err)
		}
		if fl.json {
			if fl.group {
				return pciJSON(recs)
			}
			return pciJSON(recs[0])
		}
		for _, rec := range recs {
			fmt.Printf("%s: %s -> %s (quarantined; record in %s)\n", rec.BDF, orNone(rec.OriginalDriver), rec.Stub.Driver(), fl.stateDir)
		}
		return ExitOK
	case "assignable-remove":
		b, ok := needBDF()
		if !ok {
			return ExitUsage
		}
		bd := &pci.Binder{Sysfs: s, State: st, Timeout: fl.timeout}
		rec, err := bd.Remove(b)
		if err != nil {
			return pciFail(sub, err)
		}
		if fl.json {
			return pciJSON(rec)
		}
		fmt.Printf("%s: %s -> %s\n", b, rec.Stub.Driver(), orNone(rec.OriginalDriver))
		return ExitOK
	case "recover":
		recs, err := (&pci.Binder{Sysfs: s, State: st, Timeout: fl.timeout}).Recover()
		if fl.json {
			if recs == nil {
				recs = []*pci.Record{}
			}
			pciJSON(recs)
		} else {
			for _, r := range recs {
				fmt.Printf("%s: given back to %s (left half-way by a crash)\n", r.BDF, orNone(r.OriginalDriver))
			}
		}
		if err != nil {
			return pciFail(sub, err)
		}
		return ExitOK
	case "assignable-list":
		recs, err := st.List()
		if err != nil {
			return pciFail(sub, err)
		}
		if fl.json {
			if recs == nil {
				recs = []*pci.Record{}
			}
			return pciJSON(recs)
		}
		w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(w, "BDF\tSTUB\tORIGINAL\tPHASE\tOWNER\tSINCE")
		for _, r := range recs {
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", r.BDF, r.Stub, orNone(r.OriginalDriver), r.Phase, orDash(r.Owner), r.Time.Format(time.RFC3339))
		}
		w.Flush()
		return ExitOK
	case "reset":
		b, ok := needBDF()
		if !ok {
			return ExitUsage
		}
		// The device's own domain, when not given, is its record's owner:
		// neighbours of the same domain may then share a bus reset.
		domain := fl.domain
		if rec, err := st.Load(b); domain == "" && err == nil {
			domain = rec.Owner
		}
		opt := pci.ResetOptions{Timeout: fl.timeout, Domain: domain, Owner: st.Owner}
		res, err := s.Reset(b, opt)
		if err != nil {
			if fl.json && res != nil {
				pciJSON(res)
			}
			return pciFail(sub, err)
		}
		if fl.json {
			return pciJSON(res)
		}
		fmt.Printf("%s: reset by %s (via %s)\n", b, res.Method, res.Via)
		return ExitOK
	}
	return pciUsageErr(sub, errors.New("unknown subcommand"))
}

func pciUsageErr(sub string, err error) int {
	fmt.Fprintf(os.Stderr, "dmsandbox pci %s: %v\n%s\n", sub, err, pciUsage)
	return ExitUsage
}

// pciFail prints err and maps it to the documented exit code.
func pciFail(sub string, err error) int {
	fmt.Fprintf(os.Stderr, "dmsandbox pci %s: %v\n", sub, err)
	if errors.Is(err, pci.ErrRefused) || errors.Is(err, pci.ErrNoReset) {
		return ExitConflict
	}
	return ExitFailure
}

func pciDeny(fl pciFlags) (pci.DenyList, int) {
	data, err := os.ReadFile(fl.denyFile)
	if errors.Is(err, fs.ErrNotExist) && fl.denyFile == defaultDenyFile {
		return nil, ExitOK
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "dmsandbox pci: deny file: %v\n", err)
		return nil, ExitConfig
	}
	deny, err := pci.ParseDenyList(data)
	if err != nil {
		fmt.Fprintf(os.Stderr, "dmsandbox pci: %s: %v\n", fl.denyFile, err)
		return nil, ExitConfig
	}
	return deny, ExitOK
}

func pciLs(s *pci.Sysfs, stub pci.Stub, deny pci.DenyList, st pci.State, fl pciFlags) int {
	devs, err := s.Devices()
	sums := make([]*pci.Summary, 0, len(devs))
	for _, d := range devs {
		sums = append(sums, s.Summarize(d, stub, deny, &st))
	}
	if fl.json {
		if code := pciJSON(sums); code != ExitOK {
			return code
		}
	} else {
		w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintf(w, "BDF\tID\tCLASS\tDRIVER\tGROUP\tRESET\tASSIGNABLE (%s)\n", stub)
		for _, x := range sums {
			group := "-"
			if x.IOMMUGroup >= 0 {
				group = fmt.Sprint(x.IOMMUGroup)
			}
			assign := "yes"
			if !x.Assignable {
				assign = "no: " + x.WhyNot
			} else if len(x.Warnings) > 0 {
				assign = "yes, but " + strings.Join(x.Warnings, "; ")
			}
			fmt.Fprintf(w, "%s\t%04x:%04x\t%s\t%s\t%s\t%s\t%s\n", x.BDF, x.Vendor, x.DeviceID, x.ClassName,
				orDash(x.Driver), group, orDash(strings.Join(x.ResetMethodsApplicable(), ",")), assign)
		}
		w.Flush()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "dmsandbox pci ls: %v\n", err)
		return ExitFailure
	}
	return ExitOK
}

func pciShow(s *pci.Sysfs, b pci.BDF, stub pci.Stub, deny pci.DenyList, st pci.State, fl pciFlags) int {
	d, err := s.Device(b)
	if err != nil {
		return pciFail("show", err)
	}
	x := s.Summarize(d, stub, deny, &st)
	if fl.json {
		return pciJSON(x)
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	defer w.Flush()
	fmt.Fprintf(w, "device\t%s  %04x:%04x (subsystem %04x:%04x) rev %02x\n", d.BDF, d.Vendor, d.DeviceID, d.SubVendor, d.SubDevice, d.Revision)
	fmt.Fprintf(w, "class\t%06x %s, header type %d%s\n", d.Class, x.ClassName, d.HeaderType, map[bool]string{true: ", multi-function"}[d.MultiFunction])
	fmt.Fprintf(w, "driver\t%s%s\n", orNone(d.Driver), map[bool]string{true: " (driver_override " + d.DriverOverride + ")"}[d.DriverOverride != ""])
	fmt.Fprintf(w, "irq\t%d\n", d.IRQ)
	if d.IOMMUGroup >= 0 {
		fmt.Fprintf(w, "iommu group\t%d: %s\n", d.IOMMUGroup, joinBDFs(x.GroupMembers))
	} else {
		fmt.Fprintf(w, "iommu group\tnone\n")
	}
	if d.Parent != nil {
		fmt.Fprintf(w, "parent bridge\t%s\n", d.Parent)
	} else {
		fmt.Fprintf(w, "parent bridge\tnone (root bus)\n")
	}
	if d.Bridge {
		fmt.Fprintf(w, "buses\tsecondary %02x, subordinate %02x\n", d.SecondaryBus, d.SubordinateBus)
	}
	if d.PhysFn != nil {
		fmt.Fprintf(w, "sr-iov\tvirtual function of %s\n", d.PhysFn)
	}
	if len(d.VirtFns) > 0 {
		fmt.Fprintf(w, "sr-iov\tvirtual functions %s\n", joinBDFs(d.VirtFns))
	}
	for _, bar := range d.BARs {
		fmt.Fprintf(w, "BAR %d\t%s\n", bar.Index, barText(bar))
	}
	if d.ROM != nil {
		fmt.Fprintf(w, "ROM\t%s\n", barText(*d.ROM))
	}
	var caps []string
	for _, c := range d.Caps.List {
		caps = append(caps, fmt.Sprintf("%s@%#x", c.Name(), c.Offset))
	}
	fmt.Fprintf(w, "capabilities\t%s\n", orNone(strings.Join(caps, " ")))
	if m := d.Caps.MSI; m != nil {
		fmt.Fprintf(w, "  msi\t%d vectors, 64-bit %v, maskable %v, enabled %v\n", m.Vectors, m.Addr64, m.Maskable, m.Enabled)
	}
	if m := d.Caps.MSIX; m != nil {
		fmt.Fprintf(w, "  msi-x\t%d vectors, table BAR %d+%#x (%d bytes), PBA BAR %d+%#x, enabled %v\n",
			m.TableSize, m.TableBAR, m.TableOffset, m.TableBytes(), m.PBABAR, m.PBAOffset, m.Enabled)
	}
	if p := d.Caps.PM; p != nil {
		fmt.Fprintf(w, "  pm\tD%d, No_Soft_Reset %v\n", p.PowerState, p.NoSoftReset)
	}
	if p := d.Caps.PCIe; p != nil {
		fmt.Fprintf(w, "  pcie\tv%d, port type %d, FLR %v\n", p.Version, p.Type, p.FLR)
	}
	if a := d.Caps.AF; a != nil {
		fmt.Fprintf(w, "  af\tFLR %v, TP %v\n", a.FLR, a.TP)
	}
	fmt.Fprintf(w, "kernel reset_method\t%s\n", map[bool]string{true: orNone(strings.Join(d.ResetMethods, " ")), false: "(attribute absent)"}[d.HasResetMethod])
	for _, v := range x.Reset {
		if v.Why == "" {
			fmt.Fprintf(w, "reset %s\tapplies (via %s)\n", v.Method, v.Via)
		} else {
			fmt.Fprintf(w, "reset %s\tno: %s\n", v.Method, v.Why)
		}
	}
	if x.Assignable {
		fmt.Fprintf(w, "assignable (%s)\tyes\n", stub)
		for _, warn := range x.Warnings {
			fmt.Fprintf(w, "warning\t%s\n", warn)
		}
	} else {
		fmt.Fprintf(w, "assignable (%s)\tno: %s\n", stub, x.WhyNot)
	}
	if r := x.Record; r != nil {
		fmt.Fprintf(w, "record\t%s since %s, original driver %s, owner %s\n", r.Phase, r.Time.Format(time.RFC3339), orNone(r.OriginalDriver), orDash(r.Owner))
	}
	return ExitOK
}

func barText(b pci.BAR) string {
	kind := "mem32"
	switch {
	case b.IO:
		kind = "io"
	case b.Mem64:
		kind = "mem64"
	}
	if b.Prefetch {
		kind += " prefetch"
	}
	return fmt.Sprintf("%#x-%#x (%d bytes) %s", b.Start, b.End(), b.Size, kind)
}

func joinBDFs(l []pci.BDF) string {
	var s []string
	for _, b := range l {
		s = append(s, b.String())
	}
	return strings.Join(s, " ")
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func pciJSON(v any) int {
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		fmt.Fprintf(os.Stderr, "dmsandbox pci: %v\n", err)
		return ExitFailure
	}
	return ExitOK
}
