package msiboot

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// MSIXPrefix starts every line msixboot prints. Neither it nor Prefix
// occurs in the other's lines, so the two guests can share a log.
const MSIXPrefix = "MSIXBOOT: "

// MSIXReport is what msixboot said, in the order it runs.
type MSIXReport struct {
	// Lines are its messages, MSIXPrefix removed, in order.
	Lines []string
	// Device is the e1000e's address as the guest saw it ("00:05.0"),
	// BAR0 its BAR 0 register as read (from
	// "e1000e at 00:05.0 bar0 febc0000").
	Device string
	BAR0   uint32
	// Enabled, Entry and Vector are from
	// "msix enabled, entry 0 vector 0x61": table entry Entry programmed
	// with Vector, then MSI-X enabled.
	Enabled bool
	Entry   int
	Vector  int
	// Interrupt and ICR are from "got interrupt, icr 81000000": the
	// handler ran and read those causes from the e1000e's ICR.
	Interrupt bool
	ICR       uint32
	// Done is "done", the last line of every run.
	Done bool
	// Failures are the guest's own "no e1000e", "no msix" (no capability,
	// or its table in a BAR it cannot use), "no interrupt"; Unknown the
	// lines it cannot have printed (another version, noise).
	Failures []string
	Unknown  []string
	// Repeated are messages seen more than once: the guest ran twice
	// (rebooted), or two guests' logs are mixed.
	Repeated []string
}

var (
	e1000eLine  = regexp.MustCompile(`^e1000e at (00:[01][0-9a-f]\.0) bar0 ([0-9a-f]{8})$`)
	enabledLine = regexp.MustCompile(`^msix enabled, entry ([0-9]{1,4}) vector 0x([0-9a-f]{2})$`)
	icrLine     = regexp.MustCompile(`^got interrupt, icr ([0-9a-f]{8})$`)
)

// ParseMSIX collects msixboot's lines from a log, as Parse does
// msiboot's: `xl dmesg` (each as "(dN) MSIXBOOT: ..."; filter one
// domain's lines first when several guests ran it), or the raw
// debug-port output of plain QEMU.
func ParseMSIX(log string) *MSIXReport {
	r := &MSIXReport{}
	r.Lines, r.Repeated = messages(log, MSIXPrefix)
	for _, msg := range r.Lines {
		switch {
		case msg == "done":
			r.Done = true
		case msg == "no e1000e" || msg == "no msix" || msg == "no interrupt":
			r.Failures = append(r.Failures, msg)
		default:
			if !r.parseValue(msg) {
				r.Unknown = append(r.Unknown, msg)
			}
		}
	}
	return r
}

// parseValue takes the lines that carry values; false if msg is none.
// The regular expressions fix the digits' count, so the conversions
// cannot fail.
func (r *MSIXReport) parseValue(msg string) bool {
	if m := e1000eLine.FindStringSubmatch(msg); m != nil {
		bar, _ := strconv.ParseUint(m[2], 16, 32)
		r.Device, r.BAR0 = m[1], uint32(bar)
		return true
	}
	if m := enabledLine.FindStringSubmatch(msg); m != nil {
		e, _ := strconv.Atoi(m[1])
		v, _ := strconv.ParseUint(m[2], 16, 8)
		r.Enabled, r.Entry, r.Vector = true, e, int(v)
		return true
	}
	if m := icrLine.FindStringSubmatch(msg); m != nil {
		icr, _ := strconv.ParseUint(m[1], 16, 32)
		r.Interrupt, r.ICR = true, uint32(icr)
		return true
	}
	return false
}

// Check returns nil if the report is a complete, successful run: the
// e1000e found with BAR 0 assigned, MSI-X enabled with MSIXVector in
// entry MSIXEntry, the interrupt taken with the "other" cause (ICROther)
// in ICR, done, each once and nothing else. Otherwise the error names
// what is missing or wrong, with the lines.
func (r *MSIXReport) Check() error {
	errs := lineErrors(r.Failures, r.Unknown, r.Repeated)
	switch {
	case r.Device == "":
		errs = append(errs, "no e1000e reported")
	case r.BAR0&^0xf == 0:
		errs = append(errs, "the e1000e's BAR 0 is unassigned")
	}
	switch {
	case !r.Enabled:
		errs = append(errs, "MSI-X not enabled")
	case r.Entry != MSIXEntry || r.Vector != MSIXVector:
		errs = append(errs, fmt.Sprintf("entry %d vector %#x, want entry %d vector %#x", r.Entry, r.Vector, MSIXEntry, MSIXVector))
	}
	switch {
	case !r.Interrupt:
		errs = append(errs, "no interrupt taken")
	case r.ICR&ICROther == 0:
		errs = append(errs, fmt.Sprintf("icr %#08x lacks the other cause %#08x", r.ICR, ICROther))
	}
	if !r.Done {
		errs = append(errs, "no \"done\" (the guest did not finish)")
	}
	if len(errs) == 0 {
		return nil
	}
	return errors.New("msixboot: " + strings.Join(errs, "; ") + "; lines: " + fmt.Sprintf("%q", r.Lines))
}
