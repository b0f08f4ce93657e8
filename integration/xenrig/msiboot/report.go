package msiboot

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// Prefix starts every line the boot sector prints.
const Prefix = "MSIBOOT: "

// Report is what the boot sector said, in the order it runs.
type Report struct {
	// Lines are its messages, Prefix removed, in order.
	Lines []string
	// Device is edu's address as the guest saw it ("00:04.0"), BAR0 its
	// BAR 0 (from "edu at 00:04.0 bar0 f3000000").
	Device string
	BAR0   uint32
	// MSIEnabled and Vector are from "msi enabled, vector 0x60".
	MSIEnabled bool
	Vector     int
	// Interrupt and Status are from "got interrupt, status 0000005a":
	// the handler ran and read that interrupt status from edu.
	Interrupt bool
	Status    uint32
	// Done is "done", the last line of every run.
	Done bool
	// Failures are the guest's own "no edu", "no msi", "no interrupt";
	// Unknown the lines it cannot have printed (another version, noise).
	Failures []string
	Unknown  []string
	// Repeated are messages seen more than once: the guest ran twice
	// (rebooted), or two guests' logs are mixed.
	Repeated []string
}

var (
	eduLine = regexp.MustCompile(`^edu at (00:[01][0-9a-f]\.0) bar0 ([0-9a-f]{8})$`)
	msiLine = regexp.MustCompile(`^msi enabled, vector 0x([0-9a-f]{2})$`)
	gotLine = regexp.MustCompile(`^got interrupt, status ([0-9a-f]{8})$`)
)

// Parse collects the boot sector's lines from a log: `xl dmesg` (each as
// "(dN) MSIBOOT: ..."; filter one domain's lines first when several
// guests ran it), or the raw debug-port output of plain QEMU. Anything
// before Prefix on a line is ignored, as are lines without it.
func Parse(log string) *Report {
	r := &Report{}
	r.Lines, r.Repeated = messages(log, Prefix)
	for _, msg := range r.Lines {
		switch {
		case msg == "done":
			r.Done = true
		case msg == "no edu" || msg == "no msi" || msg == "no interrupt":
			r.Failures = append(r.Failures, msg)
		default:
			if !r.parseValue(msg) {
				r.Unknown = append(r.Unknown, msg)
			}
		}
	}
	return r
}

// messages returns what follows prefix on each line of log that has it,
// in order, without trailing CR, NUL or blanks (a serial console's, a
// debug port's), and the messages seen before.
func messages(log, prefix string) (msgs, repeated []string) {
	seen := map[string]bool{}
	for _, line := range strings.Split(log, "\n") {
		_, msg, ok := strings.Cut(line, prefix)
		if !ok {
			continue
		}
		msg = strings.TrimRight(msg, "\r\x00 ")
		msgs = append(msgs, msg)
		if seen[msg] {
			repeated = append(repeated, msg)
		}
		seen[msg] = true
	}
	return msgs, repeated
}

// parseValue takes the lines that carry values; false if msg is none.
func (r *Report) parseValue(msg string) bool {
	if m := eduLine.FindStringSubmatch(msg); m != nil {
		bar, _ := strconv.ParseUint(m[2], 16, 32) // 8 hex digits: cannot fail
		r.Device, r.BAR0 = m[1], uint32(bar)
		return true
	}
	if m := msiLine.FindStringSubmatch(msg); m != nil {
		v, _ := strconv.ParseUint(m[1], 16, 8)
		r.MSIEnabled, r.Vector = true, int(v)
		return true
	}
	if m := gotLine.FindStringSubmatch(msg); m != nil {
		st, _ := strconv.ParseUint(m[1], 16, 32)
		r.Interrupt, r.Status = true, uint32(st)
		return true
	}
	return false
}

// lineErrors are what both guests' Check say of their lines: failures
// the guest reported, lines nobody knows, lines seen twice.
func lineErrors(failures, unknown, repeated []string) []string {
	var errs []string
	if len(failures) > 0 {
		errs = append(errs, fmt.Sprintf("guest reported %q", failures))
	}
	if len(unknown) > 0 {
		errs = append(errs, fmt.Sprintf("unexpected lines %q", unknown))
	}
	if len(repeated) > 0 {
		errs = append(errs, fmt.Sprintf("lines repeated %q (did the guest run twice?)", repeated))
	}
	return errs
}

// Check returns nil if the report is a complete, successful run: edu
// found, MSI enabled with Vector, the interrupt taken with RaiseStatus,
// done, each once and nothing else. Otherwise the error names what is
// missing or wrong, with the lines.
func (r *Report) Check() error {
	errs := lineErrors(r.Failures, r.Unknown, r.Repeated)
	switch {
	case r.Device == "":
		errs = append(errs, "no edu device reported")
	case r.BAR0 == 0:
		errs = append(errs, "edu's BAR 0 is unassigned")
	}
	if !r.MSIEnabled {
		errs = append(errs, "MSI not enabled")
	} else if r.Vector != Vector {
		errs = append(errs, fmt.Sprintf("vector %#x, want %#x", r.Vector, Vector))
	}
	if !r.Interrupt {
		errs = append(errs, "no interrupt taken")
	} else if r.Status != RaiseStatus {
		errs = append(errs, fmt.Sprintf("interrupt status %#x, want %#x", r.Status, RaiseStatus))
	}
	if !r.Done {
		errs = append(errs, "no \"done\" (the guest did not finish)")
	}
	if len(errs) == 0 {
		return nil
	}
	return errors.New("msiboot: " + strings.Join(errs, "; ") + "; lines: " + fmt.Sprintf("%q", r.Lines))
}
