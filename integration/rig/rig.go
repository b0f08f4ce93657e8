package rig

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
	"time"
)

// Rig describes one L1 boot. The zero value boots a bare q35 with a VT-d
// IOMMU and runs an empty script.
type Rig struct {
	// Devices are values of QEMU's -device option, in order, e.g.
	// "pcie-root-port,id=rp1,chassis=1,slot=1", "edu,bus=rp1".
	Devices []string
	// QEMUArgs are appended to the L0 command line as they are (netdevs,
	// -trace, ...).
	QEMUArgs []string
	// Append is added to L1's kernel command line.
	Append string
	// Script is bash source run in L1 as root after boot, cwd /, with
	// $RIG_OUT naming the writable share (Result.OutDir on the host). Its
	// stdout and stderr become Result.Log, its exit status Result.ExitCode.
	Script string
	// Env is exported to the script.
	Env map[string]string
	// Timeout bounds one attempt, boot to power-off (default 3 minutes).
	Timeout time.Duration
	// Retries is how many more attempts follow an attempt that timed out.
	// About one TCG boot in 13 hangs in an RCU stall, so the default, 0,
	// means one retry; set -1 for none.
	Retries int
	// MemoryMiB and CPUs size L1 (defaults 1024 and 2).
	MemoryMiB, CPUs int
	// Cgroup is the cgroup layout mounted in L1: "v1" (default, like this
	// host) or "v2".
	Cgroup string
	// Modules are the kernel modules stage 1 loads (nil: DefaultModules).
	Modules []string
	// WorkDir keeps the attempts' consoles and shares (attempt-N/); empty
	// means a new temporary directory, left behind for inspection.
	WorkDir string
	// Logf, when set, receives progress lines (t.Logf fits).
	Logf func(format string, args ...any)
}

// Result is what one Run brought back from L1 (its last attempt).
type Result struct {
	ExitCode int           // the script's exit status
	Log      string        // the script's stdout and stderr
	Console  string        // L1's serial console (kernel and init stages)
	OutDir   string        // host side of $RIG_OUT
	Attempts int           // attempts made, 1 unless a timeout forced a retry
	Boot     time.Duration // QEMU start to the script's start
	Duration time.Duration // QEMU start to QEMU exit
}

// ErrTimeout is returned (wrapped) when every attempt timed out.
var ErrTimeout = errors.New("rig: L1 timed out")

// Run boots L1, runs the script and returns its result. An error means the
// rig itself failed (no kernel, QEMU would not start, L1 never reached or
// never finished the script); a script that fails is a Result with a
// non-zero ExitCode.
func (r *Rig) Run(ctx context.Context) (*Result, error) {
	if err := r.validate(); err != nil {
		return nil, err
	}
	cache, err := CacheDir()
	if err != nil {
		return nil, err
	}
	k, err := EnsureKernel(cache)
	if err != nil {
		return nil, err
	}
	initrd, err := BuildInitramfs(cache, k, r.Modules)
	if err != nil {
		return nil, err
	}
	return r.runAttempts(ctx, cache, bootFiles{kernel: k, initramfs: initrd})
}

// runAttempts boots up to 1+retries times while attempts time out.
func (r *Rig) runAttempts(ctx context.Context, cache string, b bootFiles) (*Result, error) {
	work := r.WorkDir
	if work == "" {
		var err error
		if work, err = os.MkdirTemp("", "dmsandbox-rig-"); err != nil {
			return nil, fmt.Errorf("rig: %w", err)
		}
	}
	// One L1 at a time on this machine: two TCG guests on two cores slow
	// each other past their timeouts. The wait does not count against
	// Timeout.
	t0 := time.Now()
	unlock, err := lockFile(ctx, filepath.Join(cache, "run.lock"))
	if err != nil {
		return nil, err
	}
	defer unlock()
	if w := time.Since(t0); w > time.Second {
		r.logf("rig: waited %.0fs for another rig to finish", w.Seconds())
	}

	attempts := 1 + r.retries()
	var res *Result
	for i := 1; i <= attempts; i++ {
		res, err = r.attempt(ctx, i, filepath.Join(work, "attempt-"+strconv.Itoa(i)), b)
		if res != nil {
			res.Attempts = i
		}
		if !errors.Is(err, ErrTimeout) || ctx.Err() != nil {
			return res, err
		}
		r.logf("rig: attempt %d of %d timed out after %s (console tail below); %s", i, attempts, r.timeout(), tail(res.Console, 15))
	}
	return res, err
}

