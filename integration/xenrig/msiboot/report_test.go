package msiboot

import (
	"strings"
	"testing"
)

const goodQEMU = `MSIBOOT: edu at 00:02.0 bar0 feb00000
MSIBOOT: msi enabled, vector 0x60
MSIBOOT: got interrupt, status 0000005a
MSIBOOT: done
`

// As `xl dmesg` shows it: Xen's own lines, hvmloader's, SeaBIOS's.
const goodXen = `(XEN) HVM d3v0 save: CPU
(d3) HVM Loader
(d3) pci dev 04:0 bar 10 size 000100000: 0f3000000
(d3) Booting from Hard Disk...
(d3) MSIBOOT: edu at 00:04.0 bar0 f3000000
(d3) MSIBOOT: msi enabled, vector 0x60
(d3) MSIBOOT: got interrupt, status 0000005a
(d3) MSIBOOT: done
`

func TestParse(t *testing.T) {
	r := Parse(goodXen)
	if err := r.Check(); err != nil {
		t.Fatal(err)
	}
	if r.Device != "00:04.0" || r.BAR0 != 0xf3000000 || r.Vector != 0x60 || r.Status != 0x5a || len(r.Lines) != 4 {
		t.Errorf("%+v", r)
	}
	if err := Parse(strings.ReplaceAll(goodQEMU, "\n", "\r\n")).Check(); err != nil {
		t.Error(err)
	}
}

func TestCheckFails(t *testing.T) {
	for name, log := range map[string]string{
		"empty":        "",
		"no edu":       "MSIBOOT: no edu\nMSIBOOT: done\n",
		"no msi":       "MSIBOOT: edu at 00:04.0 bar0 f3000000\nMSIBOOT: no msi\nMSIBOOT: done\n",
		"no interrupt": strings.Replace(goodQEMU, "got interrupt, status 0000005a", "no interrupt", 1),
		"no done":      strings.Replace(goodQEMU, "MSIBOOT: done\n", "", 1),
		"wrong status": strings.Replace(goodQEMU, "0000005a", "00000001", 1),
		"wrong vector": strings.Replace(goodQEMU, "0x60", "0x61", 1),
		"bar0 0":       strings.Replace(goodQEMU, "feb00000", "00000000", 1),
		"bad device":   strings.Replace(goodQEMU, "00:02.0", "00:20.0", 1),
		"unknown":      goodQEMU + "MSIBOOT: hello\n",
		"twice":        goodQEMU + goodQEMU,
		"truncated":    strings.Replace(goodQEMU, "status 0000005a", "status 00005a", 1),
	} {
		if err := Parse(log).Check(); err == nil {
			t.Errorf("%s: Check passed", name)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add(goodQEMU)
	f.Add(goodXen)
	f.Add("MSIBOOT: no edu\nMSIBOOT: done\n")
	f.Add("MSIBOOT: MSIBOOT: done\x00\r\n")
	f.Fuzz(func(t *testing.T, log string) {
		r := Parse(log)
		if len(r.Lines) > strings.Count(log, Prefix) {
			t.Fatalf("%d lines from %d prefixes", len(r.Lines), strings.Count(log, Prefix))
		}
		if r.Check() == nil {
			if !r.Done || !r.Interrupt || r.Status != RaiseStatus || r.Vector != Vector || r.Device == "" || len(r.Lines) != 4 {
				t.Fatalf("Check passed %+v", r)
			}
		}
	})
}
