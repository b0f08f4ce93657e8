package xenrig

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/dmsandbox/dmsandbox/integration/rig"
)

// Rig is one boot of Xen with a script run in dom0.
type Rig struct {
	// Script is bash run as root in dom0 once its userspace is up (cwd /,
	// $RIG_OUT the writable share, $XEN_ROOT the unpacked Xen tree).
	Script string
	Env    map[string]string
	// Devices are -device values for L0 (PCI devices to pass through).
	Devices []string
	// Timeout bounds one attempt (default 150 s); Retries as in rig.Rig
	// (0: one retry after a timeout, -1: none). Two attempts of the
	// default fit the 5-minute budget of `make test-xen`.
	Timeout time.Duration
	Retries int
	WorkDir string
	Logf    func(format string, args ...any)
}

// Run boots Xen, runs the script in dom0 and returns its result.
func (r *Rig) Run(ctx context.Context) (*rig.Result, error) {
	cache, err := rig.CacheDir()
	if err != nil {
		return nil, err
	}
	k, err := rig.EnsureKernel(cache)
	if err != nil {
		return nil, err
	}
	initrd, err := rig.BuildInitramfs(cache, k, nil)
	if err != nil {
		return nil, err
	}
	x, err := EnsureXen(cache)
	if err != nil {
		return nil, err
	}
	work := r.WorkDir
	if work == "" {
		if work, err = os.MkdirTemp("", "dmsandbox-xenrig-"); err != nil {
			return nil, fmt.Errorf("xenrig: %w", err)
		}
	}
	// The VFIO rig's run lock: one nested guest at a time on this machine.
	unlock, err := runLock(ctx, filepath.Join(cache, "run.lock"))
	if err != nil {
		return nil, err
	}
	defer unlock()
	attempts := 2
	if r.Retries < 0 {
		attempts = 1
	} else if r.Retries > 0 {
		attempts = 1 + r.Retries
	}
	var res *rig.Result
	for i := 1; i <= attempts; i++ {
		res, err = r.attempt(ctx, i, filepath.Join(work, "attempt-"+strconv.Itoa(i)), k, initrd, x)
		if res != nil {
			res.Attempts = i
		}
		if !errors.Is(err, rig.ErrTimeout) || ctx.Err() != nil {
			return res, err
		}
		r.logf("xenrig: attempt %d of %d timed out", i, attempts)
	}
	return res, err
}

func (r *Rig) logf(format string, args ...any) {
	if r.Logf != nil {
		r.Logf(format, args...)
	}
}

func (r *Rig) timeout() time.Duration {
	if r.Timeout > 0 {
		return r.Timeout
	}
	return 150 * time.Second
}

// runLock takes the flock the rig package takes on the same file.
func runLock(ctx context.Context, path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("xenrig: %w", err)
	}
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil
		}
		if err != syscall.EWOULDBLOCK && err != syscall.EINTR {
			f.Close()
			return nil, fmt.Errorf("xenrig: lock %s: %w", path, err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("xenrig: waiting for another rig: %w", ctx.Err())
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// qemuArgs: each choice measured in shared/RIGS.md. qemu64 with SVM/NPT is
// the only CPU model dom0 survived under TCG; Xen's console is the
// serial port, dom0's is hvc0 (Xen relays it); the dom0 kernel and
// initramfs are multiboot modules, so commas in the kernel's arguments
// are doubled inside -initrd.
func (r *Rig) qemuArgs(k *rig.Kernel, initrd string, x *Xen, out string) []string {
	dom0 := strings.Join([]string{k.Vmlinuz(), "console=hvc0", "panic=-1", "quiet",
		"rig.kmod=" + k.ModulesDir(), "rig.cgroup=v1"}, " ")
	a := []string{
		"-accel", "tcg,thread=multi", "-cpu", "qemu64,+svm,+npt,+nrip-save",
		"-machine", "q35", "-m", "4096", "-smp", "2",
		"-kernel", x.ELF,
		"-append", "dom0_mem=2048M,max:2048M console=com1 com1=115200,8n1 loglvl=all guest_loglvl=all noreboot",
		"-initrd", strings.ReplaceAll(dom0, ",", ",,") + "," + strings.ReplaceAll(initrd, ",", ",,"),
	}
	for _, d := range r.Devices {
		a = append(a, "-device", d)
	}
	return append(a,
		"-virtfs", "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap",
		"-virtfs", "local,path="+strings.ReplaceAll(out, ",", ",,")+",mount_tag=rigout,security_model=none",
		"-nic", "none", "-display", "none", "-vga", "none", "-serial", "stdio", "-monitor", "none", "-no-reboot")
}

func (r *Rig) scriptText(x *Xen) string {
	var b strings.Builder
	b.WriteString("#!/bin/bash\n# written by the dmsandbox xen rig harness\n")
	env := map[string]string{"XEN_ROOT": x.Root}
	for k, v := range r.Env {
		env[k] = v
	}
	keys := make([]string, 0, len(env))
	for k := range env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, "export %s='%s'\n", k, strings.ReplaceAll(env[k], "'", `'\''`))
	}
	b.WriteString(r.Script + "\n")
	return b.String()
}

