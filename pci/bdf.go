package pci

import (
	"fmt"
	"strconv"
)

// BDF is a PCI address: domain (segment), bus, device (slot), function.
// It is the only way code in this project names a device. The zero value is
// 0000:00:00.0, a valid address; use ParseBDF to get one from text.
type BDF struct {
	Domain uint16
	Bus    uint8
	Dev    uint8 // 0..31
	Fn     uint8 // 0..7
}

// ParseBDF parses the canonical sysfs form "DDDD:BB:DD.F" (lower or upper
// case hex). The short form "BB:DD.F" is accepted with domain 0, as lspci
// and xl print it. Anything else — extra characters, signs, out-of-range
// slot or function — is rejected: a BDF ends up in sysfs paths, so it
// must never carry a "/" or "..".
func ParseBDF(s string) (BDF, error) {
	bad := func(why string) (BDF, error) {
		return BDF{}, fmt.Errorf("pci: bad address %q: %s: %w", s, why, ErrMalformed)
	}
	var dom, bus, dev, fn string
	switch len(s) {
	case 12: // 0000:00:00.0
		if s[4] != ':' || s[7] != ':' || s[10] != '.' {
			return bad("want DDDD:BB:DD.F")
		}
		dom, bus, dev, fn = s[0:4], s[5:7], s[8:10], s[11:12]
	case 7: // 00:00.0
		if s[2] != ':' || s[5] != '.' {
			return bad("want DDDD:BB:DD.F")
		}
		dom, bus, dev, fn = "0000", s[0:2], s[3:5], s[6:7]
	default:
		return bad("want DDDD:BB:DD.F")
	}
	var b BDF
	for _, f := range []struct {
		txt  string
		max  uint64
		dst  func(uint64)
		name string
	}{
		{dom, 0xffff, func(v uint64) { b.Domain = uint16(v) }, "domain"},
		{bus, 0xff, func(v uint64) { b.Bus = uint8(v) }, "bus"},
		{dev, 31, func(v uint64) { b.Dev = uint8(v) }, "device"},
		{fn, 7, func(v uint64) { b.Fn = uint8(v) }, "function"},
	} {
		if !isHex(f.txt) {
			return bad(f.name + " is not hex")
		}
		v, err := strconv.ParseUint(f.txt, 16, 16)
		if err != nil || v > f.max {
			return bad(f.name + " out of range")
		}
		f.dst(v)
	}
	return b, nil
}

func isHex(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return true
}

// String returns the canonical sysfs form, e.g. "0000:03:00.0".
func (b BDF) String() string {
	return fmt.Sprintf("%04x:%02x:%02x.%x", b.Domain, b.Bus, b.Dev, b.Fn)
}

// Slot returns the address of function 0 of the same device.
func (b BDF) Slot() BDF { b.Fn = 0; return b }

// Less orders addresses by domain, bus, device, function.
func (b BDF) Less(o BDF) bool {
	if b.Domain != o.Domain {
		return b.Domain < o.Domain
	}
	if b.Bus != o.Bus {
		return b.Bus < o.Bus
	}
	if b.Dev != o.Dev {
		return b.Dev < o.Dev
	}
	return b.Fn < o.Fn
}

// MarshalText implements encoding.TextMarshaler (JSON as "0000:03:00.0").
func (b BDF) MarshalText() ([]byte, error) { return []byte(b.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler with ParseBDF's rules.
func (b *BDF) UnmarshalText(t []byte) error {
	v, err := ParseBDF(string(t))
	if err != nil {
		return err
	}
	*b = v
	return nil
}
