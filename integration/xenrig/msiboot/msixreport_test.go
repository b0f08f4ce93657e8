package msiboot

import (
	"strings"
	"testing"
)

// As plain QEMU's debug port shows it (pc, TCG).
const goodMSIXQEMU = `MSIXBOOT: e1000e at 00:02.0 bar0 feb80000
MSIXBOOT: msix enabled, entry 0 vector 0x61
MSIXBOOT: got interrupt, icr 81000000
MSIXBOOT: done
`

// As `xl dmesg` would show it, with msiboot's lines from another domain
// and hvmloader's.
const goodMSIXXen = `(d3) HVM Loader
(d3) pci dev 05:0 bar 1c size 000004000: 0f3020000
(d4) MSIBOOT: edu at 00:04.0 bar0 f3000000
(d3) Booting from Hard Disk...
(d3) MSIXBOOT: e1000e at 00:05.0 bar0 f3000000
(d4) MSIBOOT: msi enabled, vector 0x60
(d3) MSIXBOOT: msix enabled, entry 0 vector 0x61
(d3) MSIXBOOT: got interrupt, icr 81000004
(d4) MSIBOOT: done
(d3) MSIXBOOT: done
`

func TestParseMSIX(t *testing.T) {
	r := ParseMSIX(goodMSIXXen)
	if err := r.Check(); err != nil {
		t.Fatal(err)
	}
	if r.Device != "00:05.0" || r.BAR0 != 0xf3000000 || r.Entry != 0 || r.Vector != 0x61 || r.ICR != 0x81000004 || len(r.Lines) != 4 {
		t.Errorf("%+v", r)
	}
	if err := ParseMSIX(strings.ReplaceAll(goodMSIXQEMU, "\n", "\r\n")).Check(); err != nil {
		t.Error(err)
	}
	// Each parser sees its own guest's lines only.
	if m := Parse(goodMSIXXen); len(m.Lines) != 3 || len(m.Unknown) != 0 {
		t.Errorf("msiboot's Parse took %q", m.Lines)
	}
	if len(ParseMSIX(goodQEMU).Lines) != 0 {
		t.Error("ParseMSIX took msiboot's lines")
	}
}

func TestCheckMSIXFails(t *testing.T) {
	for name, log := range map[string]string{
		"empty":        "",
		"msiboot's":    goodQEMU,
		"no e1000e":    "MSIXBOOT: no e1000e\nMSIXBOOT: done\n",
		"no msix":      "MSIXBOOT: e1000e at 00:02.0 bar0 feb80000\nMSIXBOOT: no msix\nMSIXBOOT: done\n",
		"no interrupt": strings.Replace(goodMSIXQEMU, "got interrupt, icr 81000000", "no interrupt", 1),
		"no enable":    strings.Replace(goodMSIXQEMU, "MSIXBOOT: msix enabled, entry 0 vector 0x61\n", "", 1),
		"no done":      strings.Replace(goodMSIXQEMU, "MSIXBOOT: done\n", "", 1),
		"other cause":  strings.Replace(goodMSIXQEMU, "81000000", "80000004", 1),
		"wrong vector": strings.Replace(goodMSIXQEMU, "0x61", "0x60", 1),
		"wrong entry":  strings.Replace(goodMSIXQEMU, "entry 0", "entry 1", 1),
		"bar0 0":       strings.Replace(goodMSIXQEMU, "feb80000", "00000000", 1),
		"bar0 flags":   strings.Replace(goodMSIXQEMU, "feb80000", "0000000c", 1),
		"bad device":   strings.Replace(goodMSIXQEMU, "00:02.0", "00:20.0", 1),
		"unknown":      goodMSIXQEMU + "MSIXBOOT: hello\n",
		"twice":        goodMSIXQEMU + goodMSIXQEMU,
		"truncated":    strings.Replace(goodMSIXQEMU, "icr 81000000", "icr 810000", 1),
	} {
		if err := ParseMSIX(log).Check(); err == nil {
			t.Errorf("%s: Check passed", name)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
}

func FuzzParseMSIX(f *testing.F) {
	f.Add(goodMSIXQEMU)
	f.Add(goodMSIXXen)
	f.Add("MSIXBOOT: no e1000e\nMSIXBOOT: done\n")
	f.Add("MSIXBOOT: MSIXBOOT: done\x00\r\nMSIBOOT: done\n")
	f.Fuzz(func(t *testing.T, log string) {
		r := ParseMSIX(log)
		if len(r.Lines) > strings.Count(log, MSIXPrefix) {
			t.Fatalf("%d lines from %d prefixes", len(r.Lines), strings.Count(log, MSIXPrefix))
		}
		if r.Check() == nil {
			if !r.Done || !r.Interrupt || r.ICR&ICROther == 0 || !r.Enabled || r.Entry != MSIXEntry ||
				r.Vector != MSIXVector || r.Device == "" || r.BAR0 == 0 || len(r.Lines) != 4 {
				t.Fatalf("Check passed %+v", r)
			}
		}
	})
}
