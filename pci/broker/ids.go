package broker

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Session ids are unique across broker restarts, so that an audit record
// names one session for good: the last id handed out is kept in
// StateDir/last-session (written and fsync'd before the id is used).

const lastSessionFile = "last-session"

// loadLastID reads the counter; a missing file is 0.
func loadLastID(dir string) (uint64, error) {
	b, err := os.ReadFile(filepath.Join(dir, lastSessionFile))
	if os.IsNotExist(err) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("broker: %w", err)
	}
	n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("broker: %s: %w", filepath.Join(dir, lastSessionFile), err)
	}
	return n, nil
}

// allocID returns the next session id and persists it. Called with b.mu
// held.
func (b *Broker) allocID() (uint64, error) {
	id := b.nextID + 1
	// Never reuse the id of a journal still on disk.
	for {
		if _, err := os.Stat(journalPath(b.cfg.StateDir, id)); os.IsNotExist(err) {
			break
		}
		id++
	}
	tmp := filepath.Join(b.cfg.StateDir, lastSessionFile+".tmp")
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return 0, fmt.Errorf("broker: session id: %w", err)
	}
	_, werr := fmt.Fprintf(f, "%d\n", id)
	serr := f.Sync()
	cerr := f.Close()
	if werr != nil || serr != nil || cerr != nil {
		return 0, fmt.Errorf("broker: session id: %v %v %v", werr, serr, cerr)
	}
	if err := os.Rename(tmp, filepath.Join(b.cfg.StateDir, lastSessionFile)); err != nil {
		return 0, fmt.Errorf("broker: session id: %w", err)
	}
	if d, err := os.Open(b.cfg.StateDir); err == nil {
		d.Sync()
		d.Close()
	}
	b.nextID = id
	return id, nil
}
