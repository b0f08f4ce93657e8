package main

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// capture runs the CLI in-process and returns its stdout and exit code.
func capture(t *testing.T, args ...string) (string, int) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	old := os.Stdout
	os.Stdout = w
	done := make(chan []byte)
	go func() { b, _ := io.ReadAll(r); done <- b }()
	code := run(args)
	w.Close()
	os.Stdout = old
	return string(<-done), code
}

// lsEntry is the subset of `pci ls --json` this test checks, declared here
// rather than taken from package pci so that a field renamed there is a
// failure here.
type lsEntry struct {
	BDF       string `json:"bdf"`
	Vendor    uint16 `json:"vendor"`
	Device    uint16 `json:"device"`
	SubVendor uint16 `json:"subsystem_vendor"`
	SubDevice uint16 `json:"subsystem_device"`
	Class     uint32 `json:"class"`
	Revision  uint8  `json:"revision"`
	IRQ       int    `json:"irq"`
	Driver    string `json:"driver"`
	Group     int    `json:"iommu_group"`
	Resets    []string
	RawResets []string `json:"reset_methods"`
	CfgSize   int      `json:"config_size"`
	BARs      []struct {
		Index    int    `json:"index"`
		Start    uint64 `json:"start"`
		Size     uint64 `json:"size"`
		IO       bool   `json:"io"`
		Prefetch bool   `json:"prefetch"`
	} `json:"bars"`
	Caps struct {
		List []struct {
			ID       uint16 `json:"id"`
			Extended bool   `json:"extended"`
			Offset   uint16 `json:"offset"`
		} `json:"list"`
		MSIX *struct {
			TableSize int `json:"table_size"`
			TableBAR  int `json:"table_bar"`
		} `json:"msix"`
	} `json:"caps"`
}

// TestPciLsMatchesHostSysfs: on this machine's real sysfs, every device
// `pci ls --json` reports agrees with the raw files, re-read here with a
// deliberately naive reader of its own.
func TestPciLsMatchesHostSysfs(t *testing.T) {
	const dir = "/sys/bus/pci/devices"
	ents, err := os.ReadDir(dir)
	if err != nil || len(ents) == 0 {
		t.Skipf("no PCI devices in %s (%v)", dir, err)
	}
	if os.Geteuid() != 0 {
		t.Skip("config space past 64 bytes is readable by root only")
	}
	out, code := capture(t, "pci", "ls", "--json", "--sysfs-root", "/", "--state-dir", t.TempDir())
	if code != ExitOK {
		t.Fatalf("exit %d", code)
	}
	var got []lsEntry
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if len(got) != len(ents) {
		t.Fatalf("ls lists %d devices, %s has %d", len(got), dir, len(ents))
	}
	for i, e := range got {
		if e.BDF != ents[i].Name() {
			t.Fatalf("entry %d is %s, want %s", i, e.BDF, ents[i].Name())
		}
		p := filepath.Join(dir, e.BDF)
		hex := func(name string) uint64 {
			b, err := os.ReadFile(filepath.Join(p, name))
			if err != nil {
				t.Fatal(err)
			}
			v, err := strconv.ParseUint(strings.TrimPrefix(strings.TrimSpace(string(b)), "0x"), 16, 64)
			if err != nil {
				t.Fatal(err)
			}
			return v
		}
		if uint64(e.Vendor) != hex("vendor") || uint64(e.Device) != hex("device") || uint64(e.Class) != hex("class") ||
			uint64(e.SubVendor) != hex("subsystem_vendor") || uint64(e.SubDevice) != hex("subsystem_device") ||
			uint64(e.Revision) != hex("revision") {
			t.Errorf("%s: ids differ from sysfs: %+v", e.BDF, e)
		}
		irq, _ := os.ReadFile(filepath.Join(p, "irq"))
		if strconv.Itoa(e.IRQ) != strings.TrimSpace(string(irq)) {
			t.Errorf("%s: irq %d, sysfs %q", e.BDF, e.IRQ, irq)
		}
		drv, _ := os.Readlink(filepath.Join(p, "driver"))
		if drv != "" {
			drv = filepath.Base(drv)
		}
		if e.Driver != drv {
			t.Errorf("%s: driver %q, sysfs %q", e.BDF, e.Driver, drv)
		}
		grp := -1
		if l, err := os.Readlink(filepath.Join(p, "iommu_group")); err == nil {
			grp, _ = strconv.Atoi(filepath.Base(l))
		}
		if e.Group != grp {
			t.Errorf("%s: group %d, sysfs %d", e.BDF, e.Group, grp)
		}
		rm, _ := os.ReadFile(filepath.Join(p, "reset_method"))
		if strings.Join(e.RawResets, " ") != strings.TrimSpace(string(rm)) {
			t.Errorf("%s: reset methods %v, sysfs %q", e.BDF, e.RawResets, rm)
		}
		checkBARs(t, p, e)
		checkConfig(t, p, e)
	}
}

