package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/dmsandbox/dmsandbox/pci/audit"
)

const capturedTree = "../../pci/testdata/sysfs/q35-vfio-rig"

func TestBrokerTryVerdicts(t *testing.T) {
	base := []string{"try", "--sysfs-root", capturedTree, "--device", "0000:00:04.0", "--domid", "7", "--"}
	ok := append(base, "map_pirq", "index=10", "pirq=-1", "--", "bind_pt_pci_irq", "machine_irq=last", "device=5",
		"--", "memory_mapping", "add=1", "first_gfn=0xe0000", "first_mfn=0xfeb80", "nr_mfns=0x20")
	if rc := brokerCmd(ok); rc != ExitOK {
		t.Fatalf("allowed ops: rc %d", rc)
	}
	refused := append(base, "memory_mapping", "add=1", "first_gfn=0xe0000", "first_mfn=0xfeb9f", "nr_mfns=2")
	if rc := brokerCmd(refused); rc != ExitFailure {
		t.Fatalf("straddling mapping: rc %d", rc)
	}
	if rc := brokerCmd(append(base, "no_such_op")); rc != ExitUsage {
		t.Fatalf("unknown op: rc %d", rc)
	}
}

func TestBrokerRunRefusesFake(t *testing.T) {
	dir := t.TempDir()
	rc := brokerCmd([]string{"run", "--backend", "fake", "--socket", filepath.Join(dir, "s"),
		"--audit-dir", filepath.Join(dir, "a"), "--state-dir", filepath.Join(dir, "st")})
	if rc != ExitConfig {
		t.Fatalf("fake backend in the daemon: rc %d", rc)
	}
}

func TestAuditVerifyCmd(t *testing.T) {
	dir := t.TempDir()
	l, err := audit.Open(audit.Options{Dir: dir, Durable: true})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		l.Append(&audit.Record{Op: "config_read", Verdict: audit.Allow})
	}
	l.Close()
	if rc := auditCmd([]string{"verify", dir}); rc != ExitOK {
		t.Fatalf("intact: rc %d", rc)
	}
	if rc := auditCmd([]string{"tail", "-n", "2", dir}); rc != ExitOK {
		t.Fatalf("tail: rc %d", rc)
	}
	files, _ := audit.Files(dir)
	// A tail cut after the syslog copy saw the last record is detected.
	_, head := l.LastHash()
	if rc := auditCmd([]string{"verify", "--contains", head, dir}); rc != ExitOK {
		t.Fatalf("head present: rc %d", rc)
	}
	data, _ := os.ReadFile(files[0])
	cut := bytes.SplitAfter(data, []byte("\n"))
	os.WriteFile(files[0], bytes.Join(cut[:len(cut)-2], nil), 0o600)
	if rc := auditCmd([]string{"verify", dir}); rc != ExitOK {
		t.Fatalf("a cut tail alone still verifies as a chain: rc %d", rc)
	}
	if rc := auditCmd([]string{"verify", "--contains", head, dir}); rc != ExitFailure {
		t.Fatalf("cut tail not detected with --contains: rc %d", rc)
	}
	os.WriteFile(files[0], data, 0o600)
	lines := bytes.SplitAfter(data, []byte("\n"))
	lines[1], lines[2] = lines[2], lines[1]
	os.WriteFile(files[0], bytes.Join(lines, nil), 0o600)
	if rc := auditCmd([]string{"verify", files[0]}); rc != ExitFailure {
		t.Fatalf("reordered: rc %d", rc)
	}
}

// TestBrokerTryOpenFile: `broker try` speaks open_file by file name and
// with bdf=any, and shows what the handed fd holds (the broker's tree,
// here a copy of the captured one with the MSI-X BAR's resource file).
func TestBrokerTryOpenFile(t *testing.T) {
	tree := t.TempDir()
	if out, err := exec.Command("cp", "-a", capturedTree+"/.", tree).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v\n%s", err, out)
	}
	dev, err := filepath.EvalSymlinks(filepath.Join(tree, "sys/bus/pci/devices/0000:00:04.0"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dev, "resource3"), make([]byte, 0x4000), 0o600); err != nil {
		t.Fatal(err)
	}
	rc, out, errOut := cli(t, "broker", "try", "--sysfs-root", tree, "--device", "0000:00:04.0", "--domid", "7", "--",
		"open_file", "file=vendor", "--", "open_file", "bdf=any", "file=msix_bar", "addr=0xfebd0010", "--",
		"open_file", "file=msix_bar", "addr=0xfeb80000", "--", "open_file", "bdf=0000:00:03.0", "file=irq")
	want := `open_file file=vendor → allow fd (read-only, 7 bytes) "0x8086"
open_file bdf=any file=msix_bar addr=0xfebd0010 → allow fd (read-only, 16384 bytes) bar=0xfebd0000+0x4000
open_file file=msix_bar addr=0xfeb80000 → deny ERANGE (34): addr 0xfeb80000 is in no MSI-X table or PBA page of 0000:00:04.0
open_file bdf=0000:00:03.0 file=irq → deny ENODEV (19): 0000:00:03.0 is not attached to session 1
`
	if rc != ExitFailure || out != want {
		t.Fatalf("rc %d, stdout:\n%s\nwant:\n%s\nstderr: %s", rc, out, want, errOut)
	}
}
