package launcher

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/dmsandbox/dmsandbox/seccomp"
)

// ErrSetup marks a failure while building the sandbox. Everything built up
// to that point has been undone when it is returned.
var ErrSetup = errors.New("sandbox setup failed")

// killTimeout bounds the wait for a cgroup to empty after SIGKILL: long
// enough for QEMU to release guest RAM, short enough that a process stuck
// in the kernel is reported rather than waited for forever.
const killTimeout = 10 * time.Second

// tmpSize is the sandbox's /tmp: QEMU writes nothing there in normal use,
// and whatever it writes counts against the cgroup's memory.
const tmpSize = "64m"

// EarlyExitError reports a program that exited before it was ready. The
// CLI exits with Status, so a caller sees the program's own failure.
type EarlyExitError struct {
	Program string
	Status  int    // shell-style exit status
	State   string // as the kernel reported it ("exit status 1")
}

func (e *EarlyExitError) Error() string {
	return fmt.Sprintf("%s exited before its monitor answered (%s)", e.Program, e.State)
}

// Launcher starts sandboxes with one configuration.
type Launcher struct {
	Config Config
	// Stdio of the confined program; nil Stdin is /dev/null, nil
	// Stdout/Stderr are the launcher's own.
	Stdin, Stdout, Stderr *os.File
	// Log receives the launcher's own messages (nil: discarded).
	Log io.Writer
	// Signals, when set (NotifySignals), interrupt a Start that is
	// waiting for the program to become ready: the sandbox is torn down
	// and Start returns ErrInterrupted.
	Signals <-chan os.Signal
}

// ErrInterrupted is returned by a Start cut short by a signal.
var ErrInterrupted = errors.New("interrupted by a signal")

// Sandbox is a started sandbox. Close it; a second Close is a no-op.
type Sandbox struct {
	State State

	cfg       *Config
	dir       string     // the run directory, once this launcher created it
	devDir    string     // private device nodes (user namespaces), once made
	loops     []*os.File // loop devices of Spec.Images (autoclear: closing frees them)
	cg        *Cgroup
	ctr       *runningContainer
	reaper    *reaper
	nameLock  *os.File
	indexLock *os.File

	waitOnce  sync.Once
	closeOnce sync.Once
	closeErr  error
	ps        *os.ProcessState
	waitErr   error
	exited    chan struct{}
}