// attempt is one boot: fresh share, QEMU under a deadline, result collected.
func (r *Rig) attempt(ctx context.Context, n int, dir string, b bootFiles) (*Result, error) {
	b.outDir = filepath.Join(dir, "out")
	if err := os.MkdirAll(b.outDir, 0o755); err != nil {
		return nil, fmt.Errorf("rig: %w", err)
	}
	if err := os.WriteFile(filepath.Join(b.outDir, "script.sh"), []byte(r.scriptText()), 0o755); err != nil {
		return nil, fmt.Errorf("rig: %w", err)
	}
	res := &Result{OutDir: b.outDir, ExitCode: -1}
	qemu := os.Getenv("DMSANDBOX_RIG_QEMU")
	if qemu == "" {
		qemu = qemuBinary
	}
	actx, cancel := context.WithTimeout(ctx, r.timeout())
	defer cancel()
	cmd := exec.CommandContext(actx, qemu, r.qemuArgs(b)...)
	cmd.WaitDelay = 5 * time.Second
	console, err := os.Create(filepath.Join(dir, "console.log"))
	if err != nil {
		return nil, fmt.Errorf("rig: %w", err)
	}
	defer console.Close()
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw

	start := time.Now()
	r.logf("rig: attempt %d: %s %s", n, qemu, strings.Join(r.qemuArgs(b), " "))
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("rig: start %s: %w", qemu, err)
	}
	// The console is copied to console.log as it comes, so a hung L1 can be
	// diagnosed, and scanned for the init stages' "RIG:" markers.
	var wg sync.WaitGroup
	var fatal string
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
			switch {
			case strings.HasPrefix(line, "RIG: script start"):
				res.Boot = time.Since(start)
				r.logf("rig: L1 up after %.1fs, script running", res.Boot.Seconds())
			case strings.HasPrefix(line, "RIG-FATAL:"):
				fatal = line
			}
		}
		_, _ = io.Copy(io.Discard, pr)
	}()
	waitErr := cmd.Wait()
	pw.Close()
	wg.Wait()
	res.Duration = time.Since(start)
	res.Console = buf.String()
	if log, err := os.ReadFile(filepath.Join(b.outDir, "script.log")); err == nil {
		res.Log = string(log)
	}
	if ctx.Err() != nil {
		return res, fmt.Errorf("rig: %w", ctx.Err())
	}
	if fatal != "" {
		return res, fmt.Errorf("rig: L1 init failed: %s (console %s)", fatal, console.Name())
	}
	// The exit status decides whether the script ran to its end; a deadline
	// that struck after it (L1 slow to power off) does not undo that.
	status, statusErr := os.ReadFile(filepath.Join(b.outDir, "exit-status"))
	timedOut := actx.Err() != nil
	switch {
	case statusErr != nil && timedOut:
		return res, fmt.Errorf("%w (attempt %d, %s, console %s)", ErrTimeout, n, r.timeout(), console.Name())
	case statusErr != nil:
		return res, fmt.Errorf("rig: L1 ended without the script's exit status (qemu: %v; console %s): %s", waitErr, console.Name(), tail(res.Console, 20))
	}
	var err2 error
	if res.ExitCode, err2 = strconv.Atoi(strings.TrimSpace(string(status))); err2 != nil {
		return res, fmt.Errorf("rig: exit status %q from L1: %w", status, err2)
	}
	if waitErr != nil && !timedOut {
		return res, fmt.Errorf("rig: %s: %w: %s", qemu, waitErr, tail(res.Console, 20))
	}
	r.logf("rig: attempt %d: script exit %d, %.1fs total", n, res.ExitCode, res.Duration.Seconds())
	return res, nil
}

// scriptText prefixes the script with its environment.
func (r *Rig) scriptText() string {
	var b strings.Builder
	b.WriteString("#!/bin/bash\n# written by the dmsandbox rig harness\n")
	keys := make([]string, 0, len(r.Env))
	for k := range r.Env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, "export %s=%s\n", k, shellQuote(r.Env[k]))
	}
	b.WriteString(r.Script)
	b.WriteString("\n")
	return b.String()
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

func (r *Rig) timeout() time.Duration {
	if r.Timeout > 0 {
		return r.Timeout
	}
	return 3 * time.Minute
}

func (r *Rig) retries() int {
	switch {
	case r.Retries < 0:
		return 0
	case r.Retries == 0:
		return 1
	}
	return r.Retries
}

func (r *Rig) logf(format string, args ...any) {
	if r.Logf != nil {
		r.Logf(format, args...)
	}
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
