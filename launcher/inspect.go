package launcher

import (
	"bufio"
	"fmt"
	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// Inspection is the confinement in force, read from outside the sandbox
// (procfs of the host, cgroupfs): what the kernel says, not what the
// launcher meant to do.
type Inspection struct {
	Name       string            `json:"name"`
	Pid        int               `json:"pid"`
	Uid        []int             `json:"uid"` // real, effective, saved, fs
	Gid        []int             `json:"gid"`
	Groups     []int             `json:"groups"`
	CapEff     string            `json:"cap_eff"`
	CapPrm     string            `json:"cap_prm"`
	CapInh     string            `json:"cap_inh"`
	CapBnd     string            `json:"cap_bnd"`
	CapAmb     string            `json:"cap_amb"`
	NoNewPrivs int               `json:"no_new_privs"`
	Seccomp    int               `json:"seccomp"` // 2 = filter mode
	Filters    int               `json:"seccomp_filters"`
	Namespaces map[string]NSInfo `json:"namespaces"`
	Root       []string          `json:"root"` // top-level entries of /proc/PID/root
	Fds        map[int]string    `json:"fds"`
	Limits     map[string]Limit  `json:"limits"`
	Cgroup     CgroupInfo        `json:"cgroup"`
	Profile    string            `json:"profile"`
	QMPSocket  string            `json:"qmp_socket,omitempty"`
}

// NSInfo compares one namespace of the program with the launcher's own.
type NSInfo struct {
	ID     string `json:"id"`
	Shared bool   `json:"shared_with_host"`
}

// Limit is one line of /proc/PID/limits ("unlimited" kept as a word).
type Limit struct {
	Soft string `json:"soft"`
	Hard string `json:"hard"`
}

// CgroupInfo is the cgroup the program is in and its limits, read from
// the cgroup files.
type CgroupInfo struct {
	Mode   CgroupMode        `json:"mode"`
	Paths  map[string]string `json:"paths"`
	Files  map[string]string `json:"files"` // limit files, e.g. "memory.limit_in_bytes"
	Member bool              `json:"pid_in_cgroup"`
	// DevicePrograms counts the BPF device programs in force on a v2
	// cgroup (v1 lists its rules in devices.list instead).
	DevicePrograms int         `json:"device_programs,omitempty"`
	Stats          CgroupStats `json:"stats"`
}

// Inspect reads the confinement of a live sandbox.
func Inspect(runDir, name string) (*Inspection, error) {
	st, err := ReadState(runDir, name)
	if err != nil {
		return nil, fmt.Errorf("sandbox %q: %w", name, err)
	}
	if st.Pid == 0 {
		return nil, fmt.Errorf("sandbox %q is not started yet", name)
	}
	return inspectPid(st)
}

func inspectPid(st *State) (*Inspection, error) {
	pid := st.Pid
	proc := fmt.Sprintf("/proc/%d", pid)
	in := &Inspection{Name: st.Name, Pid: pid, Profile: st.Profile, QMPSocket: st.QMPSocket,
		Namespaces: map[string]NSInfo{}, Fds: map[int]string{}, Limits: map[string]Limit{}}
	status, err := readKV(proc + "/status")
	if err != nil {
		return nil, err
	}
	in.Uid = ints(status["Uid"])
	in.Gid = ints(status["Gid"])
	in.Groups = ints(status["Groups"])
	in.CapEff, in.CapPrm, in.CapInh = status["CapEff"], status["CapPrm"], status["CapInh"]
	in.CapBnd, in.CapAmb = status["CapBnd"], status["CapAmb"]
	in.NoNewPrivs, _ = strconv.Atoi(status["NoNewPrivs"])
	in.Seccomp, _ = strconv.Atoi(status["Seccomp"])
	in.Filters, _ = strconv.Atoi(status["Seccomp_filters"])
	for _, ns := range []string{"mnt", "pid", "ipc", "uts", "net", "user", "cgroup"} {
		id, err := os.Readlink(proc + "/ns/" + ns)
		if err != nil {
			continue
		}
		own, _ := os.Readlink("/proc/self/ns/" + ns)
		in.Namespaces[ns] = NSInfo{ID: id, Shared: id == own}
	}
	if ents, err := os.ReadDir(proc + "/root"); err == nil {
		for _, e := range ents {
			in.Root = append(in.Root, e.Name())
		}
	}
	if ents, err := os.ReadDir(proc + "/fd"); err == nil {
		for _, e := range ents {
			n, _ := strconv.Atoi(e.Name())
			target, _ := os.Readlink(proc + "/fd/" + e.Name())
			in.Fds[n] = target
		}
	}
	in.Limits, err = readLimits(proc + "/limits")
	if err != nil {
		return nil, err
	}
	in.Cgroup = CgroupInfo{Mode: st.CgroupMode, Paths: st.CgroupPaths, Files: map[string]string{}}
	for sub, dir := range st.CgroupPaths {
		for _, f := range cgroupLimitFiles[sub] {
			if b, err := os.ReadFile(filepath.Join(dir, f)); err == nil {
				in.Cgroup.Files[f] = strings.TrimSpace(string(b))
			}
		}
	}
	if dir, ok := st.CgroupPaths[""]; ok && st.CgroupMode == CgroupV2 {
		in.Cgroup.DevicePrograms, _ = devicePrograms(dir)
	}
	if cg, err := loadCgroup(st.CgroupMode, st.CgroupPaths); err == nil {
		in.Cgroup.Stats, _ = cg.Stats()
		if pids, err := cg.Pids(); err == nil {
			for _, p := range pids {
				if p == pid {
					in.Cgroup.Member = true
				}
			}
		}
	}
	return in, nil
}

// cgroupLimitFiles are the files inspect shows, per v1 subsystem ("" is
// the v2 directory).
var cgroupLimitFiles = map[string][]string{
	"memory":  {"memory.limit_in_bytes", "memory.memsw.limit_in_bytes"},
	"pids":    {"pids.max"},
	"cpu":     {"cpu.cfs_quota_us", "cpu.cfs_period_us", "cpu.shares"},
	"devices": {"devices.list"},
	"":        {"memory.max", "memory.swap.max", "pids.max", "cpu.max", "cpu.weight"},
}

// readKV parses "Key:\tvalue" lines (/proc/PID/status).
func readKV(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok {
			out[k] = strings.TrimSpace(v)
		}
	}
	return out, sc.Err()
}

