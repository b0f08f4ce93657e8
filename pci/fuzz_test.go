package pci

import (
	"bytes"
	"strings"
	"testing"
)

// FuzzParseCapabilities: config space is device-controlled. Whatever the
// bytes, the parser returns, never panics, and what it returns is
// consistent with the input. Seeds: testdata/fuzz/FuzzParseCapabilities
// (every captured config space and the malformed cases of caps_test.go).
func FuzzParseCapabilities(f *testing.F) {
	f.Fuzz(func(t *testing.T, cfg []byte) {
		c, err := ParseCapabilities(cfg)
		if err != nil {
			return
		}
		seen := map[CapID]bool{}
		for _, id := range c.List {
			k := CapID{Offset: id.Offset, Extended: id.Extended}
			if seen[k] {
				t.Fatalf("offset %#x listed twice", id.Offset)
			}
			seen[k] = true
			if int(id.Offset) >= len(cfg) || !id.Extended && id.Offset < cfgHeaderLen || id.Extended && id.Offset < cfgLegacyLen {
				t.Fatalf("capability %+v outside config (%d bytes)", id, len(cfg))
			}
		}
		if m := c.MSI; m != nil && (m.Vectors < 1 || m.Vectors > 32) {
			t.Fatalf("msi vectors %d", m.Vectors)
		}
		if m := c.MSIX; m != nil && (m.TableSize < 1 || m.TableSize > 2048 || m.TableBAR > maxBAR || m.PBABAR > maxBAR || m.TableOffset&7 != 0) {
			t.Fatalf("msi-x %+v", m)
		}
	})
}

// FuzzParseResource: `resource` is kernel text, but it is read from a
// root that may be a capture or a tampered tree.
func FuzzParseResource(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		bars, rom, err := ParseResource(data)
		if err != nil {
			return
		}
		for _, b := range bars {
			if b.Index < 0 || b.Index >= numBARs || b.Size == 0 || b.End() < b.Start {
				t.Fatalf("bar %+v", b)
			}
		}
		if rom != nil && (rom.Index != romIndex || rom.Size == 0) {
			t.Fatalf("rom %+v", rom)
		}
	})
}

// FuzzParseMountinfo: mount points and sources in mountinfo are chosen by
// whoever mounted. Whatever the text, the parser returns, never panics,
// and every mount it returns came from a line with a "-" separator.
// Seeds: testdata/fuzz/FuzzParseMountinfo (this machine's and the rig's
// shapes, escapes, optional fields, truncated lines).
func FuzzParseMountinfo(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		ms, err := ParseMountinfo(data)
		if err != nil {
			return
		}
		if len(ms) > 0 && !bytes.Contains(data, []byte(" - ")) {
			t.Fatalf("mounts %v without a separator", ms)
		}
		for _, m := range ms {
			if !strings.Contains(m.Dev, ":") || m.FSType == "" {
				t.Fatalf("mount %+v", m)
			}
		}
	})
}
