package dmargv

import (
	"path/filepath"
	"strings"
	"testing"
)

// FuzzParse feeds NUL-separated argvs to Parse. Seeds: every argv under
// testdata/argv and the corpus in testdata/fuzz/FuzzParse. Parse must
// never panic, and whatever it accepts must keep the invariants the
// golden files hold (checkInvariants).
func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob("testdata/argv/*.argv")
	for _, p := range files {
		f.Add(strings.Join(readArgv(f, p), "\x00"))
	}
	f.Fuzz(func(t *testing.T, s string) {
		if len(s) > 1<<16 {
			return
		}
		dm, err := Parse(strings.Split(s, "\x00"))
		if err != nil {
			return
		}
		checkInvariants(t, dm)
		if _, err := dm.Env([]string{"XEN_DOMAIN_ID=1", "XEN_QEMU_CONSOLE_LIMIT=9"}); err != nil && dm.Domid == 1 {
			t.Errorf("env: %v", err)
		}
	})
}

// FuzzOpts: parsing and formatting an option string is lossless.
func FuzzOpts(f *testing.F) {
	for _, s := range []string{"socket,id=libxl-cmd,fd=14,server=on,wait=off", "xenfv,suppress-vmdesc=on", "a,,b=c,,d", "type=tap,id=net0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		o := parseOpts(s, "x")
		if got := parseOpts(o.String(), "x").String(); got != o.String() {
			t.Errorf("not stable: %q -> %q -> %q", s, o.String(), got)
		}
	})
}
