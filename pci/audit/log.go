package audit

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"time"
)

// Options configure a Log.
type Options struct {
	// Dir holds the log files; created 0700 if missing.
	Dir string
	// Durable makes Append return only after the record is fsync'd. Off,
	// records are written and synced by a background flush every
	// FlushInterval (the "buffered" mode the benchmarks compare).
	Durable bool
	// FlushInterval of the buffered mode; default 100ms.
	FlushInterval time.Duration
	// MaxFileBytes starts a new file when the current one would grow
	// past it; default 64 MiB.
	MaxFileBytes int64
	// Copy, if set, receives every line after it is written (the syslog
	// copy). Errors from it are counted, never fatal.
	Copy io.Writer
	// CommitDelay: when the previous fsync carried records of more than
	// one appender (concurrency is evident), the next committer waits up
	// to this long for as many records as that fsync carried before
	// taking the queue, so more appenders share its fsync (PostgreSQL's
	// commit_delay idea). 0 means 100µs; negative disables it. A lone
	// appender never waits.
	CommitDelay time.Duration
}

// Stats count what the log did, for benchmarks and health output.
type Stats struct {
	Records uint64 // records appended
	Syncs   uint64 // fsyncs of log files
	Files   int    // files opened (1 + rotations)
}

// Log is an open audit log. It is safe for concurrent use.
type Log struct {
	opts Options

	mu        sync.Mutex
	cond      *sync.Cond
	f         *os.File      // current file; owned by the Log, closed by Close/rotate
	size      int64         // bytes in f
	lastN     uint64        // N of the last record appended (queued or written)
	lastHash  string        // Hash of that record
	pending   []byte        // encoded lines not yet written
	pendN     uint64        // N of the first line in pending
	durableN  uint64        // every record ≤ durableN is on stable storage
	writing   bool          // a goroutine is writing+syncing outside mu
	lastBatch uint64        // records in the last write (group commit hint)
	lastSync  time.Duration // how long the last fsync took
	err       error         // sticky write error: the log refuses further appends
	closed    bool
	stats     Stats
	done      chan struct{}
	flushed   chan struct{}

	beforeSync func() // test hook: runs outside mu before each fsync
}

const filePrefix, fileSuffix = "audit-", ".log"

func fileName(firstN uint64) string { return fmt.Sprintf("%s%020d%s", filePrefix, firstN, fileSuffix) }

// Files lists the log files of dir in chain order.
func Files(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	var out []string
	for _, e := range ents {
		n := e.Name()
		if strings.HasPrefix(n, filePrefix) && strings.HasSuffix(n, fileSuffix) && e.Type().IsRegular() {
			out = append(out, filepath.Join(dir, n))
		}
	}
	sort.Strings(out)
	return out, nil
}

// Open opens (or creates) the log in opts.Dir and resumes the chain from
// the last record of the newest file. A torn last line — a record whose
// write was cut by a crash, so it was never acknowledged — is cut off.
func Open(opts Options) (*Log, error) {
	if opts.Dir == "" {
		return nil, errors.New("audit: no directory")
	}
	if opts.FlushInterval <= 0 {
		opts.FlushInterval = 100 * time.Millisecond
	}
	if opts.MaxFileBytes <= 0 {
		opts.MaxFileBytes = 64 << 20
	}
	if opts.CommitDelay == 0 {
		opts.CommitDelay = 100 * time.Microsecond
	}
	if err := os.MkdirAll(opts.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	l := &Log{opts: opts, lastHash: genesis, done: make(chan struct{}), flushed: make(chan struct{})}
	l.cond = sync.NewCond(&l.mu)
	files, err := Files(opts.Dir)
	if err != nil {
		return nil, err
	}
	// A crash between a rotation's create and its first write leaves an
	// empty newest file; nothing in it was acknowledged, so drop it and
	// resume from the file before.
	for len(files) > 1 {
		st, err := os.Stat(files[len(files)-1])
		if err != nil || st.Size() != 0 {
			break
		}
		if err := os.Remove(files[len(files)-1]); err != nil {
			return nil, fmt.Errorf("audit: %w", err)
		}
		files = files[:len(files)-1]
	}
	if len(files) > 0 {
		if err := l.resume(files[len(files)-1]); err != nil {
			return nil, err
		}
	} else if err := l.openFile(1); err != nil {
		return nil, err
	}
	l.durableN = l.lastN
	if !opts.Durable {
		go l.flusher()
	} else {
		close(l.flushed)
	}
	return l, nil
}

func (l *Log) resume(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_APPEND, 0)
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	data, err := io.ReadAll(f)
	if err != nil {
		f.Close()
		return fmt.Errorf("audit: read %s: %w", path, err)
	}
	keep := len(data)
	if keep > 0 && data[keep-1] != '\n' {
		keep = bytes.LastIndexByte(data, '\n') + 1
		if err := f.Truncate(int64(keep)); err != nil {
			f.Close()
			return fmt.Errorf("audit: cut torn record of %s: %w", path, err)
		}
	}
	data = data[:keep]
	if len(data) > 0 {
		last := data[:len(data)-1]
		last = last[bytes.LastIndexByte(last, '\n')+1:]
		r, err := parseLine(last)
		if err != nil {
			f.Close()
			return fmt.Errorf("audit: last record of %s: %w", path, err)
		}
		l.lastN, l.lastHash = r.N, r.Hash
	}
	l.f, l.size = f, int64(keep)
	l.stats.Files++
	return nil
}

