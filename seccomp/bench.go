package seccomp

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// The seccomp benchmark measures what a compiled filter adds to a syscall.
// A filter cannot be removed once loaded, so every measurement runs in a
// fresh child: the running binary re-executed with benchChildEnv set, which
// this package's init turns into benchChildMain before main runs. The
// parent alternates "no filter" and every filtered mode in each round, so
// the ratios compare runs of the same minute, and prints medians.

const benchChildEnv = "DMSANDBOX_SECCOMP_BENCH_CHILD"

func init() {
	if spec := os.Getenv(benchChildEnv); spec != "" {
		os.Exit(benchChildMain(spec))
	}
}

// harmless are calls with no side effect that every profile allows
// unconditionally; the benchmark picks the one that runs the most filter
// instructions as "late in the chain".
var harmless = []string{"getppid", "getpid", "gettid", "getuid", "geteuid", "getgid", "getegid"}

// benchCall is one syscall the child repeats.
type benchCall struct {
	Label string
	Nr    uintptr
	Args  [3]uintptr
}

// unfilteredCalls is the baseline set: getppid, every harmless call, and
// one ioctl on /dev/null (unfiltered, the request makes no difference:
// /dev/null answers ENOTTY to all).
func unfilteredCalls(fd int) []benchCall {
	calls := []benchCall{{Label: "getppid", Nr: unix.SYS_GETPPID}}
	for _, name := range harmless {
		nr, _ := syscallNumber(name)
		calls = append(calls, benchCall{Label: "late:" + name, Nr: uintptr(nr)})
	}
	calls = append(calls, benchCall{Label: "ioctl", Nr: unix.SYS_IOCTL, Args: [3]uintptr{uintptr(fd), uintptr(unix.TCGETS)}})
	return append(calls, read4k())
}

// zeroFd and readBuf serve the read4k call: read(2) of 4 KiB from
// /dev/zero, a call with real work in it, like QEMU's I/O paths.
var (
	zeroFd  = -1
	readBuf = make([]byte, 4096)
)