// Start builds the sandbox and starts the program in it. It returns when
// the program runs and, for QEMU, when its QMP monitor answers. On error
// nothing is left behind; the error wraps ErrUsage, ErrConfig,
// ErrConflict, ErrInterrupted or ErrSetup, or is an *EarlyExitError.
func (l *Launcher) Start(spec Spec) (_ *Sandbox, err error) {
	cfg := l.Config
	t0 := time.Now()
	setupErr := func(err error) error { return fmt.Errorf("%w: %w", ErrSetup, err) }

	// 1. Validate everything before touching the host.
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	if err := checkPasswd(&cfg, "/etc/passwd"); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	if err := spec.resolve(&cfg); err != nil {
		return nil, err
	}
	// 2. The seccomp filter: no filter, no sandbox (fail closed). The
	// program is pid 1 of its own pid namespace, so signals "to itself"
	// are signals to pid 1: the profile's kill/tgkill rules allow no
	// other target.
	sopts := []seccomp.Option{seccomp.SelfPID(1)}
	if cfg.SeccompLog {
		sopts = append(sopts, seccomp.LogMode())
	}
	prof, err := seccomp.Load(spec.Profile, sopts...)
	if err != nil {
		return nil, fmt.Errorf("%w: seccomp profile %q: %w", ErrUsage, spec.Profile, err)
	}
	devices, err := sandboxDevices(spec.Profile, spec.ExtraDevices)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUsage, err)
	}
	if len(spec.VFIO) > 0 && !hasNode(devices, "/dev/vfio/vfio") {
		return nil, fmt.Errorf("%w: VFIO devices need a profile with /dev/vfio/vfio (qemu-vfio), not %s", ErrUsage, spec.Profile)
	}
	scaffolds, err := imageMountPoints(spec.Images)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUsage, err)
	}
	trace(t0, "seccomp")

	// 3. Claim the name, then a uid. The locks are held by this process
	// and its reaper until the last leftover is gone.
	if err := os.MkdirAll(cfg.RunDir, 0o711); err != nil {
		return nil, setupErr(err)
	}
	nameLock, err := lockFile(filepath.Join(cfg.RunDir, spec.Name+".lock"))
	if err != nil {
		if errors.Is(err, ErrConflict) {
			return nil, fmt.Errorf("%w: a sandbox named %q is running", ErrConflict, spec.Name)
		}
		return nil, setupErr(err)
	}
	sb := &Sandbox{cfg: &cfg, nameLock: nameLock, exited: make(chan struct{})}
	defer func() {
		if err != nil {
			sb.Close()
		}
	}()
	// Leftovers of sandboxes whose launcher and reaper both died (this
	// name first: a failure there blocks the start).
	if err := cleanupSandbox(cfg.RunDir, spec.Name); err != nil {
		return nil, setupErr(fmt.Errorf("leftovers of an earlier %q: %w", spec.Name, err))
	}
	sweepStale(cfg.RunDir, spec.Name, l.Log)
	index, indexLock, err := allocIndex(&cfg, spec.Index)
	if err != nil {
		if errors.Is(err, ErrConflict) {
			return nil, err
		}
		return nil, setupErr(err)
	}
	sb.indexLock = indexLock
	uid, _ := cfg.UID(uint32(index))
	trace(t0, "locks")

	// 4. The minimal root (cached; built once per content identity).
	rootfs, err := ensureRoot(cfg.CacheDir, spec.Program, cfg.ExtraPaths, spec.RootFiles, scaffolds...)
	if err != nil {
		return nil, setupErr(err)
	}
	trace(t0, "rootfs")

	// 5. The run directory, the planned cgroup recorded in state.json,
	// then the reaper: from here on, a SIGKILL of this process at any
	// point still ends in a full cleanup (the record is written before
	// the things it lists exist). 0711: a user-namespace sandbox's setup
	// runs as an unmapped host id that must reach the sysfs view;
	// state.json is 0600 and nothing here can be listed.
	dir := sandboxDir(cfg.RunDir, spec.Name)
	if err := os.Mkdir(dir, 0o711); err != nil {
		return nil, setupErr(err)
	}
	sb.dir = dir
	cg, err := planCgroup(cfg.CgroupParent, spec.Name)
	if err != nil {
		return nil, setupErr(err)
	}
	qmpPath := ""
	if isQEMU(spec.Program) && !spec.NoQMP {
		qmpPath = filepath.Join(dir, "qmp.sock")
	}
	devDir := ""
	if cfg.UserNamespace {
		devDir = filepath.Join(cfg.CacheDir, "dev", spec.Name)
	}
	sb.State = State{Version: StateVersion, Name: spec.Name, Index: index, UID: uid,
		LauncherPid: os.Getpid(), Program: spec.Program, Profile: spec.Profile,
		UserNS: cfg.UserNamespace, CgroupMode: cg.Mode, CgroupPaths: cg.Paths,
		QMPSocket: qmpPath, DevDir: devDir, Started: time.Now().UTC()}
	if err := writeState(cfg.RunDir, &sb.State); err != nil {
		return nil, setupErr(err)
	}
	if sb.reaper, err = startReaper(cfg.RunDir, spec.Name, nameLock, indexLock); err != nil {
		return nil, setupErr(err)
	}
	sb.State.ReaperPid = sb.reaper.cmd.Process.Pid
	trace(t0, "reaper")

	// 6. Devices: VFIO groups with their synthetic /sys view, and for a
	// user namespace private nodes owned by the sandbox uid.
	sysView := ""
	if len(spec.VFIO) > 0 {
		sysView = filepath.Join(dir, "sys")
		nodes, err := vfioView(sysView, spec.VFIO)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrUsage, err)
		}
		if devices, err = sandboxDevices(spec.Profile, append(spec.ExtraDevices, nodes...)); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrUsage, err)
		}
	}
	// Disk images: a loop device each, its node at the image's path.
	for _, img := range spec.Images {
		li, err := attachImage(img)
		if err != nil {
			return nil, setupErr(err)
		}
		sb.loops = append(sb.loops, li.loop)
		if hasNode(devices, img.Path) {
			return nil, fmt.Errorf("%w: image %s: a device node of the sandbox has that path", ErrUsage, img.Path)
		}
		devices = append(devices, li.node)
	}
	privateNodes := map[string]string{}
	if devDir != "" {
		sb.devDir = devDir
		if err := os.RemoveAll(devDir); err != nil {
			return nil, setupErr(err)
		}
		for _, d := range devices {
			if d.Private {
				p, err := privateNode(devDir, d, uid)
				if err != nil {
					return nil, setupErr(err)
				}
				privateNodes[d.Path] = p
			}
		}
	}

	// 7. The fds the program gets (fds.go).
	var h handover
	args := spec.Args
	if qmpPath != "" {
		qf, err := listenQMP(qmpPath)
		if err != nil {
			return nil, setupErr(err)
		}
		defer qf.Close() // QEMU has its own copy once started
		args = append(qmpArgs(h.add("qmp", qf)), args...)
	}
	for _, f := range spec.Files {
		h.add(f.Name, f.File)
	}
	sb.State.Args, sb.State.Files = args, h.names

	// 8. The cgroup with every limit, before anything runs in it.
	if err := cg.create(cfg.Cgroup, deviceRules(devices)); err != nil {
		return nil, setupErr(err)
	}
	sb.cg = cg
	trace(t0, "cgroup")

	// 9. Start the program confined.
	stdin, closeIn, err := openStdio(l.Stdin, os.O_RDONLY)
	if err != nil {
		return nil, setupErr(err)
	}
	defer closeIn()
	stdout, stderr := l.Stdout, l.Stderr
	if stdout == nil {
		stdout = os.Stdout
	}
	if stderr == nil {
		stderr = os.Stderr
	}
	setup := &containerSetup{name: spec.Name, stateRoot: filepath.Join(dir, "runc"), rootfs: rootfs,
		uid: uid, nsRootUID: cfg.NSRootUID(uint32(index)), userns: cfg.UserNamespace, cgroupRel: cg.Rel,
		devices: devices, privateNodes: privateNodes, rlimits: rlimits(cfg.Rlimits), seccomp: prof.Config(),
		tmpSize: tmpSize, sysView: sysView, scaffolds: scaffolds}
	argv := append([]string{spec.Program}, args...)
	ctr, err := startContainer(setup, argv, spec.Env, h.files, stdin, stdout, stderr)
	if err != nil {
		return nil, setupErr(err)
	}
	sb.ctr = ctr
	sb.State.Pid = ctr.Pid()
	go sb.wait()
	if err := writeState(cfg.RunDir, &sb.State); err != nil {
		return nil, setupErr(err)
	}
	trace(t0, "container")

	// 10. Ready: QMP answers (QEMU), or the program is running.
	if qmpPath != "" {
		if err := l.waitReady(sb, qmpPath, time.Duration(cfg.QMPTimeoutMS)*time.Millisecond); err != nil {
			return nil, err
		}
	}
	trace(t0, "ready")
	l.logf("dmsandbox: %s: pid %d uid %d profile %s cgroup %s (%s)\n", spec.Name, sb.State.Pid, uid, spec.Profile, cg.Rel, cg.Mode)
	return sb, nil
}

