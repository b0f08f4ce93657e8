package pci

import (
	"encoding/json"
	"errors"
	"testing"
)

func TestParseBDF(t *testing.T) {
	good := map[string]BDF{
		"0000:03:00.0": {0, 3, 0, 0},
		"ffff:ff:1f.7": {0xffff, 0xff, 31, 7},
		"0001:0A:1B.3": {1, 10, 27, 3},
		"03:00.1":      {0, 3, 0, 1},
	}
	for s, want := range good {
		got, err := ParseBDF(s)
		if err != nil || got != want {
			t.Errorf("ParseBDF(%q) = %v, %v; want %v", s, got, err, want)
		}
	}
	bad := []string{"", "0000:03:00", "0000:03:00.8", "0000:03:20.0", "0000:03:00.0\n",
		" 0000:03:00.0", "0000:03:00.0/../..", "+000:03:00.0", "0000:-3:00.0", "0000_03:00.0",
		"0000:03:0x.0", "00000:03:00.0", "g000:03:00.0", "0000:03:00:0"}
	for _, s := range bad {
		if b, err := ParseBDF(s); err == nil || !errors.Is(err, ErrMalformed) {
			t.Errorf("ParseBDF(%q) = %v, %v; want ErrMalformed", s, b, err)
		}
	}
}

func TestBDFStringRoundTrip(t *testing.T) {
	b := BDF{Domain: 0xabcd, Bus: 0x12, Dev: 0x1f, Fn: 7}
	if b.String() != "abcd:12:1f.7" {
		t.Fatalf("String() = %q", b.String())
	}
	j, err := json.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	var back BDF
	if err := json.Unmarshal(j, &back); err != nil || back != b {
		t.Fatalf("json round trip: %s -> %v, %v", j, back, err)
	}
	if err := json.Unmarshal([]byte(`"../../etc"`), &back); err == nil {
		t.Fatal("json accepted a bad address")
	}
}

func FuzzParseBDF(f *testing.F) {
	for _, s := range []string{"0000:03:00.0", "03:00.1", "ffff:ff:1f.7", "0000:03:00.8", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		b, err := ParseBDF(s)
		if err != nil {
			return
		}
		// Whatever parses prints canonically and parses back the same.
		again, err := ParseBDF(b.String())
		if err != nil || again != b || b.Dev > 31 || b.Fn > 7 {
			t.Fatalf("%q -> %v -> %q -> %v, %v", s, b, b.String(), again, err)
		}
	})
}