func (r *Rig) attempt(ctx context.Context, n int, dir string, k *rig.Kernel, initrd string, x *Xen) (*rig.Result, error) {
	out := filepath.Join(dir, "out")
	if err := os.MkdirAll(out, 0o755); err != nil {
		return nil, fmt.Errorf("xenrig: %w", err)
	}
	if err := os.WriteFile(filepath.Join(out, "script.sh"), []byte(r.scriptText(x)), 0o755); err != nil {
		return nil, fmt.Errorf("xenrig: %w", err)
	}
	res := &rig.Result{OutDir: out, ExitCode: -1}
	actx, cancel := context.WithTimeout(ctx, r.timeout())
	defer cancel()
	args := r.qemuArgs(k, initrd, x, out)
	cmd := exec.CommandContext(actx, "qemu-system-x86_64", args...)
	cmd.WaitDelay = 5 * time.Second
	console, err := os.Create(filepath.Join(dir, "console.log"))
	if err != nil {
		return nil, fmt.Errorf("xenrig: %w", err)
	}
	defer console.Close()
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	start := time.Now()
	r.logf("xenrig: attempt %d: qemu-system-x86_64 %s", n, strings.Join(args, " "))
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("xenrig: start qemu: %w", err)
	}
	var wg sync.WaitGroup
	var buf strings.Builder
	wg.Add(1)
	go func() {
		defer wg.Done()
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := strings.TrimRight(sc.Text(), "\r")
			fmt.Fprintln(console, line)
			buf.WriteString(line + "\n")
			if strings.HasPrefix(line, "RIG: script start") {
				res.Boot = time.Since(start)
				r.logf("xenrig: dom0 up after %.1fs, script running", res.Boot.Seconds())
			}
		}
		io.Copy(io.Discard, pr)
	}()
	waitErr := cmd.Wait()
	pw.Close()
	wg.Wait()
	res.Duration = time.Since(start)
	res.Console = buf.String()
	if log, err := os.ReadFile(filepath.Join(out, "script.log")); err == nil {
		res.Log = string(log)
	}
	if ctx.Err() != nil {
		return res, fmt.Errorf("xenrig: %w", ctx.Err())
	}
	status, serr := os.ReadFile(filepath.Join(out, "exit-status"))
	switch {
	case serr != nil && actx.Err() != nil:
		return res, fmt.Errorf("%w (xen rig attempt %d, %s, console %s)", rig.ErrTimeout, n, r.timeout(), console.Name())
	case serr != nil:
		return res, fmt.Errorf("xenrig: dom0 ended without the script's exit status (qemu: %v; console %s)", waitErr, console.Name())
	}
	if res.ExitCode, err = strconv.Atoi(strings.TrimSpace(string(status))); err != nil {
		return res, fmt.Errorf("xenrig: exit status %q: %w", status, err)
	}
	r.logf("xenrig: attempt %d: script exit %d, %.1fs total", n, res.ExitCode, res.Duration.Seconds())
	return res, nil
}
