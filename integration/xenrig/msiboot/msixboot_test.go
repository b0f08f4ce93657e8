package msiboot

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
)

// The Go constants are msixboot.S's.
func TestMSIXConstantsMatchSource(t *testing.T) {
	for name, want := range map[string]int{"VECTOR": MSIXVector, "OTHER": ICROther} {
		m := regexp.MustCompile(`(?m)^\s*\.set ` + name + `, (0x[0-9a-f]+)`).FindSubmatch(msixSource)
		if m == nil {
			t.Fatalf(".set %s not in msixboot.S", name)
		}
		got, err := strconv.ParseInt(string(m[1]), 0, 32)
		if err != nil || int(got) != want {
			t.Errorf("msixboot.S: %s = %s, Go has %#x", name, m[1], want)
		}
	}
	if MSIXVector == Vector {
		t.Error("msiboot and msixboot share a vector")
	}
}

func TestBuildMSIX(t *testing.T) {
	img, b := checkBuild(t, BuildMSIX, msixGuest, "NO_MSIX_ENABLE=1")
	if filepath.Base(img) != MSIXImageName {
		t.Errorf("image %s, want %s", img, MSIXImageName)
	}
	// Beside msiboot's image in one directory, neither replaces the other.
	msi, err := Build(filepath.Dir(img))
	if err != nil {
		t.Fatal(err)
	}
	if m, _ := os.ReadFile(msi); msi == img || bytes.Equal(m, b) {
		t.Errorf("msiboot's image %s is msixboot's %s", msi, img)
	}
}

// msixDone ends a msixboot run.
const msixDone = MSIXPrefix + "done"

// The boot sector does its job in plain QEMU: it programs the e1000e's
// MSI-X table entry, enables MSI-X, and the e1000e's "other" cause
// reaches the vector's handler through that entry and the local APIC.
func TestQEMUMSIX(t *testing.T) {
	needTools(t)
	img, err := BuildMSIX(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, machine := range []string{"pc", "q35"} {
		for _, accel := range accels() {
			t.Run(machine+"/"+accel, func(t *testing.T) {
				r := ParseMSIX(bootQEMU(t, img, machine, accel, msixDone, "e1000e"))
				if err := r.Check(); err != nil {
					t.Fatal(err)
				}
				if len(r.Lines) != 4 {
					t.Fatalf("lines %q, want 4", r.Lines)
				}
			})
		}
	}
}

// Controls: without an e1000e the scan says so; with MSI-X left disabled
// (the same sector but for the enable bit) no interrupt arrives (the
// e1000e then asserts INTx, which is masked), so "got interrupt" above is
// MSI-X's doing.
func TestQEMUMSIXControls(t *testing.T) {
	needTools(t)
	img, err := BuildMSIX(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctl, err := build(msixGuest, t.TempDir(), "NO_MSIX_ENABLE=1")
	if err != nil {
		t.Fatal(err)
	}
	t.Run("no-e1000e", func(t *testing.T) {
		// edu is a PCI device too, but not the one it looks for.
		r := ParseMSIX(bootQEMU(t, img, "pc", "tcg", msixDone, "edu"))
		if !equal(r.Lines, []string{"no e1000e", "done"}) {
			t.Fatalf("lines %q, want no e1000e, done", r.Lines)
		}
		if r.Check() == nil {
			t.Fatal("Check passed a run without an e1000e")
		}
	})
	t.Run("msix-disabled", func(t *testing.T) {
		r := ParseMSIX(bootQEMU(t, ctl, "pc", "tcg", msixDone, "e1000e"))
		if r.Device == "" || len(r.Lines) < 1 || !equal(r.Lines[1:], []string{"msix enabled, entry 0 vector 0x61", "no interrupt", "done"}) {
			t.Fatalf("lines %q, want e1000e, msix (not really), no interrupt, done", r.Lines)
		}
		if r.Interrupt || r.Check() == nil {
			t.Fatal("an interrupt with MSI-X disabled")
		}
	})
}
