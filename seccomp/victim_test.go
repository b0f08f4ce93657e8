package seccomp

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Victims are real processes: the test binary re-executed with
// DMSANDBOX_SECCOMP_VICTIM=profile:action (the way gVisor's seccomp tests
// do), which installs the profile and then makes one call. The parent reads
// the wait status: SIGSYS for a killed call, exit 0 and a line on stdout for
// an allowed one or an expected errno.
const victimEnv = "DMSANDBOX_SECCOMP_VICTIM"

func TestMain(m *testing.M) {
	if spec := os.Getenv(victimEnv); spec != "" {
		os.Exit(victimMain(spec))
	}
	os.Exit(m.Run())
}

// victimActions make one call each after the filter is in place. They
// return a line for the parent, or an error (exit 3).
var victimActions = map[string]func() (string, error){
	"getppid": func() (string, error) { return fmt.Sprint("ppid ", unix.Getppid()), nil },
	"socket-unix": func() (string, error) {
		fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return "", err
		}
		unix.Close(fd)
		return "socket ok", nil
	},
	"socket-inet": func() (string, error) {
		_, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
		return "", fmt.Errorf("socket(AF_INET) returned: %v", err)
	},
	"fork": func() (string, error) {
		// A fork: clone without CLONE_THREAD. Raw, so the child (if the
		// filter let it exist) exits at once.
		r, _, e := unix.RawSyscall6(unix.SYS_CLONE, uintptr(unix.SIGCHLD), 0, 0, 0, 0, 0)
		if r == 0 && e == 0 {
			unix.RawSyscall(unix.SYS_EXIT_GROUP, 0, 0, 0)
		}
		return "", fmt.Errorf("fork returned %d %v", r, e)
	},
	"threads": func() (string, error) {
		// Force new OS threads (Go's clone with CLONE_THREAD).
		var wg sync.WaitGroup
		ids := make(chan int, 8)
		for i := 0; i < 8; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				runtime.LockOSThread() // never unlocked: the thread exits with the goroutine
				ids <- unix.Gettid()
			}()
		}
		wg.Wait()
		close(ids)
		seen := map[int]bool{}
		for id := range ids {
			seen[id] = true
		}
		return fmt.Sprint("threads ", len(seen)), nil
	},
	"clone3": func() (string, error) {
		args := make([]byte, 88)
		_, _, e := unix.RawSyscall(unix.SYS_CLONE3, uintptr(unsafe.Pointer(&args[0])), uintptr(len(args)), 0)
		return fmt.Sprint("errno ", int(e)), nil
	},
	"io_uring_setup": func() (string, error) {
		params := make([]byte, 120)
		_, _, e := unix.RawSyscall(unix.SYS_IO_URING_SETUP, 8, uintptr(unsafe.Pointer(&params[0])), 0)
		return fmt.Sprint("errno ", int(e)), nil
	},
	"kill-self": func() (string, error) {
		return "kill ok", unix.Kill(unix.Getpid(), 0)
	},
	"kill-all": func() (string, error) {
		// Signal 0 only probes, so the test cannot hurt the host if the
		// filter wrongly allows it.
		err := unix.Kill(-1, 0)
		return "", fmt.Errorf("kill(-1) returned: %v", err)
	},
	"kill-parent": func() (string, error) {
		err := unix.Kill(unix.Getppid(), 0)
		return "kill parent ok", err
	},
	"kvm-api": func() (string, error) {
		fd, err := unix.Open("/dev/kvm", unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			return "", err
		}
		v, err := unix.IoctlRetInt(fd, uint(ioctlRequests["kvm"]["KVM_GET_API_VERSION"]))
		return fmt.Sprint("kvm api ", v), err
	},
	"ioctl-tiocsti": func() (string, error) {
		// TIOCSTI (inject input into a tty) is in no profile.
		err := unix.IoctlSetPointerInt(0, unix.TIOCSTI, 0)
		return "", fmt.Errorf("TIOCSTI returned: %v", err)
	},
	"ptrace": func() (string, error) {
		_, _, e := unix.RawSyscall(unix.SYS_PTRACE, unix.PTRACE_TRACEME, 0, 0)
		return "", fmt.Errorf("ptrace returned: %v", e)
	},
	"unshare": func() (string, error) {
		return "", fmt.Errorf("unshare returned: %v", unix.Unshare(unix.CLONE_NEWUSER))
	},
	"x32-getpid": func() (string, error) {
		// The same getpid through the x32 ABI (bit 30 of the number).
		r, _, e := unix.RawSyscall(0x40000000|unix.SYS_GETPID, 0, 0, 0)
		return "", fmt.Errorf("x32 getpid returned %d %v", r, e)
	},
	"open-read": func() (string, error) {
		b, err := os.ReadFile("/proc/self/status")
		return fmt.Sprint("read ", len(b) > 0), err
	},
	"exec-true": func() (string, error) {
		err := unix.Exec("/bin/true", []string{"true"}, os.Environ())
		return "", err
	},
	"gc": func() (string, error) {
		// Exercise the Go runtime: allocation, GC with its worker threads,
		// timers, preemption signals.
		var keep [][]byte
		for i := 0; i < 2000; i++ {
			keep = append(keep, make([]byte, 64<<10))
			if len(keep) > 100 {
				keep = keep[1:]
			}
		}
		runtime.GC()
		return "gc ok", nil
	},
}

