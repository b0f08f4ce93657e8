package launcher

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// The run directory (Config.RunDir, 0700 root) holds, per sandbox:
//
//	NAME.lock       lock held by the launcher and its reaper while NAME is live
//	NAME/           0700
//	  state.json    State, written before the program starts
//	  qmp.sock      the management QMP socket (QEMU only)
//	  runc/         libcontainer's state
//
// The locks are files beside NAME/, not in it, so that removing NAME/
// never races with the lock a new launcher of the same name takes.

// StateVersion is the state.json format version.
const StateVersion = 1

// State is what a running sandbox records for ps, inspect and the reaper.
type State struct {
	Version     int               `json:"version"`
	Name        string            `json:"name"`
	Index       int               `json:"index"`
	UID         uint32            `json:"uid"`
	Pid         int               `json:"pid"` // the confined program's host pid (0 until started)
	LauncherPid int               `json:"launcher_pid"`
	ReaperPid   int               `json:"reaper_pid"`
	Program     string            `json:"program"`
	Args        []string          `json:"args"`
	Profile     string            `json:"profile"`
	UserNS      bool              `json:"user_namespace"`
	CgroupMode  CgroupMode        `json:"cgroup_mode"`
	CgroupPaths map[string]string `json:"cgroup_paths"`
	QMPSocket   string            `json:"qmp_socket,omitempty"`
	DevDir      string            `json:"dev_dir,omitempty"` // private device nodes (user namespace)
	Files       []string          `json:"files"`             // names of fds 3.. in order
	Started     time.Time         `json:"started"`
}

func sandboxDir(runDir, name string) string { return filepath.Join(runDir, name) }
func statePath(runDir, name string) string  { return filepath.Join(runDir, name, "state.json") }

// writeState replaces state.json atomically.
func writeState(runDir string, st *State) error {
	data, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	p := statePath(runDir, st.Name)
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return fmt.Errorf("write state %s: %w", p, err)
	}
	if err := os.Rename(tmp, p); err != nil {
		return fmt.Errorf("write state %s: %w", p, err)
	}
	return nil
}

// ReadState reads a sandbox's state.json.
func ReadState(runDir, name string) (*State, error) {
	if !validName(name) {
		return nil, fmt.Errorf("%w: name %q", ErrUsage, name)
	}
	p := statePath(runDir, name)
	data, err := os.ReadFile(p)
	if err != nil {
		return nil, err
	}
	var st State
	if err := json.Unmarshal(data, &st); err != nil {
		return nil, fmt.Errorf("state %s: %w", p, err)
	}
	if st.Version != StateVersion {
		return nil, fmt.Errorf("state %s: version %d not supported", p, st.Version)
	}
	return &st, nil
}

// Locks are open-file-description (OFD) record locks on the whole file:
// like flock they belong to the open file, are shared with a child that
// inherits the fd (the reaper) and vanish when the last copy closes; unlike
// flock they can be tested without being taken (F_OFD_GETLK), so `ps`
// never makes a concurrent `run` fail.

// lockFile takes an exclusive, non-blocking lock on path. It returns
// ErrConflict when another open file holds it.
func lockFile(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return nil, err
	}
	lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0, Start: 0, Len: 0}
	if err := unix.FcntlFlock(f.Fd(), unix.F_OFD_SETLK, &lk); err != nil {
		f.Close()
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EACCES) {
			return nil, ErrConflict
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return f, nil
}

// isLocked tells whether someone holds the lock at path, without taking it.
func isLocked(path string) bool {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	if err != nil {
		return false
	}
	defer f.Close()
	lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0, Start: 0, Len: 0}
	if err := unix.FcntlFlock(f.Fd(), unix.F_OFD_GETLK, &lk); err != nil {
		return false
	}
	return lk.Type != unix.F_UNLCK
}

// uidLockDir holds one lock per sandbox uid for the whole host, whatever
// the run directory: two configurations with overlapping uid ranges (a
// test, a benchmark, the production config) never hand out the same uid
// at the same time. A variable for tests only in the sense of being
// data; nothing sets it outside this package.
var uidLockDir = "/run/dmsandbox-uids"

// allocIndex locks the uid of the lowest free index, or of the given one.
func allocIndex(cfg *Config, want int) (int, *os.File, error) {
	if err := os.MkdirAll(uidLockDir, 0o700); err != nil {
		return 0, nil, err
	}
	try := func(i int) (*os.File, error) {
		uid, err := cfg.UID(uint32(i))
		if err != nil {
			return nil, err
		}
		return lockFile(filepath.Join(uidLockDir, strconv.FormatUint(uint64(uid), 10)+".lock"))
	}
	if want >= 0 {
		f, err := try(want)
		if errors.Is(err, ErrConflict) {
			return 0, nil, fmt.Errorf("%w: index %d (uid) is in use by another sandbox", ErrConflict, want)
		}
		return want, f, err
	}
	for i := 0; i < int(cfg.UIDCount); i++ {
		f, err := try(i)
		if err == nil {
			return i, f, nil
		}
		if !errors.Is(err, ErrConflict) {
			return 0, nil, err
		}
	}
	return 0, nil, fmt.Errorf("%w: all %d sandbox uids are in use", ErrConflict, cfg.UIDCount)
}

// List returns the states of the sandboxes that are live (their name lock
// is held), sorted by name.
func List(runDir string) ([]*State, error) {
	ents, err := os.ReadDir(runDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []*State
	for _, e := range ents {
		if !e.IsDir() || !validName(e.Name()) || !isLocked(filepath.Join(runDir, e.Name()+".lock")) {
			continue
		}
		st, err := ReadState(runDir, e.Name())
		if err != nil {
			continue // starting or stopping right now
		}
		out = append(out, st)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// sweepStale finishes the cleanup of every sandbox in runDir whose launcher
// and reaper are both gone (its name lock is free but its directory is
// there): a kill of the launcher's whole cgroup, or a crash of the host's
// process supervisor, must not leave confined programs running for ever.
// except is the name being started, already handled by the caller.
func sweepStale(runDir, except string, log io.Writer) {
	ents, err := os.ReadDir(runDir)
	if err != nil {
		return
	}
	for _, e := range ents {
		name := e.Name()
		if !e.IsDir() || name == except || !validName(name) {
			continue
		}
		// Only directories with a record are sandboxes; an empty one is
		// removed when its name is next started.
		if _, err := os.Stat(statePath(runDir, name)); err != nil {
			continue
		}
		lock, err := lockFile(filepath.Join(runDir, name+".lock"))
		if err != nil {
			continue // live (or starting): not ours
		}
		if err := cleanupSandbox(runDir, name); err != nil && log != nil {
			fmt.Fprintf(log, "dmsandbox: leftovers of %s: %v\n", name, err)
		}
		lock.Close()
	}
}

// WaitGone waits until no launcher or reaper holds sandbox name's lock
// and its run directory is gone, or timeout passes.
func WaitGone(runDir, name string, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if _, err := os.Stat(sandboxDir(runDir, name)); errors.Is(err, os.ErrNotExist) &&
			!isLocked(filepath.Join(runDir, name+".lock")) {
			return true
		}
		time.Sleep(5 * time.Millisecond)
	}
	return false
}
