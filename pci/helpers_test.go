package pci

import (
	"os"
	"path/filepath"
	"testing"
)

// trees lists every captured sysfs tree under testdata/sysfs, so a new
// capture (the rig's) is covered by the parser tests without edits.
func trees(t *testing.T) []string {
	t.Helper()
	ents, err := os.ReadDir("testdata/sysfs")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		if e.IsDir() {
			out = append(out, filepath.Join("testdata/sysfs", e.Name()))
		}
	}
	if len(out) < 3 {
		t.Fatalf("want at least 3 captured trees, have %v", out)
	}
	return out
}

func mustBDF(t testing.TB, s string) BDF {
	t.Helper()
	b, err := ParseBDF(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