func (l *Log) openFile(firstN uint64) error {
	path := filepath.Join(l.opts.Dir, fileName(firstN))
	f, err := os.OpenFile(path, os.O_RDWR|os.O_APPEND|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	// The new name must survive a crash too, or the chain would resume
	// from the old file and fork.
	if d, err := os.Open(l.opts.Dir); err == nil {
		d.Sync()
		d.Close()
	}
	l.f, l.size = f, 0
	l.stats.Files++
	return nil
}

// ErrClosed is returned by Append after Close.
var ErrClosed = errors.New("audit: log closed")

// Append chains r (setting N, Prev, Hash, V) and queues it; when the log is
// Durable it returns after the record is on stable storage. An error means
// the record may not be durable: the broker must not act as if audited.
func (l *Log) Append(r *Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return ErrClosed
	}
	if l.err != nil {
		return l.err
	}
	r.N = l.lastN + 1
	r.Prev = l.lastHash
	if r.Time.IsZero() {
		r.Time = time.Now().UTC()
	}
	line, err := encode(r)
	if err != nil {
		return err
	}
	if len(l.pending) == 0 {
		l.pendN = r.N
	}
	l.pending = append(l.pending, line...)
	l.lastN, l.lastHash = r.N, r.Hash
	l.stats.Records++
	if !l.opts.Durable {
		return nil
	}
	my := r.N
	for l.durableN < my && l.err == nil {
		if !l.writing {
			l.writeLocked()
		} else {
			l.cond.Wait()
		}
	}
	return l.err
}

// writeLocked writes and syncs everything pending. Called with mu held;
// drops it during I/O so other appenders can queue behind (group commit).
func (l *Log) writeLocked() {
	if len(l.pending) == 0 {
		return
	}
	l.writing = true
	if l.opts.Durable && l.opts.CommitDelay > 0 && l.lastBatch > 1 {
		l.gather()
	}
	batch, firstN, lastN := l.pending, l.pendN, l.lastN
	l.lastBatch = lastN - firstN + 1
	l.pending = nil
	if l.size > 0 && l.size+int64(len(batch)) > l.opts.MaxFileBytes {
		// Rotate: the current file is already synced up to durableN.
		old := l.f
		if err := l.openFile(firstN); err != nil {
			l.fail(err)
			return
		}
		old.Close()
	}
	f := l.f
	l.mu.Unlock()
	_, err := f.Write(batch)
	if l.beforeSync != nil {
		l.beforeSync()
	}
	t0 := time.Now()
	if err == nil {
		err = f.Sync()
	}
	took := time.Since(t0)
	l.mu.Lock()
	l.lastSync = took
	l.writing = false
	if err != nil {
		l.fail(fmt.Errorf("audit: write %s: %w", f.Name(), err))
		return
	}
	l.size += int64(len(batch))
	l.stats.Syncs++
	l.durableN = lastN
	l.cond.Broadcast()
	if l.opts.Copy != nil {
		// One line per write: syslog makes each write one message.
		for len(batch) > 0 {
			i := bytes.IndexByte(batch, '\n') + 1
			l.opts.Copy.Write(batch[:i])
			batch = batch[i:]
		}
	}
}

func (l *Log) fail(err error) {
	l.writing = false
	if l.err == nil {
		l.err = err
	}
	l.cond.Broadcast()
}

// maxGather bounds gather's wait whatever the disk does.
const maxGather = 5 * time.Millisecond

// gather waits, mu held on entry and exit but released meanwhile, until
// as many records are queued as the last fsync carried, or CommitDelay
// (or a quarter of the last fsync's time, if longer) has passed. It yields rather than sleeps: Go's timers are woken through
// epoll with millisecond granularity, so a 100µs sleep often lasts 1ms,
// while the appenders it waits for arrive within tens of microseconds.
func (l *Log) gather() {
	// When fsync is slow (a busy disk) appenders need longer to come
	// back than CommitDelay; waiting up to a quarter of the last fsync
	// keeps the added latency proportionate while batches stay full.
	wait := max(l.opts.CommitDelay, l.lastSync/4)
	deadline := time.Now().Add(min(wait, maxGather))
	for l.lastN-l.pendN+1 < l.lastBatch && time.Now().Before(deadline) {
		l.mu.Unlock()
		runtime.Gosched()
		l.mu.Lock()
	}
}

// flusher writes buffered records in the non-durable mode.
func (l *Log) flusher() {
	defer close(l.flushed)
	t := time.NewTicker(l.opts.FlushInterval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-l.done:
			return
		}
		l.mu.Lock()
		for l.writing {
			l.cond.Wait()
		}
		l.writeLocked()
		l.mu.Unlock()
	}
}

// Sync makes every record appended so far durable.
func (l *Log) Sync() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	target := l.lastN
	for l.durableN < target && l.err == nil {
		if !l.writing {
			l.writeLocked()
		} else {
			l.cond.Wait()
		}
	}
	return l.err
}

// Stats returns counters.
func (l *Log) Stats() Stats {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.stats
}

// LastHash returns the hash of the newest record (the chain head).
func (l *Log) LastHash() (uint64, string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lastN, l.lastHash
}

// Close flushes and closes the log.
func (l *Log) Close() error {
	err := l.Sync()
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return err
	}
	l.closed = true
	l.mu.Unlock()
	close(l.done)
	<-l.flushed
	l.mu.Lock()
	defer l.mu.Unlock()
	if cerr := l.f.Close(); err == nil {
		err = cerr
	}
	return err
}

// ReadFile returns the records of one file, each checked against its own
// hash, without checking the chain (see Verify).
func ReadFile(path string) ([]*Record, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	defer f.Close()
	var out []*Record
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for line := 1; sc.Scan(); line++ {
		r, err := parseLine(sc.Bytes())
		if err != nil {
			return out, fmt.Errorf("%s:%d: %w", path, line, err)
		}
		out = append(out, r)
	}
	if err := sc.Err(); err != nil {
		return out, fmt.Errorf("audit: read %s: %w", path, err)
	}
	return out, nil
}
