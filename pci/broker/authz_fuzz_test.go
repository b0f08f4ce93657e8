package broker

import (
	"path/filepath"
	"testing"
)

// FuzzParseAuthz: the authorization file decoder never panics, and what
// it accepts survives a save and a load unchanged (the broker rewrites
// the file on every change).
func FuzzParseAuthz(f *testing.F) {
	f.Add([]byte(`{"v":1,"authorizations":[{"bdf":"0000:03:00.0","domid":7,"since":"2026-11-26T16:00:00Z"}]}`))
	f.Add([]byte(`{"v":1,"authorizations":[]}`))
	f.Add([]byte(`{"v":1,"authorizations":[{"bdf":"03:00.0","domid":32751,"session":9}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		set, err := parseAuthz("fuzz", data)
		if err != nil {
			return
		}
		p := filepath.Join(t.TempDir(), AuthorizationsFile)
		if err := saveAuthz(p, set); err != nil {
			t.Fatal(err)
		}
		again, err := loadAuthz(p)
		if err != nil {
			t.Fatalf("reload of an accepted set: %v", err)
		}
		if len(set) != len(again) {
			t.Fatalf("round trip: %d → %d", len(set), len(again))
		}
		for k, v := range set {
			w := again[k]
			if v.BDF != w.BDF || v.Domid != w.Domid || !v.Since.Equal(w.Since) || w.Session != 0 {
				t.Fatalf("round trip of %s: %+v → %+v", k, v, w)
			}
		}
	})
}