func ints(s string) []int {
	out := []int{}
	for _, f := range strings.Fields(s) {
		if n, err := strconv.Atoi(f); err == nil {
			out = append(out, n)
		}
	}
	return out
}

// readLimits parses /proc/PID/limits: a header, then lines of a name
// (several words), soft, hard and optional units, in fixed columns.
func readLimits(path string) (map[string]Limit, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	out := map[string]Limit{}
	lines := strings.Split(string(data), "\n")
	for _, line := range lines[1:] {
		if len(line) < 26 {
			continue
		}
		name := strings.TrimSpace(line[:26])
		f := strings.Fields(line[26:])
		if len(f) < 2 {
			continue
		}
		out[name] = Limit{Soft: f[0], Hard: f[1]}
	}
	return out, nil
}

// SortedFds returns the fd numbers in order (for printing).
func (in *Inspection) SortedFds() []int {
	out := make([]int, 0, len(in.Fds))
	for fd := range in.Fds {
		out = append(out, fd)
	}
	sort.Ints(out)
	return out
}

// devicePrograms counts the device programs in effect on a cgroup2
// directory (attached there or inherited).
func devicePrograms(dir string) (int, error) {
	f, err := os.Open(dir)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	res, err := link.QueryPrograms(link.QueryOptions{Target: int(f.Fd()), Attach: ebpf.AttachCGroupDevice,
		QueryFlags: unix.BPF_F_QUERY_EFFECTIVE})
	if err != nil {
		return 0, fmt.Errorf("query device programs of %s: %w", dir, err)
	}
	return len(res.Programs), nil
}
