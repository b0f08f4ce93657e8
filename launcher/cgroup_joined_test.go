package launcher

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// TestJoinedOnlyPaths: the v1 hierarchies containerd/cgroups does not
// manage but runc joins (misc, hugetlb without huge pages: what the Xen
// rig's dom0 has) are recorded for deletion, nested as runc nests them;
// co-mounted and already recorded hierarchies, cgroup2 and hierarchies
// not mounted under the cgroup root are not.
func TestJoinedOnlyPaths(t *testing.T) {
	root := t.TempDir()
	for _, d := range []string{"memory", "misc", "hugetlb", "systemd", "cpu,cpuacct"} {
		if err := os.Mkdir(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	old := cgroupRoot
	cgroupRoot = root
	defer func() { cgroupRoot = old }()
	// /proc/self/cgroup of a launcher in dom0 (hybrid, as the rig boots it).
	self := `14:misc:/
13:rdma:/
12:hugetlb:/ops
11:cpu,cpuacct:/
5:memory:/ops
1:name=systemd:/
0::/
`
	paths := map[string]string{"memory": filepath.Join(root, "memory/ops/dmsandbox/vm1")}
	joinedOnlyPaths(paths, self, "dmsandbox/vm1")
	want := map[string]string{
		"memory":         filepath.Join(root, "memory/ops/dmsandbox/vm1"),
		"joined:misc":    filepath.Join(root, "misc/dmsandbox/vm1"),
		"joined:hugetlb": filepath.Join(root, "hugetlb/ops/dmsandbox/vm1"),
		"joined:systemd": filepath.Join(root, "systemd/dmsandbox/vm1"),
	}
	if !reflect.DeepEqual(paths, want) {
		t.Fatalf("paths:\n%v\nwant:\n%v", paths, want)
	}
}
