package launcher

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// The run directory (Config.RunDir, 0700 root) holds, per sandbox:
//
//	NAME.lock       flock held by the launcher and its reaper while NAME is live
//	index/N.lock    flock held while uid index N is in use
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
	Files       []string          `json:"files"` // names of fds 3.. in order
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

// lockFile takes an exclusive, non-blocking flock on path. It returns
// ErrConflict when another process holds it.
func lockFile(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, ErrConflict
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return f, nil
}

// isLocked tells whether someone holds the lock at path.
func isLocked(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_SH|unix.LOCK_NB); err != nil {
		return true
	}
	return false
}

// allocIndex locks the lowest free index, or the given one.
func allocIndex(runDir string, want int, count uint32) (int, *os.File, error) {
	dir := filepath.Join(runDir, "index")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return 0, nil, err
	}
	try := func(i int) (*os.File, error) {
		return lockFile(filepath.Join(dir, strconv.Itoa(i)+".lock"))
	}
	if want >= 0 {
		f, err := try(want)
		if errors.Is(err, ErrConflict) {
			return 0, nil, fmt.Errorf("%w: index %d (uid) is in use by another sandbox", ErrConflict, want)
		}
		return want, f, err
	}
	for i := 0; i < int(count); i++ {
		f, err := try(i)
		if err == nil {
			return i, f, nil
		}
		if !errors.Is(err, ErrConflict) {
			return 0, nil, err
		}
	}
	return 0, nil, fmt.Errorf("%w: all %d sandbox indexes are in use", ErrConflict, count)
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