func victimMain(spec string) int {
	name, action, ok := strings.Cut(spec, ":")
	f, known := victimActions[action]
	if !ok || !known {
		fmt.Fprintf(os.Stderr, "victim: bad spec %q\n", spec)
		return 2
	}
	var opts []Option
	if os.Getenv(victimEnv+"_SELFPID") != "" {
		opts = append(opts, SelfPID(os.Getpid()))
	}
	p, err := Load(name, opts...)
	if err != nil {
		fmt.Fprintln(os.Stderr, "victim:", err)
		return 2
	}
	if err := p.Install(); err != nil {
		fmt.Fprintln(os.Stderr, "victim:", err)
		return 2
	}
	line, err := f()
	if err != nil {
		fmt.Fprintln(os.Stderr, "victim:", err)
		return 3
	}
	fmt.Println(line)
	return 0
}

// victimResult is how a victim ended.
type victimResult struct {
	signal syscall.Signal // 0 when it exited
	code   int
	out    string
	stderr string
}

func runVictim(t *testing.T, profile, action string, selfPID bool) victimResult {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), victimEnv+"="+profile+":"+action)
	if selfPID {
		cmd.Env = append(cmd.Env, victimEnv+"_SELFPID=1")
	}
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	res := victimResult{out: strings.TrimSpace(out.String()), stderr: strings.TrimSpace(errb.String())}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		ws := ee.Sys().(syscall.WaitStatus)
		if ws.Signaled() {
			res.signal = ws.Signal()
		} else {
			res.code = ws.ExitStatus()
		}
	default:
		t.Fatalf("run victim %s:%s: %v", profile, action, err)
	}
	return res
}

