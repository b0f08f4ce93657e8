package main

import (
	"bytes"
	"os"
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
