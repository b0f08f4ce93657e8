package launcher

import (
	"testing"

	"github.com/opencontainers/runc/libcontainer/configs"
	"golang.org/x/sys/unix"
)

func testSetup(userns bool) *containerSetup {
	return &containerSetup{name: "t", rootfs: "/nonexistent", uid: 3000007, nsRootUID: 3032775, userns: userns,
		cgroupRel: "dmsandbox/t", tmpSize: "1m", rlimits: rlimits(DefaultConfig().Rlimits),
		devices: []devNode{{Path: "/dev/null", Type: 'c', Major: 1, Minor: 3, Mode: 0o666},
			{Path: "/dev/kvm", Type: 'c', Major: 10, Minor: 232, Mode: 0o600, Private: true}},
		privateNodes: map[string]string{"/dev/kvm": "/var/cache/dmsandbox/dev/3000007/c-10-232"}}
}

func TestBuildConfigConfinement(t *testing.T) {
	cfg := buildConfig(testSetup(false))
	if c := cfg.Capabilities; c == nil || len(c.Bounding)+len(c.Effective)+len(c.Permitted)+len(c.Inheritable)+len(c.Ambient) != 0 {
		t.Fatalf("capabilities not all dropped: %+v", c)
	}
	if !cfg.NoNewPrivileges || !cfg.Readonlyfs {
		t.Fatal("no_new_privs or read-only root missing")
	}
	for _, ns := range []configs.NamespaceType{configs.NEWNS, configs.NEWPID, configs.NEWIPC, configs.NEWUTS, configs.NEWNET} {
		if !cfg.Namespaces.Contains(ns) {
			t.Errorf("namespace %s missing", ns)
		}
	}
	if cfg.Namespaces.Contains(configs.NEWUSER) {
		t.Error("user namespace without the option")
	}
	for _, m := range cfg.Mounts {
		if m.Device == "sysfs" || m.Destination == "/sys" {
			t.Errorf("sysfs mounted: %+v", m)
		}
		if m.Device == "proc" && m.Flags&unix.MS_NOEXEC == 0 {
			t.Errorf("proc without noexec")
		}
	}
	if r := cfg.Cgroups.Resources; r == nil || r.Memory != 0 || r.PidsLimit != nil || r.CpuQuota != 0 || len(r.Devices) != 3 {
		t.Fatalf("libcontainer must only join the cgroup: %+v", cfg.Cgroups.Resources)
	}
	var kvm bool
	for _, d := range cfg.Devices {
		if d.Path == "/dev/kvm" {
			kvm = d.Uid == 3000007 && d.Gid == 3000007 && d.FileMode == 0o600
		}
	}
	if !kvm {
		t.Fatal("/dev/kvm not owned by the sandbox uid with mode 0600")
	}
	want := map[int]uint64{unix.RLIMIT_CORE: 0, unix.RLIMIT_MSGQUEUE: 0, unix.RLIMIT_LOCKS: 0}
	for _, r := range cfg.Rlimits {
		if v, ok := want[r.Type]; ok && (r.Hard != v || r.Soft != v) {
			t.Errorf("rlimit %d = %d/%d, want %d", r.Type, r.Soft, r.Hard, v)
		}
		if r.Type == unix.RLIMIT_MEMLOCK {
			t.Error("MEMLOCK set although not configured")
		}
	}
}

func TestBuildConfigUserNS(t *testing.T) {
	cfg := buildConfig(testSetup(true))
	if !cfg.Namespaces.Contains(configs.NEWUSER) {
		t.Fatal("no user namespace")
	}
	for _, m := range cfg.UIDMappings {
		if m.HostID == 0 || m.HostID == 65534 || m.Size != 1 {
			t.Fatalf("host root, nobody or a range mapped into the sandbox: %+v", cfg.UIDMappings)
		}
	}
	if cfg.UIDMappings[0].ContainerID != 0 || cfg.UIDMappings[0].HostID != 3032775 {
		t.Fatalf("namespace root not mapped to the sandbox's own id: %+v", cfg.UIDMappings)
	}
	var bound bool
	for _, m := range cfg.Mounts {
		if m.Destination == "/dev/kvm" && m.Source == "/var/cache/dmsandbox/dev/3000007/c-10-232" {
			bound = true
		}
	}
	if !bound {
		t.Fatal("/dev/kvm not bound from the sandbox-owned node")
	}
	for _, d := range cfg.Devices {
		if d.Path == "/dev/kvm" {
			t.Fatal("/dev/kvm also listed as a device: runc would bind the host node over ours")
		}
	}
}

func TestDeviceRulesExactNodes(t *testing.T) {
	rules := deviceCgroupRules(deviceRules(testSetup(false).devices))
	if len(rules) != 3 {
		t.Fatalf("want deny-all plus 2 nodes, got %+v", rules)
	}
	for _, r := range rules[1:] {
		if !r.Allow || r.Type != "c" || r.Major == nil || r.Minor == nil || *r.Major < 0 || *r.Minor < 0 {
			t.Fatalf("rule %+v is not one exact node", r)
		}
	}
	// runc's copy must be the same rules, or it would rewrite ours.
	rc := runcDeviceRules(testSetup(false).devices)
	for i, r := range rules[1:] {
		if string(rc[i+1].Permissions) != r.Access || rc[i+1].Major != *r.Major {
			t.Fatalf("runc rule %+v differs from %+v", rc[i+1], r)
		}
	}
	if first := deviceCgroupRules(nil)[0]; first.Allow || first.Access != "rwm" {
		t.Fatalf("first rule must deny all: %+v", first)
	}
}

func TestFirstFileFD(t *testing.T) {
	if fd := FirstFileFD(Spec{Program: "/usr/bin/qemu-system-x86_64"}); fd != 4 {
		t.Fatalf("QEMU: files from fd %d, want 4 (3 is the QMP socket)", fd)
	}
	if fd := FirstFileFD(Spec{Program: "/usr/bin/qemu-system-x86_64", NoQMP: true}); fd != 3 {
		t.Fatalf("QEMU without QMP: files from fd %d, want 3", fd)
	}
	if fd := FirstFileFD(Spec{Program: "/bin/true"}); fd != 3 {
		t.Fatalf("non-QEMU: files from fd %d, want 3", fd)
	}
}