func TestVictims(t *testing.T) {
	if testing.Short() {
		t.Skip("victims re-execute the test binary")
	}
	type want struct {
		killed bool
		out    string // expected stdout prefix when not killed
	}
	allowed := func(out string) want { return want{out: out} }
	killed := want{killed: true}
	common := map[string]want{
		"getppid":       allowed("ppid "),
		"socket-unix":   allowed("socket ok"),
		"socket-inet":   killed,
		"fork":          killed,
		"threads":       allowed("threads 8"),
		"clone3":        allowed("errno " + strconv.Itoa(int(unix.ENOSYS))),
		"kill-self":     allowed("kill ok"),
		"kill-all":      killed,
		"ioctl-tiocsti": killed,
		"ptrace":        killed,
		"unshare":       killed,
		"open-read":     allowed("read true"),
		"exec-true":     allowed(""),
		"gc":            allowed("gc ok"),
	}
	kvm := func(m map[string]want, w want) map[string]want {
		out := map[string]want{"kvm-api": w}
		for k, v := range m {
			out[k] = v
		}
		return out
	}
	_, kvmErr := os.Stat("/dev/kvm")
	cases := map[string]map[string]want{
		"qemu-kvm":  kvm(common, allowed("kvm api 12")),
		"qemu-vfio": kvm(common, allowed("kvm api 12")),
		"qemu-xen":  kvm(common, killed),
		"broker":    kvm(common, killed),
	}
	cases["qemu-kvm"]["io_uring_setup"] = allowed("errno " + strconv.Itoa(int(unix.ENOSYS)))
	cases["broker"]["io_uring_setup"] = killed
	for _, profile := range Names() {
		acts, ok := cases[profile]
		if !ok {
			t.Errorf("profile %s has no victim cases", profile)
			continue
		}
		for action, w := range acts {
			t.Run(profile+"/"+action, func(t *testing.T) {
				if action == "kvm-api" && kvmErr != nil && !w.killed {
					t.Skip("no /dev/kvm")
				}
				r := runVictim(t, profile, action, false)
				if w.killed {
					if r.signal != unix.SIGSYS {
						t.Fatalf("want death by SIGSYS, got signal %v exit %d out %q stderr %q", r.signal, r.code, r.out, r.stderr)
					}
					return
				}
				if r.signal != 0 || r.code != 0 || !strings.HasPrefix(r.out, w.out) {
					t.Fatalf("want exit 0 and %q, got signal %v exit %d out %q stderr %q", w.out, r.signal, r.code, r.out, r.stderr)
				}
			})
		}
	}
}

// TestVictimSelfPID: with SelfPID the filter lets the process signal
// itself only; signalling its parent kills it. Without SelfPID the parent
// (a positive pid) is reachable: that is the documented weaker mode.
func TestVictimSelfPID(t *testing.T) {
	if testing.Short() {
		t.Skip("victims re-execute the test binary")
	}
	if r := runVictim(t, "qemu-kvm", "kill-parent", true); r.signal != unix.SIGSYS {
		t.Errorf("SelfPID: kill(parent) want SIGSYS, got signal %v exit %d %q", r.signal, r.code, r.stderr)
	}
	if r := runVictim(t, "qemu-kvm", "kill-self", true); r.signal != 0 || r.code != 0 {
		t.Errorf("SelfPID: kill(self) want exit 0, got signal %v exit %d %q", r.signal, r.code, r.stderr)
	}
	if r := runVictim(t, "qemu-kvm", "kill-parent", false); r.signal != 0 || r.code != 0 {
		t.Errorf("no SelfPID: kill(parent) want allowed, got signal %v exit %d %q", r.signal, r.code, r.stderr)
	}
}

// TestVictimBadArchKillsThread: an x32 call (or i386, int 0x80) takes
// libseccomp's bad-arch action, which is SECCOMP_RET_KILL_THREAD and which
// runc's configs.Seccomp cannot change. The call never runs; the calling
// thread dies and the rest of the process lives on. The victim makes the
// call on its main thread, so the main thread turns zombie while the
// others keep running; the test waits for that state, then kills the rest.
func TestVictimBadArchKillsThread(t *testing.T) {
	if testing.Short() {
		t.Skip("victims re-execute the test binary")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), victimEnv+"=qemu-kvm:x32-getpid")
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	defer cmd.Process.Kill()
	statPath := fmt.Sprintf("/proc/%d/stat", cmd.Process.Pid)
	deadline := time.Now().Add(60 * time.Second) // a hang guard, not a timing assertion
	for {
		b, err := os.ReadFile(statPath)
		if err != nil {
			t.Fatalf("victim vanished: %v (output %q)", err, out.String())
		}
		// state is the field after the ")" that closes comm
		i := strings.LastIndexByte(string(b), ')')
		if i > 0 && len(b) > i+2 && b[i+2] == 'Z' {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("main thread never died (output %q)", out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	if len(tasks) < 2 {
		t.Fatalf("want the other threads alive after the main thread's death, got %d tasks", len(tasks))
	}
	if strings.Contains(out.String(), "x32 getpid returned") {
		t.Fatalf("the x32 call returned: %q", out.String())
	}
}