func checkBARs(t *testing.T, p string, e lsEntry) {
	raw, err := os.ReadFile(filepath.Join(p, "resource"))
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for i, line := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
		if i > 5 {
			break
		}
		f := strings.Fields(line)
		start, _ := strconv.ParseUint(f[0], 0, 64)
		end, _ := strconv.ParseUint(f[1], 0, 64)
		flags, _ := strconv.ParseUint(f[2], 0, 64)
		if start == 0 && end == 0 || flags&0x300 == 0 {
			continue
		}
		want = append(want, strconv.Itoa(i)+":"+strconv.FormatUint(start, 16)+"+"+strconv.FormatUint(end-start+1, 16)+
			":io="+strconv.FormatBool(flags&0x100 != 0)+":pf="+strconv.FormatBool(flags&0x2000 != 0))
	}
	var got []string
	for _, b := range e.BARs {
		got = append(got, strconv.Itoa(b.Index)+":"+strconv.FormatUint(b.Start, 16)+"+"+strconv.FormatUint(b.Size, 16)+
			":io="+strconv.FormatBool(b.IO)+":pf="+strconv.FormatBool(b.Prefetch))
	}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("%s: BARs %v, resource says %v", e.BDF, got, want)
	}
}

func checkConfig(t *testing.T, p string, e lsEntry) {
	cfg, err := os.ReadFile(filepath.Join(p, "config"))
	if err != nil {
		t.Fatal(err)
	}
	if e.CfgSize != len(cfg) || binary.LittleEndian.Uint16(cfg) != e.Vendor || binary.LittleEndian.Uint16(cfg[2:]) != e.Device {
		t.Errorf("%s: config size/ids disagree", e.BDF)
	}
	// The standard capability list, walked plainly (a real device here
	// has no loops; a bound stops a broken one).
	var want []string
	if cfg[6]&0x10 != 0 {
		for ptr, n := int(cfg[0x34])&^3, 0; ptr != 0 && n < 48; ptr, n = int(cfg[ptr+1])&^3, n+1 {
			want = append(want, strconv.Itoa(int(cfg[ptr]))+"@"+strconv.Itoa(ptr))
			if cfg[ptr] == 0x11 && e.Caps.MSIX != nil {
				if size := int(binary.LittleEndian.Uint16(cfg[ptr+2:])&0x7ff) + 1; size != e.Caps.MSIX.TableSize {
					t.Errorf("%s: msi-x table size %d, config says %d", e.BDF, e.Caps.MSIX.TableSize, size)
				}
				if bir := int(cfg[ptr+4] & 7); bir != e.Caps.MSIX.TableBAR {
					t.Errorf("%s: msi-x BIR %d, config says %d", e.BDF, e.Caps.MSIX.TableBAR, bir)
				}
			}
		}
	}
	var got []string
	for _, c := range e.Caps.List {
		if !c.Extended {
			got = append(got, strconv.Itoa(int(c.ID))+"@"+strconv.Itoa(int(c.Offset)))
		}
	}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("%s: capabilities %v, config says %v", e.BDF, got, want)
	}
}

// TestPciCLIOnCapturedTree: the subcommands on the q35 capture; assignable-
// add without a real kernel behind the files must fail closed (the probe
// "happens" but no driver link appears).
func TestPciCLIOnCapturedTree(t *testing.T) {
	root := "../../pci/testdata/sysfs/q35-vfio-rig"
	state := t.TempDir()
	out, code := capture(t, "pci", "show", "0000:01:00.0", "--sysfs-root", root, "--state-dir", state)
	if code != ExitOK || !regexp.MustCompile(`parent bridge\s+0000:00:02.0`).MatchString(out) ||
		!regexp.MustCompile(`reset bus\s+applies \(via kernel\)`).MatchString(out) {
		t.Fatalf("show: %d\n%s", code, out)
	}
	out, code = capture(t, "pci", "show", "0000:01:00.0", "--json", "--sysfs-root", root)
	var m map[string]any
	if code != ExitOK || json.Unmarshal([]byte(out), &m) != nil || m["bdf"] != "0000:01:00.0" {
		t.Fatalf("show --json: %d\n%s", code, out)
	}
	for _, tc := range []struct {
		args []string
		code int
	}{
		{[]string{"pci"}, ExitUsage},
		{[]string{"pci", "frob"}, ExitUsage},
		{[]string{"pci", "show"}, ExitUsage},
		{[]string{"pci", "show", "0000:01:00.0/../x"}, ExitUsage},
		{[]string{"pci", "show", "0000:01:00.0", "--to", "nouveau"}, ExitUsage},
		{[]string{"pci", "show", "0000:09:00.0", "--sysfs-root", root}, ExitFailure},
		{[]string{"pci", "ls", "--sysfs-root", root, "--deny-file", "/nonexistent"}, ExitConfig},
		{[]string{"pci", "assignable-add", "0000:00:02.0", "--sysfs-root", root, "--state-dir", state}, ExitConflict},
		{[]string{"pci", "reset", "0000:00:03.0", "--sysfs-root", root, "--state-dir", state}, ExitConflict},
		{[]string{"pci", "assignable-remove", "0000:00:03.0", "--sysfs-root", root, "--state-dir", state}, ExitFailure},
	} {
		if _, code := capture(t, tc.args...); code != tc.code {
			t.Errorf("%v: exit %d, want %d", tc.args, code, tc.code)
		}
	}
	out, code = capture(t, "pci", "assignable-list", "--json", "--state-dir", state)
	if code != ExitOK || !bytes.Equal(bytes.TrimSpace([]byte(out)), []byte("[]")) {
		t.Fatalf("assignable-list: %d %s", code, out)
	}
}
