package launcher

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/opencontainers/cgroups"
	// Registers the device-rule setter runc needs to verify the rules.
	_ "github.com/opencontainers/cgroups/devices"
	devconfig "github.com/opencontainers/cgroups/devices/config"
	"github.com/opencontainers/runc/libcontainer"
	"github.com/opencontainers/runc/libcontainer/configs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// This file is the only importer of runc's libcontainer. It turns a
// prepared sandbox into a configs.Config and starts the program.

// maskedPaths are hidden in the sandbox's /proc (a file masked by
// /dev/null, a directory by an empty read-only tmpfs): kernel memory,
// keys, symbol addresses and hardware details a device model never reads.
// /proc cannot be mounted with subset=pid, which would hide all of them at
// once: runc's init reads /proc/sys/kernel/cap_last_cap after mounting it.
var maskedPaths = []string{"/proc/kcore", "/proc/keys", "/proc/kallsyms", "/proc/sysrq-trigger",
	"/proc/timer_list", "/proc/sched_debug", "/proc/acpi", "/proc/scsi", "/proc/latency_stats",
	"/proc/kmsg", "/proc/kpagecount", "/proc/kpageflags", "/proc/kpagecgroup", "/proc/vmallocinfo",
	"/proc/iomem", "/proc/ioports", "/proc/modules", "/proc/interrupts"}

var readonlyPaths = []string{"/proc/sys", "/proc/bus", "/proc/fs", "/proc/irq"}

// containerSetup is everything the container needs, prepared by Launch.
type containerSetup struct {
	name         string
	stateRoot    string // libcontainer's state directory root
	rootfs       string
	uid          uint32
	nsRootUID    uint32 // host id of the user namespace's root (Config.NSRootUID)
	userns       bool
	cgroupRel    string
	devices      []devNode
	privateNodes map[string]string // device path -> host node owned by uid (userns only)
	rlimits      []configs.Rlimit
	seccomp      *configs.Seccomp
	tmpSize      string
	sysView      string   // synthetic /sys for VFIO devices (vfio.go), or ""
	scaffolds    []string // tmpfs mount points holding image nodes (images.go)
}

// buildConfig writes down the confinement. Order matters only where
// noted; runc applies it in its own fixed order (namespaces, mounts,
// pivot_root, read-only remount, rlimits, no_new_privs, capabilities,
// uid, seccomp, execve).
func buildConfig(s *containerSetup) *configs.Config {
	mountFlags := unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC
	cfg := &configs.Config{
		Rootfs: s.rootfs,
		// The cached root is shared by every sandbox: never writable.
		Readonlyfs: true,
		// Every capability dropped, the bounding set included: an empty
		// Capabilities struct drops all five sets.
		Capabilities:    &configs.Capabilities{},
		NoNewPrivileges: true,
		// runc sets this on its bootstrap process only: the clone that
		// becomes the program does not inherit it (measured: a QEMU
		// outlives a SIGKILL of both launcher and reaper). It is kept as
		// a second line behind the reaper for runc's setup window; the
		// reaper is what ends the program when the launcher dies.
		ParentDeathSignal: int(unix.SIGKILL),
		Namespaces: configs.Namespaces{
			{Type: configs.NEWNS}, {Type: configs.NEWPID}, {Type: configs.NEWIPC},
			{Type: configs.NEWUTS}, {Type: configs.NEWNET}, {Type: configs.NEWCGROUP},
		},
		Hostname: s.name,
		Mounts: []*configs.Mount{
			// hidepid=invisible: only the sandbox's own processes exist
			// in its pid namespace anyway; this also hides another uid's
			// should one ever appear.
			{Source: "proc", Destination: "/proc", Device: "proc", Flags: mountFlags,
				Data: "hidepid=invisible"},
			{Source: "tmpfs", Destination: "/dev", Device: "tmpfs",
				Flags: unix.MS_NOSUID | unix.MS_NOEXEC | unix.MS_STRICTATIME, Data: "mode=755,size=64k"},
			{Source: "tmpfs", Destination: "/tmp", Device: "tmpfs", Flags: mountFlags,
				Data: fmt.Sprintf("mode=700,uid=%d,gid=%d,size=%s", s.uid, s.uid, s.tmpSize)},
		},
		MaskPaths:     maskedPaths,
		ReadonlyPaths: readonlyPaths,
		// libcontainer joins the cgroup createCgroup made (same relative
		// path, nested under the launcher's own cgroup) and sets no limit
		// of its own: Resources is empty but for the device rules, which
		// runc refuses to start without. They are the very rules
		// createCgroup wrote, so runc's v1 devices controller computes an
		// empty transition and writes nothing (on v2 it replaces the
		// device program with an identical one).
		Cgroups: &cgroups.Cgroup{
			Path:      s.cgroupRel,
			Resources: &cgroups.Resources{Devices: runcDeviceRules(s.devices)},
		},
		Rlimits: s.rlimits,
		Seccomp: s.seccomp,
		Version: specs.Version,
	}
	// Scaffolds for Spec.Images: runc creates the image path's
	// directories and its device node in them (devices come after
	// mounts, and these come before the user namespace's node binds).
	// Not nodev: they exist to hold a node. The directories are root's
	// 0755; the program can create nothing in them.
	for _, mp := range s.scaffolds {
		cfg.Mounts = append(cfg.Mounts, &configs.Mount{Source: "tmpfs", Destination: mp, Device: "tmpfs",
			Flags: unix.MS_NOSUID | unix.MS_NOEXEC, Data: "mode=755,size=64k,nr_inodes=256"})
	}
	if s.sysView != "" {
		cfg.Mounts = append(cfg.Mounts, &configs.Mount{Source: s.sysView, Destination: "/sys", Device: "bind",
			Flags: unix.MS_BIND | unix.MS_RDONLY | mountFlags})
	}
	for _, d := range s.devices {
		dev := &devconfig.Device{
			Rule: devconfig.Rule{Type: devconfig.Type(d.Type), Major: d.Major, Minor: d.Minor,
				Permissions: "rwm", Allow: true},
			Path: d.Path, FileMode: d.Mode,
		}
		if d.Private {
			dev.Uid, dev.Gid = s.uid, s.uid
		}
		if s.userns {
			if host, ok := s.privateNodes[d.Path]; ok {
				// runc would bind the host node with its host owner;
				// bind our node owned by the sandbox uid instead.
				cfg.Mounts = append(cfg.Mounts, &configs.Mount{Source: host, Destination: d.Path,
					Device: "bind", Flags: unix.MS_BIND | unix.MS_NOSUID | unix.MS_NOEXEC})
				continue
			}
		}
		cfg.Devices = append(cfg.Devices, dev)
	}
	if s.userns {
		cfg.Namespaces = append(cfg.Namespaces, configs.Namespace{Type: configs.NEWUSER})
		// runc's init must be root inside the namespace while it sets up
		// mounts; that root maps to an unprivileged host id of this
		// sandbox alone, which no program ever runs as. The program runs
		// as its own uid, mapped to itself, so setuid(0) inside fails as
		// it would outside.
		cfg.UIDMappings = []configs.IDMap{{ContainerID: 0, HostID: int64(s.nsRootUID), Size: 1},
			{ContainerID: int64(s.uid), HostID: int64(s.uid), Size: 1}}
		cfg.GIDMappings = []configs.IDMap{{ContainerID: 0, HostID: int64(s.nsRootUID), Size: 1},
			{ContainerID: int64(s.uid), HostID: int64(s.uid), Size: 1}}
	}
	return cfg
}

