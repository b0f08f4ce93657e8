// Command probe tries one way out of a dmsandbox sandbox and reports
// whether it worked. It is run inside the sandbox by the integration
// tests, one attempt per run, because a seccomp kill ends the process at
// the first forbidden call.
//
//	probe ATTEMPT [ARG]
//
// It prints "BLOCKED attempt: error" and exits 0 when the attempt failed,
// "ESCAPED attempt" and exits 1 when it succeeded; a process killed by
// seccomp (SIGSYS) was blocked too. Build it static (CGO_ENABLED=0): the
// sandbox's root holds only what the binary needs.
package main

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

var attempts = map[string]func(arg string) error{
	"open-shadow": func(string) error { return openRead("/etc/shadow") },
	"open-kcore":  func(string) error { return openRead("/proc/kcore") },
	"open-devmem": func(string) error { return openRead("/dev/mem") },
	"open-sys":    func(string) error { return openRead("/sys/kernel/mm/transparent_hugepage/enabled") },
	// list-sys: /sys is an empty mount point (no sysfs); listing it may
	// succeed but must show nothing.
	"list-sys": func(string) error {
		ents, err := os.ReadDir("/sys")
		if err != nil {
			return err
		}
		if len(ents) == 0 {
			return errors.New("/sys is empty")
		}
		return nil
	},
	// write-cgroup PATH: a cgroup file that exists on the host (the test
	// passes a scratch cgroup's pids.max; unconfined, as root, the write
	// succeeds).
	"write-cgroup": func(arg string) error {
		if arg == "" {
			return errors.New("write-cgroup needs a path")
		}
		return os.WriteFile(arg, []byte("max"), 0)
	},
	"mount": func(string) error { return unix.Mount("tmpfs", "/tmp", "tmpfs", 0, "") },
	"unshare-user": func(string) error {
		return unix.Unshare(unix.CLONE_NEWUSER)
	},
	"unshare-mnt": func(string) error { return unix.Unshare(unix.CLONE_NEWNS) },
	"setuid0":     func(string) error { return rawSetuid(0) },
	"ptrace-init": func(string) error { return unix.PtraceAttach(1) },
	"socket-inet": func(string) error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
		if err == nil {
			unix.Close(fd)
		}
		return err
	},
	"socket-netlink": func(string) error {
		fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW, unix.NETLINK_ROUTE)
		if err == nil {
			unix.Close(fd)
		}
		return err
	},
	// kill-outside ARG: signal 0 to a host pid; inside the pid namespace
	// it must not even exist.
	"kill-outside": func(arg string) error {
		pid, err := strconv.Atoi(arg)
		if err != nil {
			return fmt.Errorf("kill-outside needs a pid: %v", err)
		}
		return unix.Kill(pid, 0)
	},
	"mknod-mem": func(string) error {
		return unix.Mknod("/tmp/mem", unix.S_IFCHR|0o600, int(unix.Mkdev(1, 1)))
	},
	"write-root": func(string) error { return os.WriteFile("/probe-was-here", nil, 0o600) },
	"chroot":     func(string) error { return unix.Chroot("/tmp") },
	"fork": func(string) error {
		pid, _, errno := unix.RawSyscall(unix.SYS_FORK, 0, 0, 0)
		if errno != 0 {
			return errno
		}
		if pid == 0 {
			unix.Exit(0)
		}
		return nil
	},
	// threads ARG: start ARG OS threads; the pids cgroup (which counts
	// threads) must stop it short of that.
	"threads": func(arg string) error {
		n, err := strconv.Atoi(arg)
		if err != nil {
			return fmt.Errorf("threads needs a count: %v", err)
		}
		var wg sync.WaitGroup
		started := make(chan struct{}, n)
		for i := 0; i < n; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				runtime.LockOSThread()
				started <- struct{}{}
				time.Sleep(5 * time.Second)
			}()
		}
		for i := 0; i < n; i++ {
			<-started
		}
		return nil // reaching here means all threads exist: escaped
	},
	"ok": func(string) error { return nil }, // control: must report ESCAPED
}

func openRead(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = f.Read(make([]byte, 1))
	return err
}

// rawSetuid calls setuid on this thread only: Go's syscall.Setuid would
// broadcast to every thread (and report the first error).
func rawSetuid(uid int) error {
	_, _, errno := unix.RawSyscall(unix.SYS_SETUID, uintptr(uid), 0, 0)
	if errno != 0 {
		return errno
	}
	return nil
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: probe ATTEMPT [ARG]")
		os.Exit(2)
	}
	name := os.Args[1]
	f, ok := attempts[name]
	if !ok {
		fmt.Fprintf(os.Stderr, "probe: unknown attempt %q\n", name)
		os.Exit(2)
	}
	arg := ""
	if len(os.Args) > 2 {
		arg = os.Args[2]
	}
	if err := f(arg); err != nil {
		fmt.Printf("BLOCKED %s: %v\n", name, err)
		os.Exit(0)
	}
	fmt.Printf("ESCAPED %s\n", name)
	os.Exit(1)
}
