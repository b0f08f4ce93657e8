package launcher

import (
	"path/filepath"

	"errors"
	"fmt"
	"golang.org/x/sys/unix"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
)

// The reaper makes cleanup survive a SIGKILL of the launcher. The launcher
// starts it (a re-exec of its own binary, in its own session so that a
// signal to the launcher's process group does not reach it) with:
//
//	fd 3  the read end of a pipe whose only write end the launcher holds
//	fd 4  the sandbox's name lock (a dup of the same open file)
//	fd 5  the sandbox's index lock
//
// When the launcher exits for any reason the kernel closes the write end,
// the reaper reads EOF, and if state.json is still there (the launcher did
// not finish its own cleanup) it kills every process of the cgroup and
// removes the cgroup and the run directory. It then exits, and the locks
// are released only then: a new sandbox of the same name cannot start
// while leftovers of the old one exist.

// ReaperCommand is the hidden subcommand name the reaper runs under.
const ReaperCommand = "reaper-internal"

type reaper struct {
	cmd  *exec.Cmd
	pipe *os.File // write end; closing it tells the reaper to act
}

func startReaper(runDir, name string, nameLock, indexLock *os.File) (*reaper, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer r.Close()
	exe, err := os.Executable()
	if err != nil {
		w.Close()
		return nil, err
	}
	cmd := exec.Command(exe, ReaperCommand, runDir, name)
	cmd.ExtraFiles = []*os.File{r, nameLock, indexLock}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		w.Close()
		return nil, fmt.Errorf("start reaper: %w", err)
	}
	return &reaper{cmd: cmd, pipe: w}, nil
}

// release tells the reaper the launcher is done and waits for it.
func (r *reaper) release() {
	r.pipe.Close()
	r.cmd.Wait()
}

// RunReaper is the reaper process's main (args: RUNDIR NAME).
func RunReaper(args []string) int {
	if len(args) != 2 || !filepath.IsAbs(args[0]) || !validName(args[1]) {
		fmt.Fprintln(os.Stderr, "dmsandbox reaper: internal command, not for people")
		return 2
	}
	// Only a launcher can have started us: fd 3 is a pipe and fd 4 is an
	// open file of RUNDIR/NAME.lock holding its lock. Without that proof
	// this command could be used to destroy a live sandbox.
	if err := checkReaperFds(args[0], args[1]); err != nil {
		fmt.Fprintf(os.Stderr, "dmsandbox reaper: %v\n", err)
		return 2
	}
	// Terminal and session signals are for the launcher, not for us.
	signal.Ignore(syscall.SIGHUP, syscall.SIGINT, syscall.SIGTERM, syscall.SIGPIPE)
	pipe := os.NewFile(3, "reaper-pipe")
	io.Copy(io.Discard, pipe) // returns at EOF (or error): the launcher is gone
	if err := cleanupSandbox(args[0], args[1]); err != nil {
		fmt.Fprintf(os.Stderr, "dmsandbox reaper: %s: %v\n", args[1], err)
		return 1
	}
	return 0
}

// cleanupSandbox kills and removes what a sandbox left, driven by its
// state.json. No state file means nothing is left to do.
func cleanupSandbox(runDir, name string) error {
	st, err := ReadState(runDir, name)
	if errors.Is(err, os.ErrNotExist) {
		// No record: nothing was started (state.json is written before
		// the cgroup and the program). A directory without it is the
		// remains of a launcher killed right after making it: empty.
		if err := os.Remove(sandboxDir(runDir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		return nil
	}
	if err != nil {
		// Unreadable state: still remove the directory so the name
		// can be used again; the cgroup cannot be found without it.
		os.RemoveAll(sandboxDir(runDir, name))
		return err
	}
	var errs []error
	planned := &Cgroup{Mode: st.CgroupMode, Paths: st.CgroupPaths}
	if !planned.exists() {
		// Killed before the cgroup was made: nothing runs, nothing to kill.
	} else if cg, err := loadCgroup(st.CgroupMode, st.CgroupPaths); err != nil {
		errs = append(errs, err)
	} else {
		cg.Rel = name
		if err := cg.Kill(killTimeout); err != nil {
			errs = append(errs, err)
		} else if err := cg.Delete(); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		// Keep the record: the next launcher tries again.
		return errors.Join(errs...)
	}
	if st.DevDir != "" && filepath.Base(st.DevDir) == name {
		if err := os.RemoveAll(st.DevDir); err != nil {
			errs = append(errs, err)
		}
	}
	if err := os.RemoveAll(sandboxDir(runDir, name)); err != nil {
		errs = append(errs, err)
	}
	// NAME.lock stays: removing a lock file someone may have open lets
	// two launchers lock two different inodes of the same name.
	return errors.Join(errs...)
}

// checkReaperFds verifies the fds a launcher hands its reaper.
func checkReaperFds(runDir, name string) error {
	var st unix.Stat_t
	if err := unix.Fstat(3, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFIFO {
		return errors.New("fd 3 is not the launcher's pipe")
	}
	var lk, want unix.Stat_t
	if err := unix.Fstat(4, &lk); err != nil {
		return errors.New("fd 4 is not the sandbox's name lock")
	}
	if err := unix.Stat(filepath.Join(runDir, name+".lock"), &want); err != nil ||
		lk.Dev != want.Dev || lk.Ino != want.Ino {
		return fmt.Errorf("fd 4 is not %s", filepath.Join(runDir, name+".lock"))
	}
	// The lock must be held through fd 4's open file: a fresh open file
	// of the same path cannot take it.
	if !isLocked(filepath.Join(runDir, name+".lock")) {
		return errors.New("the name lock is not held")
	}
	return nil
}
