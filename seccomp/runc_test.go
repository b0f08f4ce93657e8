package seccomp

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"unsafe"

	runcseccomp "github.com/opencontainers/runc/libcontainer/seccomp"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// The runc equivalence test: a re-executed child hands p.Config() to runc's
// own seccomp.InitSeccomp (what runc init does before exec), and the parent
// reads the program the kernel then holds for that thread with
// PTRACE_SECCOMP_GET_FILTER. BPF() must decide every probe exactly as that
// program does, and its libseccomp part must be identical instruction by
// instruction (only the -ENOSYS stub is laid out differently).
const runcChildEnv = "DMSANDBOX_SECCOMP_RUNC_CHILD"

func init() {
	spec := os.Getenv(runcChildEnv)
	if spec == "" {
		return
	}
	os.Exit(runcChildMain(spec))
}

// runcProfile loads "name[:log][:pid1]".
func runcProfile(spec string) (*Profile, error) {
	f := strings.Split(spec, ":")
	var opts []Option
	for _, o := range f[1:] {
		switch o {
		case "log":
			opts = append(opts, LogMode())
		case "pid1":
			opts = append(opts, SelfPID(1))
		}
	}
	return Load(f[0], opts...)
}

func runcChildMain(spec string) int {
	p, err := runcProfile(spec)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	runtime.LockOSThread() // the filter is loaded on this thread only
	if _, err := runcseccomp.InitSeccomp(p.Config()); err != nil {
		fmt.Fprintln(os.Stderr, "runc InitSeccomp:", err)
		return 2
	}
	fmt.Printf("%d\n", unix.Gettid())
	var b [1]byte
	unix.Read(0, b[:]) // block on this thread until the parent is done
	return 0
}

func readRuncFilter(t *testing.T, name string) []bpf.RawInstruction {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), runcChildEnv+"="+name)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { stdin.Close(); cmd.Process.Kill(); cmd.Wait() }()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatalf("runc child: %v", err)
	}
	tid, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil {
		t.Fatalf("runc child said %q", line)
	}
	return ptraceFilter(t, tid)
}

// ptraceFilter reads the newest seccomp filter of task tid
// (PTRACE_SECCOMP_GET_FILTER, CAP_SYS_ADMIN) and leaves the task running.
func ptraceFilter(t *testing.T, tid int) []bpf.RawInstruction {
	t.Helper()
	// ptrace requests must come from the thread that attached.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := unix.PtraceSeize(tid); err != nil {
		t.Fatalf("ptrace seize %d: %v", tid, err)
	}
	defer unix.PtraceDetach(tid)
	if _, _, e := unix.Syscall6(unix.SYS_PTRACE, unix.PTRACE_INTERRUPT, uintptr(tid), 0, 0, 0, 0); e != 0 {
		t.Fatalf("ptrace interrupt: %v", e)
	}
	var ws unix.WaitStatus
	if _, err := unix.Wait4(tid, &ws, unix.WALL, nil); err != nil {
		t.Fatalf("wait4 %d: %v", tid, err)
	}
	n, _, e := unix.Syscall6(unix.SYS_PTRACE, unix.PTRACE_SECCOMP_GET_FILTER, uintptr(tid), 0, 0, 0, 0)
	if e != 0 {
		t.Fatalf("PTRACE_SECCOMP_GET_FILTER count: %v", e)
	}
	buf := make([]unix.SockFilter, n)
	if _, _, e := unix.Syscall6(unix.SYS_PTRACE, unix.PTRACE_SECCOMP_GET_FILTER, uintptr(tid), 0, uintptr(unsafe.Pointer(&buf[0])), 0, 0); e != 0 {
		t.Fatalf("PTRACE_SECCOMP_GET_FILTER: %v", e)
	}
	out := make([]bpf.RawInstruction, n)
	for i, f := range buf {
		out[i] = bpf.RawInstruction{Op: f.Code, Jt: f.Jt, Jf: f.Jf, K: f.K}
	}
	return out
}

func TestBPFMatchesRunc(t *testing.T) {
	if testing.Short() {
		t.Skip("re-executes the test binary and ptraces it")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root: runc loads without no_new_privs, and PTRACE_SECCOMP_GET_FILTER needs CAP_SYS_ADMIN")
	}
	for _, name := range append(Names(), "qemu-kvm:pid1", "qemu-kvm:log") {
		t.Run(name, func(t *testing.T) {
			p, err := runcProfile(name)
			if err != nil {
				t.Fatal(err)
			}
			ours, err := p.BPF()
			if err != nil {
				t.Fatal(err)
			}
			runcs := readRuncFilter(t, name)
			stub := enosysStub(p.Config())
			lib := ours[len(stub):]
			if len(runcs) < len(lib) {
				t.Fatalf("runc program has %d instructions, ours %d", len(runcs), len(ours))
			}
			tail := runcs[len(runcs)-len(lib):]
			for i := range lib {
				if lib[i] != tail[i] {
					t.Fatalf("libseccomp part differs at %d: ours %+v runc %+v", i, lib[i], tail[i])
				}
			}
			for _, d := range append(probeData(p), sysData(1000), sysData(0x40000000|1000), Data{Nr: 500, Arch: archI386}) {
				a, err1 := Evaluate(ours, d)
				b, err2 := Evaluate(runcs, d)
				if err1 != nil || err2 != nil || a != b {
					t.Fatalf("nr %d arch %#x args %x: ours %v (%v), runc %v (%v)", d.Nr, d.Arch, d.Args, DecodeVerdict(a), err1, DecodeVerdict(b), err2)
				}
			}
			t.Logf("%s: runc loads %d instructions (stub %d), ours %d (stub %d)", name, len(runcs), len(runcs)-len(lib), len(ours), len(stub))
		})
	}
}
