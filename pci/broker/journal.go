package broker

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// The state journal: one file per session under Config.StateDir, a JSON
// line per change, each fsync'd before the broker acts on it. Additions
// whose key is known up front (mappings, bindings, devices) are written
// before the backend call, so a broker killed in between leaves an entry
// whose undo may fail harmlessly rather than a mapping nobody knows of.
// A pirq is only known after the call, so it is written right after. A
// restarted broker replays every journal it finds, undoes what is live
// and removes the file (Recover).

const journalVersion = 1

type journalEntry struct {
	V       int    `json:"v"`
	Op      string `json:"op"` // open, add, del
	Session uint64 `json:"session,omitempty"`
	Domid   uint32 `json:"domid,omitempty"`
	// BootID (open entries): the host boot the session ran in. A
	// journal of another boot names a domain and backend state the
	// reboot took away (undo.go, recover).
	BootID string `json:"boot_id,omitempty"`
	Item   *Item  `json:"item,omitempty"`
}

type journal struct {
	path string
	f    *os.File // owned; closed by remove
}

func journalPath(dir string, id uint64) string {
	return filepath.Join(dir, fmt.Sprintf("session-%020d.journal", id))
}

func createJournal(dir string, id uint64, domid uint32, bootID string) (*journal, error) {
	p := journalPath(dir, id)
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("broker: state journal: %w", err)
	}
	j := &journal{path: p, f: f}
	if err := j.write(journalEntry{Op: "open", Session: id, Domid: domid, BootID: bootID}); err != nil {
		f.Close()
		os.Remove(p)
		return nil, err
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return j, nil
}

func (j *journal) write(e journalEntry) error {
	e.V = journalVersion
	b, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("broker: state journal %s: %w", j.path, err)
	}
	if _, err := j.f.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("broker: state journal %s: %w", j.path, err)
	}
	if err := j.f.Sync(); err != nil {
		return fmt.Errorf("broker: state journal %s: %w", j.path, err)
	}
	return nil
}

func (j *journal) add(it Item) error { return j.write(journalEntry{Op: "add", Item: &it}) }
func (j *journal) del(it Item) error { return j.write(journalEntry{Op: "del", Item: &it}) }

// remove deletes the journal of a session that was fully undone.
func (j *journal) remove() error {
	j.f.Close()
	if err := os.Remove(j.path); err != nil {
		return fmt.Errorf("broker: state journal: %w", err)
	}
	return nil
}

// journalState is what replaying a journal file yields.
type journalState struct {
	path    string
	session uint64
	domid   uint32
	bootID  string // "" in journals written before boot ids were
	live    liveSet
}

// readJournals replays every journal file in dir, oldest session first.
func readJournals(dir string) ([]journalState, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		if os.IsNotExist(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("broker: state dir: %w", err)
	}
	var names []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), "session-") && strings.HasSuffix(e.Name(), ".journal") {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)
	var out []journalState
	for _, n := range names {
		st, err := replayJournal(filepath.Join(dir, n))
		if err != nil {
			return out, err
		}
		out = append(out, st)
	}
	return out, nil
}

func replayJournal(path string) (journalState, error) {
	st := journalState{path: path}
	f, err := os.Open(path)
	if err != nil {
		return st, fmt.Errorf("broker: state journal: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for line := 1; sc.Scan(); line++ {
		var e journalEntry
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			// A torn last line: its action never started (the entry is
			// fsync'd before acting), so it is safe to stop here.
			break
		}
		if e.V != journalVersion {
			return st, fmt.Errorf("broker: state journal %s:%d: version %d, this build reads %d", path, line, e.V, journalVersion)
		}
		switch e.Op {
		case "open":
			st.session, st.domid, st.bootID = e.Session, e.Domid, e.BootID
		case "add":
			if e.Item != nil {
				st.live.add(*e.Item)
			}
		case "del":
			if e.Item != nil {
				st.live.remove(*e.Item)
			}
		}
	}
	return st, sc.Err()
}