// waitReady waits for the QMP readiness check, the program's exit or a
// signal, whichever comes first.
func (l *Launcher) waitReady(sb *Sandbox, qmpPath string, timeout time.Duration) error {
	ready := make(chan error, 1)
	go func() {
		_, err := waitQMP(qmpPath, timeout)
		ready <- err
	}()
	select {
	case err := <-ready:
		if err != nil {
			return fmt.Errorf("%w: %s did not become ready: %w", ErrSetup, sb.State.Program, err)
		}
		return nil
	case <-sb.exited:
		return &EarlyExitError{Program: sb.State.Program, Status: ExitStatus(sb.ps), State: exitString(sb.ps)}
	case sig := <-l.Signals:
		return fmt.Errorf("%w (%v) while %s was starting", ErrInterrupted, sig, sb.State.Name)
	}
}

// trace prints the time since start of each setup step when
// DMSANDBOX_TRACE is set: the measured basis of BENCHMARKS.md.
func trace(start time.Time, step string) {
	if os.Getenv("DMSANDBOX_TRACE") != "" {
		fmt.Fprintf(os.Stderr, "dmsandbox trace: %-10s %v\n", step, time.Since(start).Round(10*time.Microsecond))
	}
}

func (l *Launcher) logf(format string, args ...any) {
	if l.Log != nil {
		fmt.Fprintf(l.Log, format, args...)
	}
}

