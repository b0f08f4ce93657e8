package main

import (
	"fmt"
	"io/fs"
	"strings"
	"testing"
)

// TestDMDomainName: the broker hears a domain's name only when libxl's
// -name is the name xenstore records for the domain and a name the
// broker accepts; a name QEMU's option syntax cut short, a mismatch, or
// no xenstore gives no name (logged), never a wrong one.
func TestDMDomainName(t *testing.T) {
	saved := openXenstore
	defer func() { openXenstore = saved }()
	xs := &fakeXenstore{nodes: map[string]string{
		"/local/domain/7/name": "web",
		"/local/domain/8/name": "sys-net,debug-threads=on",
	}}
	openXenstore = func() (xenstoreReader, func() error, error) { return xs, func() error { return nil }, nil }
	var logged []string
	logf := func(f string, a ...any) { logged = append(logged, fmt.Sprintf(f, a...)) }
	for _, c := range []struct {
		domid      int
		argv, want string
	}{
		{7, "web", "web"},
		{7, "db", ""},                       // not domain 7's name
		{8, "sys-net", ""},                  // QEMU's reading of "sys-net,debug-threads=on"
		{8, "sys-net,debug-threads=on", ""}, // refused by the broker's rule
		{9, "web", ""},                      // no such node
		{7, "", ""},                         // no -name: nothing to log
	} {
		logged = nil
		if got := dmDomainName(c.domid, c.argv, logf); got != c.want {
			t.Errorf("domain %d -name %q: %q, want %q", c.domid, c.argv, got, c.want)
		}
		if (c.want == "" && c.argv != "") != (len(logged) == 1) {
			t.Errorf("domain %d -name %q: logged %q", c.domid, c.argv, logged)
		}
	}
	openXenstore = func() (xenstoreReader, func() error, error) { return nil, nil, fs.ErrPermission }
	logged = nil
	if got := dmDomainName(7, "web", logf); got != "" || len(logged) != 1 || !strings.Contains(logged[0], "xenstore") {
		t.Errorf("without xenstore: %q, logged %q", got, logged)
	}
}
