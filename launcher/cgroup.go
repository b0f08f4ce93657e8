package launcher

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	cgroups "github.com/containerd/cgroups/v3"
	"github.com/containerd/cgroups/v3/cgroup1"
	"github.com/containerd/cgroups/v3/cgroup2"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// This file is the only cgroup writer of the launcher: it creates the
// sandbox's cgroup, writes every limit (device rules included), reads
// statistics and kills. libcontainer is given the same relative path and
// only joins it (writes the init pid into cgroup.procs).

// CgroupMode is the cgroup layout a sandbox's cgroup lives in.
type CgroupMode string

const (
	CgroupV1 CgroupMode = "v1" // legacy or hybrid: controllers on v1 hierarchies
	CgroupV2 CgroupMode = "v2" // unified: controllers on the cgroup2 hierarchy
)

// DetectCgroupMode chooses v2 only when the unified hierarchy holds the
// controllers; a hybrid host (v1 controllers, an empty cgroup2 at
// /sys/fs/cgroup/unified) is driven through v1.
func DetectCgroupMode() CgroupMode {
	if cgroups.Mode() == cgroups.Unified {
		return CgroupV2
	}
	return CgroupV1
}

// DeviceRule allows access to one device node in the sandbox's cgroup.
type DeviceRule struct {
	Type         byte // 'c' or 'b'
	Major, Minor int64
	Access       string // subset of "rwm"
}

// Cgroup is a sandbox's cgroup on either layout.
type Cgroup struct {
	Mode CgroupMode
	// Rel is the path relative to the launcher's own cgroup on every
	// hierarchy (parent/NAME); libcontainer joins the same relative path.
	Rel string
	// Paths are the absolute directories, per v1 subsystem ("" for v2).
	Paths map[string]string

	v1 cgroup1.Cgroup
	v2 *cgroup2.Manager
}

// hybridUnified keys, in Cgroup.Paths of a v1 cgroup, the directory runc
// makes on a hybrid host's cgroup2 hierarchy.
const hybridUnified = "unified"

// joinedOnly prefixes, in Cgroup.Paths of a v1 cgroup, the directories
// runc makes when it joins a v1 hierarchy containerd/cgroups does not
// manage (misc; hugetlb on a host without huge pages, such as a Xen PV
// dom0): no limit is set there, but the directory must go with the
// sandbox. Found in the Xen rig's dom0.
const joinedOnly = "joined:"

// isRuncOnly tells the Paths keys containerd/cgroups does not load.
func isRuncOnly(sub string) bool {
	return sub == hybridUnified || strings.HasPrefix(sub, joinedOnly)
}

// cgroupRoot is the cgroupfs mount point; a variable so tests can point
// at a fake tree.
var cgroupRoot = "/sys/fs/cgroup"

// planCgroup computes where the sandbox's cgroup will be, without
// creating anything: the paths go into state.json before the cgroup
// exists, so that a launcher killed at any point leaves a record the
// reaper (or the next launcher of the name) can clean up from.
func planCgroup(parent, name string) (*Cgroup, error) {
	rel := filepath.Join(parent, name)
	c := &Cgroup{Mode: DetectCgroupMode(), Rel: rel, Paths: map[string]string{}}
	switch c.Mode {
	case CgroupV1:
		subsystems, err := cgroup1.Default()
		if err != nil {
			return nil, fmt.Errorf("cgroup v1 hierarchies: %w", err)
		}
		path := cgroup1.NestedPath(rel)
		for _, s := range subsystems {
			if p, err := path(s.Name()); err == nil {
				c.Paths[string(s.Name())] = filepath.Join(cgroupRoot, string(s.Name()), p)
			}
		}
		if err := planJoinedOnly(c.Paths, rel); err != nil {
			return nil, err
		}
		for _, required := range []cgroup1.Name{cgroup1.Memory, cgroup1.Pids, cgroup1.Cpu, cgroup1.Devices, cgroup1.Freezer} {
			if _, ok := c.Paths[string(required)]; !ok {
				return nil, fmt.Errorf("cgroup v1 controller %s is not available", required)
			}
		}
		// On a hybrid host runc also joins the same relative path on
		// the (controller-less) cgroup2 hierarchy; record it so that
		// Delete removes it too.
		if cgroups.Mode() == cgroups.Hybrid {
			if own, err := ownV2Group(); err == nil {
				c.Paths[hybridUnified] = filepath.Join(cgroupRoot, "unified", own, rel)
			}
		}
	case CgroupV2:
		// Absolute, at the top of the hierarchy (like libvirt's
		// machine.slice): under the launcher's own cgroup, which on a
		// systemd host holds the launcher itself, the kernel refuses to
		// enable controllers for children (no internal processes).
		c.Rel = "/" + rel
		c.Paths[""] = filepath.Join(cgroupRoot, rel)
	}
	return c, nil
}

