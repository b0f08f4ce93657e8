package audit

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
)

func appendN(t *testing.T, l *Log, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		r := &Record{Session: 1, Domid: 7, PID: 42, Op: "config_read", Args: fmt.Sprintf("i=%d", i), Verdict: Allow}
		if err := l.Append(r); err != nil {
			t.Fatal(err)
		}
	}
}

func newLog(t *testing.T, dir string, durable bool, max int64) *Log {
	t.Helper()
	l, err := Open(Options{Dir: dir, Durable: durable, MaxFileBytes: max})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func lines(t *testing.T, path string) [][]byte {
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.SplitAfter(data, []byte("\n"))[:bytes.Count(data, []byte("\n"))]
}

func writeLines(t *testing.T, path string, ls [][]byte) {
	if err := os.WriteFile(path, bytes.Join(ls, nil), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestVerifyIntactAcrossRotationAndReopen(t *testing.T) {
	dir := t.TempDir()
	l := newLog(t, dir, true, 2000)
	appendN(t, l, 20)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l = newLog(t, dir, false, 2000) // reopen: the chain continues
	appendN(t, l, 5)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	files, _ := Files(dir)
	if len(files) < 3 {
		t.Fatalf("want rotation into several files, got %v", files)
	}
	rep, err := Verify(files...)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Records != 25 || rep.FirstN != 1 || rep.LastN != 25 || rep.Partial {
		t.Fatalf("report %+v", rep)
	}
	// Verifying from a later file alone is a partial chain, still valid.
	if rep, err := Verify(files[1:]...); err != nil || !rep.Partial {
		t.Fatalf("partial: %+v %v", rep, err)
	}
}

func tamperCase(t *testing.T, tamper func(files []string)) error {
	dir := t.TempDir()
	l := newLog(t, dir, true, 1500)
	appendN(t, l, 12)
	l.Close()
	files, _ := Files(dir)
	tamper(files)
	_, err := Verify(files...)
	return err
}

func TestVerifyDetectsEdit(t *testing.T) {
	err := tamperCase(t, func(files []string) {
		ls := lines(t, files[0])
		ls[1] = bytes.Replace(ls[1], []byte(`"verdict":"allow"`), []byte(`"verdict":"deny!"`), 1)
		writeLines(t, files[0], ls)
	})
	if !errors.Is(err, ErrChain) || !strings.Contains(err.Error(), "modified") {
		t.Fatalf("edit not detected: %v", err)
	}
}

func TestVerifyDetectsEditOfLastRecord(t *testing.T) {
	err := tamperCase(t, func(files []string) {
		last := files[len(files)-1]
		ls := lines(t, last)
		ls[len(ls)-1] = bytes.Replace(ls[len(ls)-1], []byte(`"pid":42`), []byte(`"pid":43`), 1)
		writeLines(t, last, ls)
	})
	if !errors.Is(err, ErrChain) {
		t.Fatalf("edit of the last record not detected: %v", err)
	}
}

func TestVerifyDetectsRemoval(t *testing.T) {
	err := tamperCase(t, func(files []string) {
		ls := lines(t, files[0])
		writeLines(t, files[0], append(ls[:1:1], ls[2:]...))
	})
	if !errors.Is(err, ErrChain) || !strings.Contains(err.Error(), "does not follow") {
		t.Fatalf("removal not detected: %v", err)
	}
}

func TestVerifyDetectsReorder(t *testing.T) {
	err := tamperCase(t, func(files []string) {
		ls := lines(t, files[0])
		ls[1], ls[2] = ls[2], ls[1]
		writeLines(t, files[0], ls)
	})
	if !errors.Is(err, ErrChain) {
		t.Fatalf("reorder not detected: %v", err)
	}
}

func TestVerifyDetectsRemovedFile(t *testing.T) {
	dir := t.TempDir()
	l := newLog(t, dir, true, 1500)
	appendN(t, l, 12)
	l.Close()
	files, _ := Files(dir)
	if len(files) < 3 {
		t.Fatalf("want ≥3 files, got %d", len(files))
	}
	if _, err := Verify(append(files[:1:1], files[2:]...)...); !errors.Is(err, ErrChain) {
		t.Fatalf("missing middle file not detected: %v", err)
	}
	if _, err := Verify(files[1], files[0]); !errors.Is(err, ErrChain) {
		t.Fatalf("files out of order not detected: %v", err)
	}
}

func TestTornLastLineIsCutOnOpen(t *testing.T) {
	dir := t.TempDir()
	l := newLog(t, dir, true, 0)
	appendN(t, l, 3)
	l.Close()
	files, _ := Files(dir)
	f, _ := os.OpenFile(files[0], os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString(`{"v":1,"n":4,"time":"2026`)
	f.Close()
	l = newLog(t, dir, true, 0)
	appendN(t, l, 1)
	l.Close()
	rep, err := Verify(files...)
	if err != nil || rep.Records != 4 {
		t.Fatalf("%+v %v", rep, err)
	}
}

// TestGroupCommit holds the first fsync until 15 more appenders have
// queued; they must all be committed by one more fsync.
func TestGroupCommit(t *testing.T) {
	l := newLog(t, t.TempDir(), true, 0)
	defer l.Close()
	release := make(chan struct{})
	var once sync.Once
	l.beforeSync = func() { once.Do(func() { <-release }) }
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); appendN(t, l, 1) }()
	// Wait until the first appender is inside its fsync.
	for {
		l.mu.Lock()
		w := l.writing
		l.mu.Unlock()
		if w {
			break
		}
		runtime.Gosched()
	}
	for i := 0; i < 15; i++ {
		wg.Add(1)
		go func() { defer wg.Done(); appendN(t, l, 1) }()
	}
	for {
		l.mu.Lock()
		n := l.stats.Records
		l.mu.Unlock()
		if n == 16 {
			break
		}
		runtime.Gosched()
	}
	close(release)
	wg.Wait()
	st := l.Stats()
	if st.Records != 16 || st.Syncs != 2 {
		t.Fatalf("want 16 records in 2 fsyncs, got %+v", st)
	}
}

func TestAppendAfterClose(t *testing.T) {
	l := newLog(t, t.TempDir(), false, 0)
	l.Close()
	if err := l.Append(&Record{Op: "x"}); !errors.Is(err, ErrClosed) {
		t.Fatal(err)
	}
}

func TestFilesOrder(t *testing.T) {
	if fileName(9) >= fileName(10) || filepath.Ext(fileName(1)) != ".log" {
		t.Fatal("file names do not sort in chain order")
	}
}

func TestCopyGetsEveryLine(t *testing.T) {
	var buf bytes.Buffer
	l, err := Open(Options{Dir: t.TempDir(), Durable: true, Copy: &buf})
	if err != nil {
		t.Fatal(err)
	}
	appendN(t, l, 3)
	l.Close()
	got := bytes.Split(bytes.TrimSpace(buf.Bytes()), []byte("\n"))
	if len(got) != 3 {
		t.Fatalf("copy got %d lines", len(got))
	}
	_, head := l.LastHash()
	if r, err := parseLine(got[2]); err != nil || r.Hash != head {
		t.Fatalf("copied line: %v", err)
	}
}