func read4k() benchCall {
	if zeroFd < 0 {
		fd, err := unix.Open("/dev/zero", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err == nil {
			zeroFd = fd
		}
	}
	return benchCall{Label: "read4k", Nr: unix.SYS_READ, Args: [3]uintptr{uintptr(zeroFd), uintptr(unsafe.Pointer(&readBuf[0])), uintptr(len(readBuf))}}
}

// baselineLabel maps a filtered call's label to its unfiltered one.
func baselineLabel(label string) string {
	if strings.HasPrefix(label, "ioctl:") {
		return "ioctl"
	}
	return label
}

// benchCallsFor picks, for profile p in layout l: getppid; the harmless
// call with the most filter steps ("late in the chain"); and
// ioctl(/dev/null, R) for the allowed request R with the most steps (the
// KVM_RUN path: its arguments are checked on every call, so the kernel's
// per-syscall allow cache cannot skip the filter). fd is the /dev/null
// descriptor the child holds.
func benchCallsFor(p *Profile, l Layout, fd int) ([]benchCall, error) {
	prog, err := p.BPFLayout(l)
	if err != nil {
		return nil, err
	}
	steps := func(d Data) int {
		_, n, err := EvaluateSteps(prog, d)
		if err != nil {
			return -1
		}
		return n
	}
	calls := []benchCall{{Label: "getppid", Nr: unix.SYS_GETPPID}}
	late, lateSteps := "", -1
	for _, name := range harmless {
		nr, _ := syscallNumber(name)
		if n := steps(sysData(uintptr(nr))); n > lateSteps {
			late, lateSteps = name, n
		}
	}
	nr, _ := syscallNumber(late)
	calls = append(calls, benchCall{Label: "late:" + late, Nr: uintptr(nr)})
	req, reqName, reqSteps := uint64(0), "", -1
	for _, r := range p.Rules().For("ioctl") {
		d := sysData(unix.SYS_IOCTL, uint64(fd), r.Args[0].Value)
		if ret, _ := Evaluate(prog, d); DecodeVerdict(ret).Action != "allow" {
			continue
		}
		if n := steps(d); n > reqSteps {
			req, reqName, reqSteps = r.Args[0].Value, r.Args[0].Text, n
		}
	}
	if reqName != "" {
		calls = append(calls, benchCall{Label: "ioctl:" + reqName, Nr: unix.SYS_IOCTL, Args: [3]uintptr{uintptr(fd), uintptr(req)}})
	}
	calls = append(calls, read4k())
	// KVM_RUN is the hot ioctl of a KVM guest: one call per VM exit.
	if run, ok := ioctlRequests["kvm"]["KVM_RUN"]; ok && reqName != "KVM_RUN" {
		d := sysData(unix.SYS_IOCTL, uint64(fd), run)
		if ret, _ := Evaluate(prog, d); DecodeVerdict(ret).Action == "allow" {
			calls = append(calls, benchCall{Label: "ioctl:KVM_RUN", Nr: unix.SYS_IOCTL, Args: [3]uintptr{uintptr(fd), uintptr(run)}})
		}
	}
	return calls, nil
}

// benchChildMain: spec is "none" or "profile/layout", then ",N" calls.
func benchChildMain(spec string) int {
	mode, nstr, _ := strings.Cut(spec, ",")
	n, err := strconv.Atoi(nstr)
	if err != nil || n <= 0 {
		fmt.Fprintln(os.Stderr, "bench child: bad spec", spec)
		return 2
	}
	fd, err := unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench child:", err)
		return 2
	}
	var calls []benchCall
	if mode == "none" || mode == "allow-all" {
		calls = unfilteredCalls(fd)
		if mode == "allow-all" {
			// The fixed cost of having any filter: one RET ALLOW.
			err = loadProgram(mode, []bpf.RawInstruction{{Op: unix.BPF_RET | unix.BPF_K, K: unix.SECCOMP_RET_ALLOW}})
		}
	} else {
		name, layout, _ := strings.Cut(mode, "/")
		var p *Profile
		if p, err = Load(name); err == nil {
			l := map[string]Layout{"runc": LayoutRunc, "linear": LayoutLinear, "tree": LayoutTree}[layout]
			if calls, err = benchCallsFor(p, l, fd); err == nil {
				err = p.installLayout(l)
			}
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench child:", err)
		return 2
	}
	for _, c := range calls {
		for i := 0; i < n/10; i++ { // warm caches and the CPU frequency
			unix.RawSyscall(c.Nr, c.Args[0], c.Args[1], c.Args[2])
		}
		start := time.Now()
		for i := 0; i < n; i++ {
			unix.RawSyscall(c.Nr, c.Args[0], c.Args[1], c.Args[2])
		}
		fmt.Printf("%s %.2f\n", c.Label, float64(time.Since(start).Nanoseconds())/float64(n))
	}
	return 0
}

// BenchConfig sets the size of a run.
type BenchConfig struct {
	Rounds int // children per mode; the median is reported
	Calls  int // syscalls per measurement
}

// benchModes are the filtered modes, in the order they run each round.
func benchModes() []string {
	var m []string
	for _, n := range Names() {
		m = append(m, n+"/runc", n+"/linear")
	}
	return m
}

// RunBench runs the benchmark with the running executable as the child and
// writes a table: per mode and call, the median ns/call and its ratio to
// the unfiltered median of the same call (getppid, late and ioctl are each
// compared with their unfiltered selves).
func RunBench(w io.Writer, cfg BenchConfig) error {
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("seccomp bench: %w", err)
	}
	modes := append([]string{"none", "allow-all"}, benchModes()...)
	results := map[string]map[string][]float64{} // mode -> label -> ns
	for r := 0; r < cfg.Rounds; r++ {
		for _, m := range modes {
			cmd := exec.Command(exe)
			cmd.Env = append(os.Environ(), benchChildEnv+"="+m+","+strconv.Itoa(cfg.Calls))
			out, err := cmd.Output()
			if err != nil {
				return fmt.Errorf("seccomp bench child %s: %w", m, err)
			}
			if results[m] == nil {
				results[m] = map[string][]float64{}
			}
			for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
				label, v, ok := strings.Cut(line, " ")
				f, err := strconv.ParseFloat(v, 64)
				if !ok || err != nil {
					return fmt.Errorf("seccomp bench child %s: bad line %q", m, line)
				}
				results[m][label] = append(results[m][label], f)
			}
		}
	}
	base, anyf := map[string]float64{}, map[string]float64{}
	for label, v := range results["none"] {
		base[label] = median(v)
	}
	for label, v := range results["allow-all"] {
		anyf[label] = median(v)
	}
	fmt.Fprintf(w, "seccomp: per-syscall cost, median of %d children x %d calls, all modes alternated in one run\n", cfg.Rounds, cfg.Calls)
	fmt.Fprintf(w, "ratio = mode / no filter; vs-any = mode / a one-instruction RET_ALLOW filter (what the program itself adds)\n")
	fmt.Fprintf(w, "%-18s %-6s %-34s %6s %9s %7s %7s\n", "profile", "layout", "call", "steps", "ns/call", "ratio", "vs-any")
	for _, m := range []string{"none", "allow-all"} {
		for _, label := range sortedKeys(results[m]) {
			if strings.HasPrefix(label, "late:") && !lateUsed(label) {
				continue
			}
			med := median(results[m][label])
			fmt.Fprintf(w, "%-18s %-6s %-34s %6s %9.1f %7.3f %7.3f\n", m, "-", label, "-", med, med/base[label], med/anyf[label])
		}
	}
	for _, m := range modes[2:] {
		name, layout, _ := strings.Cut(m, "/")
		p, err := Load(name)
		if err != nil {
			return err
		}
		l := map[string]Layout{"runc": LayoutRunc, "linear": LayoutLinear}[layout]
		calls, err := benchCallsFor(p, l, 3)
		if err != nil {
			return err
		}
		prog, _ := p.BPFLayout(l)
		for _, c := range calls {
			_, steps, _ := EvaluateSteps(prog, sysData(c.Nr, uint64(c.Args[0]), uint64(c.Args[1])))
			med := median(results[m][c.Label])
			bl := baselineLabel(c.Label)
			fmt.Fprintf(w, "%-18s %-6s %-34s %6d %9.1f %7.3f %7.3f\n", name, layout, c.Label, steps, med, med/base[bl], med/anyf[bl])
		}
	}
	return nil
}

// installLayout is Install with an explicit layout (benchmarks only).
func (p *Profile) installLayout(l Layout) error {
	if l == LayoutRunc {
		return p.Install()
	}
	prog, err := p.BPFLayout(l)
	if err != nil {
		return err
	}
	return loadProgram(p.name, prog)
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func sortedKeys(m map[string][]float64) []string {
	var k []string
	for x := range m {
		k = append(k, x)
	}
	sort.Strings(k)
	return k
}

// lateUsed reports whether some profile picked this harmless call; the
// others are measured unfiltered but not printed.
func lateUsed(label string) bool {
	for _, n := range Names() {
		p, err := Load(n)
		if err != nil {
			continue
		}
		for _, l := range []Layout{LayoutRunc, LayoutLinear} {
			calls, err := benchCallsFor(p, l, 3)
			if err != nil {
				continue
			}
			for _, c := range calls {
				if c.Label == label {
					return true
				}
			}
		}
	}
	return false
}