// runcDeviceRules mirrors deviceCgroupRules in runc's types: deny all,
// then the same access as deviceRules on each node.
func runcDeviceRules(nodes []devNode) []*devconfig.Rule {
	out := []*devconfig.Rule{{Type: devconfig.WildcardDevice, Major: devconfig.Wildcard,
		Minor: devconfig.Wildcard, Permissions: "rwm", Allow: false}}
	for _, d := range nodes {
		out = append(out, &devconfig.Rule{Type: devconfig.Type(d.Type), Major: d.Major, Minor: d.Minor,
			Permissions: "rwm", Allow: true})
	}
	return out
}

// runningContainer is a started program.
type runningContainer struct {
	c    *libcontainer.Container
	proc *libcontainer.Process
}

// startContainer creates the container and starts the program in it.
// files become fds 3.. of the program; stdio is passed as is.
func startContainer(s *containerSetup, argv, env []string, files []*os.File, stdin, stdout, stderr *os.File) (*runningContainer, error) {
	cfg := buildConfig(s)
	if err := os.MkdirAll(s.stateRoot, 0o700); err != nil {
		return nil, fmt.Errorf("container state dir: %w", err)
	}
	c, err := libcontainer.Create(s.stateRoot, s.name, cfg)
	if err != nil {
		return nil, fmt.Errorf("create container: %w", err)
	}
	p := &libcontainer.Process{
		Args:   argv,
		Env:    env,
		UID:    int(s.uid),
		GID:    int(s.uid),
		Cwd:    "/",
		Stdin:  stdin,
		Stdout: stdout,
		Stderr: stderr,
		// AdditionalGroups nil: supplementary groups are cleared.
		ExtraFiles: files,
		Init:       true,
	}
	if err := c.Run(p); err != nil {
		// Nothing to keep: the caller kills the cgroup and removes the
		// run directory, which holds the container state.
		os.RemoveAll(filepath.Join(s.stateRoot, s.name))
		return nil, fmt.Errorf("start %s: %w", argv[0], err)
	}
	return &runningContainer{c: c, proc: p}, nil
}

// Pid is the program's host pid.
func (r *runningContainer) Pid() int {
	pid, _ := r.proc.Pid()
	return pid
}

// Signal forwards sig to the program.
func (r *runningContainer) Signal(sig os.Signal) error { return r.proc.Signal(sig) }

// Wait waits for the program to exit.
func (r *runningContainer) Wait() (*os.ProcessState, error) { return r.proc.Wait() }

// rlimits turns the config into runc's form. MEMLOCK is set only when
// configured (VFIO), since raising it above the launcher's hard limit
// needs CAP_SYS_RESOURCE and would fail the whole start.
func rlimits(r RlimitConfig) []configs.Rlimit {
	out := []configs.Rlimit{
		{Type: unix.RLIMIT_FSIZE, Hard: r.FSize, Soft: r.FSize},
		{Type: unix.RLIMIT_CORE, Hard: r.Core, Soft: r.Core},
		{Type: unix.RLIMIT_MSGQUEUE, Hard: r.MsgQueue, Soft: r.MsgQueue},
		{Type: unix.RLIMIT_LOCKS, Hard: r.Locks, Soft: r.Locks},
		{Type: unix.RLIMIT_NPROC, Hard: r.NProc, Soft: r.NProc},
		{Type: unix.RLIMIT_NOFILE, Hard: r.NoFile, Soft: r.NoFile},
	}
	if r.MemLock > 0 {
		out = append(out, configs.Rlimit{Type: unix.RLIMIT_MEMLOCK, Hard: r.MemLock, Soft: r.MemLock})
	}
	return out
}