func (sb *Sandbox) wait() {
	sb.waitOnce.Do(func() {
		sb.ps, sb.waitErr = sb.ctr.Wait()
		close(sb.exited)
	})
}

// Exited is closed when the program has exited.
func (sb *Sandbox) Exited() <-chan struct{} { return sb.exited }

// Signal forwards sig to the program.
func (sb *Sandbox) Signal(sig os.Signal) error { return sb.ctr.Signal(sig) }

// Wait waits for the program and returns its exit status in shell form:
// the exit code, or 128+signal.
func (sb *Sandbox) Wait() int {
	<-sb.exited
	return ExitStatus(sb.ps)
}

// Stop asks the program to terminate (SIGTERM), and after grace kills the
// whole cgroup. It returns the program's exit status.
func (sb *Sandbox) Stop(grace time.Duration) int {
	select {
	case <-sb.exited:
	default:
		sb.ctr.Signal(syscall.SIGTERM)
		select {
		case <-sb.exited:
		case <-time.After(grace):
			sb.cg.Kill(killTimeout)
		}
	}
	return sb.Wait()
}

// Close kills whatever is left of the sandbox and removes its cgroup and
// run directory. It is safe after Stop or Wait, and more than once.
func (sb *Sandbox) Close() error {
	sb.closeOnce.Do(func() { sb.closeErr = sb.teardown() })
	return sb.closeErr
}

// teardown undoes Start in reverse. The run directory (with state.json)
// goes only when the cgroup is gone: otherwise it stays as the record
// from which the next launcher of any name finishes the job.
func (sb *Sandbox) teardown() error {
	var errs []error
	if sb.cg != nil {
		if err := sb.cg.Kill(killTimeout); err != nil {
			errs = append(errs, err)
		}
	}
	if sb.ctr != nil {
		sb.wait()
	}
	// QEMU is gone: the last close of each loop device detaches it.
	for _, f := range sb.loops {
		f.Close()
	}
	sb.loops = nil
	if sb.cg != nil && len(errs) == 0 {
		if err := sb.cg.Delete(); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) == 0 {
		if sb.devDir != "" {
			if err := os.RemoveAll(sb.devDir); err != nil {
				errs = append(errs, err)
			}
		}
		if sb.dir != "" {
			if err := os.RemoveAll(sb.dir); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if sb.reaper != nil {
		sb.reaper.release() // it finds nothing left to do, or what we could not
	}
	if sb.indexLock != nil {
		sb.indexLock.Close()
	}
	if sb.nameLock != nil {
		sb.nameLock.Close()
	}
	return errors.Join(errs...)
}

// ExitStatus converts a process state to a shell-style exit status.
func ExitStatus(ps *os.ProcessState) int {
	if ps == nil {
		return 255
	}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ps.ExitCode()
}

func exitString(ps *os.ProcessState) string {
	if ps == nil {
		return "unknown status"
	}
	return ps.String()
}