// create makes the planned cgroup with every limit set. It fails if the
// cgroup exists: that is a leftover or a sandbox of the same name, and
// either way not ours to join.
func (c *Cgroup) create(lim CgroupLimits, devs []DeviceRule) error {
	for sub, p := range c.Paths {
		if isRuncOnly(sub) {
			continue
		}
		if _, err := os.Stat(p); err == nil {
			return fmt.Errorf("cgroup %s exists already", p)
		}
	}
	switch c.Mode {
	case CgroupV1:
		cg, err := cgroup1.New(cgroup1.NestedPath(c.Rel), v1Resources(lim, devs))
		if err != nil {
			return fmt.Errorf("create cgroup %s: %w", c.Rel, err)
		}
		c.v1 = cg
	case CgroupV2:
		group := strings.TrimPrefix(c.Paths[""], cgroupRoot)
		m, err := cgroup2.NewManager(cgroupRoot, group, v2Resources(lim, devs))
		if err != nil {
			return fmt.Errorf("create cgroup %s: %w", group, err)
		}
		c.v2 = m
	}
	return nil
}

// exists tells whether any directory of the cgroup is there.
func (c *Cgroup) exists() bool {
	for _, p := range c.Paths {
		if _, err := os.Stat(p); err == nil {
			return true
		}
	}
	return false
}

// loadCgroup reopens a sandbox cgroup from the absolute paths recorded in
// its state file (used by the reaper and by ps/inspect).
func loadCgroup(mode CgroupMode, paths map[string]string) (*Cgroup, error) {
	c := &Cgroup{Mode: mode, Paths: paths}
	switch mode {
	case CgroupV1:
		rels := map[string]string{}
		for sub, abs := range paths {
			if isRuncOnly(sub) {
				continue
			}
			rels[sub] = strings.TrimPrefix(abs, filepath.Join(cgroupRoot, sub))
		}
		cg, err := cgroup1.Load(func(n cgroup1.Name) (string, error) {
			if r, ok := rels[string(n)]; ok {
				return r, nil
			}
			return "", cgroup1.ErrControllerNotActive
		})
		if err != nil {
			return nil, fmt.Errorf("load cgroup %v: %w", paths, err)
		}
		c.v1 = cg
	case CgroupV2:
		group := strings.TrimPrefix(paths[""], cgroupRoot)
		m, err := cgroup2.Load(group, cgroup2.WithMountpoint(cgroupRoot))
		if err != nil {
			return nil, fmt.Errorf("load cgroup %s: %w", paths[""], err)
		}
		c.v2 = m
	default:
		return nil, fmt.Errorf("unknown cgroup mode %q", mode)
	}
	return c, nil
}

// planJoinedOnly records, under joinedOnly keys, where runc will make the
// sandbox's directory in each mounted single-controller v1 hierarchy
// (named ones too) that paths does not cover yet: runc nests rel under
// this process's own cgroup in each hierarchy it joins.
func planJoinedOnly(paths map[string]string, rel string) error {
	data, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return fmt.Errorf("cgroup v1 hierarchies: %w", err)
	}
	joinedOnlyPaths(paths, string(data), rel)
	return nil
}

// joinedOnlyPaths is planJoinedOnly over the text of /proc/self/cgroup.
func joinedOnlyPaths(paths map[string]string, self, rel string) {
	for _, line := range strings.Split(self, "\n") {
		f := strings.SplitN(line, ":", 3)
		if len(f) != 3 || f[1] == "" || strings.Contains(f[1], ",") {
			continue // cgroup2, or a co-mounted hierarchy (cpu,cpuacct: containerd's)
		}
		dir := strings.TrimPrefix(f[1], "name=")
		if _, ok := paths[dir]; ok {
			continue
		}
		if st, err := os.Stat(filepath.Join(cgroupRoot, dir)); err != nil || !st.IsDir() {
			continue
		}
		paths[joinedOnly+dir] = filepath.Join(cgroupRoot, dir, f[2], rel)
	}
}

func ownV2Group() (string, error) {
	data, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if p, ok := strings.CutPrefix(line, "0::"); ok {
			return p, nil
		}
	}
	return "", errors.New("no cgroup2 entry in /proc/self/cgroup")
}

func v1Resources(lim CgroupLimits, devs []DeviceRule) *specs.LinuxResources {
	mem := lim.MemoryBytes
	swap := lim.MemoryBytes // memsw == mem: no swap beyond the memory limit
	quota := lim.CPUQuotaUS
	r := &specs.LinuxResources{
		Memory: &specs.LinuxMemory{Limit: &mem},
		Pids:   &specs.LinuxPids{Limit: &lim.Pids},
		CPU:    &specs.LinuxCPU{Shares: &lim.CPUShares},
	}
	if _, err := os.Stat(filepath.Join(cgroupRoot, "memory", "memory.memsw.limit_in_bytes")); err == nil {
		r.Memory.Swap = &swap
	}
	if quota > 0 {
		r.CPU.Quota = &quota
		r.CPU.Period = &lim.CPUPeriodUS
	}
	r.Devices = deviceCgroupRules(devs)
	return r
}

