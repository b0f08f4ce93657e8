package broker

import (
	"path/filepath"
	"testing"
)

// FuzzParseAuthz: the authorization file decoder never panics; what it
// keeps names each device once, for exactly one valid domain, and
// survives a save and a load unchanged (the broker rewrites the file on
// every change), policy included.
func FuzzParseAuthz(f *testing.F) {
	const boot = "5f0c2d1e-8a43-4c55-9d51-0c7f2b9a1e33"
	f.Add([]byte(`{"v":1,"authorizations":[{"bdf":"0000:03:00.0","domid":7,"since":"2026-11-26T16:00:00Z"}]}`))
	f.Add([]byte(`{"v":1,"authorizations":[]}`))
	f.Add([]byte(`{"v":1,"authorizations":[{"bdf":"03:00.0","domid":32751,"session":9}]}`))
	f.Add([]byte(`{"v":2,"require_authorization":true,"authorizations":[{"bdf":"0000:03:00.0","domid":7,"boot_id":"` + boot + `","since":"2026-11-26T16:00:00Z"},{"bdf":"0000:04:00.0","name":"sys-net","since":"2026-11-26T16:00:00Z"}]}`))
	f.Add([]byte(`{"v":2,"require_authorization":false,"authorizations":[{"bdf":"0000:03:00.0","domid":7,"name":"web"}]}`))
	f.Add([]byte(`{"v":2,"require_authorization":false,"authorizations":[{"bdf":"0000:03:00.0","domid":7,"boot_id":"old"}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		set, err := parseAuthz("fuzz", data, boot)
		if err != nil {
			return
		}
		for k, a := range set.auth {
			if err := a.Domain().check(); err != nil || a.BDF != k.String() {
				t.Fatalf("kept %+v: %v", a, err)
			}
			if a.Name == "" && a.BootID != boot {
				t.Fatalf("kept a domid-keyed authorisation of another boot: %+v", a)
			}
		}
		p := filepath.Join(t.TempDir(), AuthorizationsFile)
		if err := saveAuthz(p, set.auth, *set.require); err != nil {
			t.Fatal(err)
		}
		again, err := loadAuthz(p, boot)
		if err != nil {
			t.Fatalf("reload of an accepted set: %v", err)
		}
		if len(set.auth) != len(again.auth) || len(again.stale) != 0 || *again.require != *set.require {
			t.Fatalf("round trip: %d → %d (stale %d), policy %v → %v", len(set.auth), len(again.auth), len(again.stale), *set.require, *again.require)
		}
		for k, v := range set.auth {
			w := again.auth[k]
			if v.BDF != w.BDF || v.Domain() != w.Domain() || v.BootID != w.BootID || !v.Since.Equal(w.Since) || w.Session != 0 {
				t.Fatalf("round trip of %s: %+v → %+v", k, v, w)
			}
		}
	})
}
