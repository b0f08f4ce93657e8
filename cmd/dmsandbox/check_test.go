package main

import (
	"os"
	"path/filepath"
	"testing"
)

// fakeHost writes files (path -> content) under a temp root.
func fakeHost(t *testing.T, files map[string]string) hostFS {
	t.Helper()
	root := t.TempDir()
	for p, c := range files {
		full := filepath.Join(root, p)
		if c == "<dir>" {
			os.MkdirAll(full, 0o755)
			continue
		}
		os.MkdirAll(filepath.Dir(full), 0o755)
		if err := os.WriteFile(full, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return hostFS{root: root}
}

func rowByName(rows []checkRow, name string) checkRow {
	for _, r := range rows {
		if r.Name == name {
			return r
		}
	}
	return checkRow{}
}

// TestCheckFakeHosts: each row reads what it claims to, on trees shaped
// like a v1 host (this machine's /proc/cgroups layout), a v2 host, and a
// host missing what dmsandbox cannot do without.
func TestCheckFakeHosts(t *testing.T) {
	v1 := fakeHost(t, map[string]string{
		"/proc/sys/kernel/seccomp/actions_avail": "kill_process kill_thread trap errno user_notif trace log allow",
		"/proc/cgroups":                          "#subsys_name\thierarchy\tnum_cgroups\tenabled\ncpu\t2\t1\t1\nmemory\t5\t1\t1\ndevices\t6\t1\t1\npids\t9\t1\t1\n",
		"/sys/fs/cgroup/cpu":                     "<dir>", "/sys/fs/cgroup/memory": "<dir>", "/sys/fs/cgroup/devices": "<dir>", "/sys/fs/cgroup/pids": "<dir>",
		"/proc/sys/kernel/osrelease":              "6.1.0-56-amd64",
		"/lib/modules/6.1.0-56-amd64/modules.dep": "kernel/drivers/vfio/pci/vfio-pci.ko: kernel/drivers/vfio/vfio.ko\nkernel/drivers/xen/xen-pciback/xen-pciback.ko:\n",
		"/sys/kernel/iommu_groups/0":              "<dir>",
		"/proc/xen/capabilities":                  "control_d",
		"/run/xenstored/socket":                   "",
	})
	rows := runChecks(v1)
	for name, want := range map[string]string{"seccomp": checkOK, "cgroups": checkOK, "vfio-pci": checkWarn, "pciback": checkWarn,
		"iommu": checkOK, "xen dom0": checkWarn, "xenstore": checkWarn, "namespaces": checkFail} {
		if r := rowByName(rows, name); r.Status != want {
			t.Errorf("v1 %s: %+v, want %s", name, r, want)
		}
	}
	if r := rowByName(rows, "vfio-pci"); r.Fix != "modprobe vfio-pci" {
		t.Errorf("vfio-pci fix %q", r.Fix)
	}

	v2 := fakeHost(t, map[string]string{"/sys/fs/cgroup/cgroup.controllers": "cpuset cpu io memory hugetlb"})
	rows = runChecks(v2)
	if r := rowByName(rows, "cgroups"); r.Status != checkFail || r.Found != "v2, missing pids" {
		t.Errorf("v2 without pids: %+v", r)
	}
	if r := rowByName(rows, "seccomp"); r.Status != checkFail {
		t.Errorf("no seccomp: %+v", r)
	}
	if r := rowByName(rows, "xen dom0"); r.Status != checkNA {
		t.Errorf("not Xen: %+v", r)
	}
	if r := rowByName(rows, "loop"); r.Status != checkWarn || r.Fix != "modprobe loop (needed for Xen guests with qdisk disks)" {
		t.Errorf("no loop-control: %+v", r)
	}
}

// TestCheckThisHost runs every check on the real host: the rows the
// test suite itself depends on must be ok, and the exit code must agree
// with the rows.
func TestCheckThisHost(t *testing.T) {
	rows := runChecks(hostFS{root: "/"})
	if len(rows) != 13 {
		t.Fatalf("%d rows", len(rows))
	}
	failed := false
	for _, r := range rows {
		if r.Status == "" || r.Found == "" {
			t.Errorf("row without status or finding: %+v", r)
		}
		if r.Status != checkOK && r.Status != checkNA && r.Fix == "" {
			t.Errorf("row %s is %s without a fix", r.Name, r.Status)
		}
		failed = failed || r.Status == checkFail
	}
	if r := rowByName(rows, "seccomp"); r.Status != checkOK {
		t.Errorf("seccomp on a host where the launcher's tests run: %+v", r)
	}
	want := ExitOK
	if failed {
		want = ExitFailure
	}
	null, _ := os.Open(os.DevNull)
	defer null.Close()
	old := os.Stdout
	os.Stdout = null
	code := checkCmd([]string{"--json"})
	os.Stdout = old
	if code != want {
		t.Errorf("exit %d, rows say %d", code, want)
	}
}
