package pci

import (
	"bytes"
	"fmt"
	"strconv"
)

// Resource flags as the kernel prints them in sysfs `resource`
// (include/linux/ioport.h).
const (
	ioresourceIO       = 0x00000100
	ioresourceMem      = 0x00000200
	ioresourcePrefetch = 0x00002000
	ioresourceMem64    = 0x00100000
	ioresourceDisabled = 0x10000000
	ioresourceUnset    = 0x20000000
)

const (
	numBARs        = 6
	romIndex       = 6
	maxResourceLns = 64 // PCI_NUM_RESOURCES is 17 today; anything far above is garbage
)

// BAR is one assigned base address register (or the expansion ROM, index
// 6) as the host kernel placed it. Unassigned BARs are omitted.
type BAR struct {
	Index    int    `json:"index"`
	Start    uint64 `json:"start"`
	Size     uint64 `json:"size"`
	IO       bool   `json:"io,omitempty"`
	Prefetch bool   `json:"prefetch,omitempty"`
	Mem64    bool   `json:"mem64,omitempty"`
}

// End returns the last address of the BAR.
func (b BAR) End() uint64 { return b.Start + b.Size - 1 }

// ParseResource parses the sysfs `resource` file: one line per resource,
// "0x<start> 0x<end> 0x<flags>". Lines 0..5 are the BARs, line 6 the
// expansion ROM; later lines (SR-IOV BARs, bridge windows) are checked for
// syntax but not returned. A resource with start and end zero, or flagged
// unset or disabled, is unassigned and omitted. Any line that does not
// parse, an end below its start, or fewer than 6 lines is an error.
func ParseResource(data []byte) (bars []BAR, rom *BAR, err error) {
	lines := bytes.Split(bytes.TrimSuffix(data, []byte("\n")), []byte("\n"))
	if len(data) == 0 || len(lines) < numBARs {
		return nil, nil, fmt.Errorf("resource: %d lines, want at least %d: %w", len(lines), numBARs, ErrMalformed)
	}
	if len(lines) > maxResourceLns {
		return nil, nil, fmt.Errorf("resource: %d lines, want at most %d: %w", len(lines), maxResourceLns, ErrMalformed)
	}
	for i, ln := range lines {
		f := bytes.Fields(ln)
		if len(f) != 3 {
			return nil, nil, fmt.Errorf("resource line %d: %d fields, want 3: %w", i, len(f), ErrMalformed)
		}
		var v [3]uint64
		for j := range f {
			if v[j], err = parseHex0x(f[j]); err != nil {
				return nil, nil, fmt.Errorf("resource line %d: %w", i, err)
			}
		}
		start, end, flags := v[0], v[1], v[2]
		if start == 0 && end == 0 || flags&(ioresourceIO|ioresourceMem) == 0 || flags&(ioresourceUnset|ioresourceDisabled) != 0 {
			continue
		}
		if end < start {
			return nil, nil, fmt.Errorf("resource line %d: end %#x below start %#x: %w", i, end, start, ErrMalformed)
		}
		if i > romIndex {
			continue
		}
		b := BAR{
			Index:    i,
			Start:    start,
			Size:     end - start + 1, // end is inclusive; end < start was rejected
			IO:       flags&ioresourceIO != 0,
			Prefetch: flags&ioresourcePrefetch != 0,
			Mem64:    flags&ioresourceMem64 != 0,
		}
		if b.Size == 0 { // start 0, end 2^64-1
			return nil, nil, fmt.Errorf("resource line %d: covers the whole address space: %w", i, ErrMalformed)
		}
		if i == romIndex {
			rom = &b
			continue
		}
		bars = append(bars, b)
	}
	return bars, rom, nil
}

func parseHex0x(f []byte) (uint64, error) {
	if len(f) < 3 || f[0] != '0' || (f[1] != 'x' && f[1] != 'X') || !isHex(string(f[2:])) {
		return 0, fmt.Errorf("%q is not a 0x hex number: %w", f, ErrMalformed)
	}
	v, err := strconv.ParseUint(string(f[2:]), 16, 64)
	if err != nil {
		return 0, fmt.Errorf("%q: %v: %w", f, err, ErrMalformed)
	}
	return v, nil
}