func v2Resources(lim CgroupLimits, devs []DeviceRule) *cgroup2.Resources {
	mem := lim.MemoryBytes
	var swap int64 // no swap
	// cpu.weight from shares, as runc converts (1..10000).
	weight := 1 + ((lim.CPUShares-2)*9999)/262142
	r := &cgroup2.Resources{
		Memory: &cgroup2.Memory{Max: &mem, Swap: &swap},
		Pids:   &cgroup2.Pids{Max: lim.Pids},
		CPU:    &cgroup2.CPU{Weight: &weight},
	}
	if lim.CPUQuotaUS > 0 {
		q := lim.CPUQuotaUS
		r.CPU.Max = cgroup2.NewCPUMax(&q, &lim.CPUPeriodUS)
	}
	r.Devices = deviceCgroupRules(devs)
	return r
}

// deviceCgroupRules denies every device, then allows exactly the nodes
// the sandbox was given.
func deviceCgroupRules(devs []DeviceRule) []specs.LinuxDeviceCgroup {
	// Type "a" and wildcard numbers spelled out: cgroup2's device
	// program compiler rejects an empty type and dereferences the numbers.
	any := int64(-1)
	out := []specs.LinuxDeviceCgroup{{Allow: false, Type: "a", Major: &any, Minor: &any, Access: "rwm"}}
	for _, d := range devs {
		major, minor := d.Major, d.Minor
		out = append(out, specs.LinuxDeviceCgroup{Allow: true, Type: string(d.Type),
			Major: &major, Minor: &minor, Access: d.Access})
	}
	return out
}

// Pids lists every process in the cgroup.
func (c *Cgroup) Pids() ([]int, error) {
	var out []int
	switch c.Mode {
	case CgroupV1:
		procs, err := c.v1.Processes(cgroup1.Pids, true)
		if err != nil {
			return nil, err
		}
		for _, p := range procs {
			out = append(out, p.Pid)
		}
	case CgroupV2:
		procs, err := c.v2.Procs(true)
		if err != nil {
			return nil, err
		}
		for _, p := range procs {
			out = append(out, int(p))
		}
	}
	return out, nil
}

// Kill SIGKILLs every process of the cgroup and waits until it is empty.
// On v2 cgroup.kill does it in the kernel, atomically. On v1 the processes
// are listed and killed until none is left; the v1 freezer is not used: a
// freeze can stay FREEZING for good on a task in uninterruptible sleep
// (seen with runc's init interrupted mid-setup), a frozen task cannot die,
// and containerd's Freeze waits without a deadline. A forking program
// cannot outrun the loop: pids.max bounds it and no profile allows fork.
func (c *Cgroup) Kill(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		pids, err := c.Pids()
		if err != nil {
			return fmt.Errorf("kill cgroup %s: %w", c.Rel, err)
		}
		if len(pids) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("kill cgroup %s: %d processes left after %v (%v)", c.Rel, len(pids), timeout, pids)
		}
		switch c.Mode {
		case CgroupV1:
			for _, pid := range pids {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		case CgroupV2:
			// Falls back to listing and killing on kernels without
			// cgroup.kill (before 5.14).
			_ = c.v2.Kill()
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Delete removes the (empty) cgroup directories. A directory already gone
// is not an error.
func (c *Cgroup) Delete() error {
	var err error
	switch c.Mode {
	case CgroupV1:
		err = c.v1.Delete()
		for sub, p := range c.Paths {
			if !isRuncOnly(sub) {
				continue
			}
			if rerr := os.Remove(p); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
				err = errors.Join(err, rerr)
			}
		}
	case CgroupV2:
		err = c.v2.Delete()
	}
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("delete cgroup %s: %w", c.Rel, err)
	}
	return nil
}

// Stats are the figures ps/inspect show.
type CgroupStats struct {
	MemoryUsage uint64 `json:"memory_usage"`
	MemoryLimit uint64 `json:"memory_limit"`
	PidsCurrent uint64 `json:"pids_current"`
	PidsLimit   uint64 `json:"pids_limit"`
}

// Stats reads memory and pids usage and limits.
func (c *Cgroup) Stats() (CgroupStats, error) {
	var s CgroupStats
	switch c.Mode {
	case CgroupV1:
		m, err := c.v1.Stat(cgroup1.IgnoreNotExist)
		if err != nil {
			return s, err
		}
		if m.Memory != nil && m.Memory.Usage != nil {
			s.MemoryUsage, s.MemoryLimit = m.Memory.Usage.Usage, m.Memory.Usage.Limit
		}
		if m.Pids != nil {
			s.PidsCurrent, s.PidsLimit = m.Pids.Current, m.Pids.Limit
		}
	case CgroupV2:
		m, err := c.v2.Stat()
		if err != nil {
			return s, err
		}
		if m.Memory != nil {
			s.MemoryUsage, s.MemoryLimit = m.Memory.Usage, m.Memory.UsageLimit
		}
		if m.Pids != nil {
			s.PidsCurrent, s.PidsLimit = m.Pids.Current, m.Pids.Limit
		}
	}
	return s, nil
}
