package qmpproxy

import (
	"bufio"
	"encoding/json"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dmsandbox/dmsandbox/pci"
)

const greeting = `{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": "Debian 1:7.2+dfsg-7+deb12u18+b3"}, "capabilities": ["oob"]}}`

// fakeQEMU is a monitor peer on a real unix socket whose behaviour each
// test scripts: it stands in for QEMU where a real one cannot misbehave
// on demand. It records every command it received.
type fakeQEMU struct {
	path string
	l    net.Listener
	mu   sync.Mutex
	got  []string
}

func newFakeQEMU(t *testing.T, serve func(q *fakeQEMU, c net.Conn, r *bufio.Reader)) *fakeQEMU {
	t.Helper()
	q := &fakeQEMU{path: filepath.Join(t.TempDir(), "qmp.sock")}
	l, err := net.Listen("unix", q.path)
	if err != nil {
		t.Fatal(err)
	}
	q.l = l
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				serve(q, c, bufio.NewReader(c))
			}()
		}
	}()
	return q
}

func (q *fakeQEMU) dial() (net.Conn, error) { return net.Dial("unix", q.path) }

func (q *fakeQEMU) record(cmd string) {
	q.mu.Lock()
	q.got = append(q.got, cmd)
	q.mu.Unlock()
}

func (q *fakeQEMU) received() []string {
	q.mu.Lock()
	defer q.mu.Unlock()
	return append([]string(nil), q.got...)
}

// readCmd reads one command line as libxl sends it.
func readCmd(r *bufio.Reader) (map[string]any, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return nil, err
	}
	var m map[string]any
	err = json.Unmarshal([]byte(line), &m)
	return m, err
}

// wellBehaved answers like QEMU: greeting, then {"return":{}} to
// everything except the replies a test gives in answers.
func wellBehaved(answers map[string]string) func(q *fakeQEMU, c net.Conn, r *bufio.Reader) {
	return func(q *fakeQEMU, c net.Conn, r *bufio.Reader) {
		c.Write([]byte(greeting + "\r\n"))
		for {
			m, err := readCmd(r)
			if err != nil {
				return
			}
			cmd, _ := m["execute"].(string)
			q.record(cmd)
			id, _ := json.Marshal(m["id"])
			ret := `{}`
			if a, ok := answers[cmd]; ok {
				ret = a
			}
			if strings.HasPrefix(ret, "EVENT+") {
				c.Write([]byte(strings.TrimPrefix(ret, "EVENT+") + "\r\n"))
				ret = `{}`
			}
			c.Write([]byte(`{"return": ` + ret + `, "id": ` + string(id) + "}\r\n"))
		}
	}
}

// fakeHook records grants and revokes; Deny refuses grants.
type fakeHook struct {
	mu      sync.Mutex
	calls   []string
	Deny    bool
	onGrant func()
}

func (h *fakeHook) Grant(domid uint32, bdf pci.BDF) error {
	h.mu.Lock()
	h.calls = append(h.calls, "grant "+bdf.String())
	h.mu.Unlock()
	if h.onGrant != nil {
		h.onGrant()
	}
	if h.Deny {
		return errNoBroker
	}
	return nil
}

func (h *fakeHook) Revoke(domid uint32, bdf pci.BDF) error {
	h.mu.Lock()
	h.calls = append(h.calls, "revoke "+bdf.String())
	h.mu.Unlock()
	return nil
}

func (h *fakeHook) Calls() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.calls...)
}

// startProxy serves cfg on a fresh socket and returns its path and a log.
func startProxy(t *testing.T, cfg Config) (string, *Proxy, *logBuf) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "qmp-libxl-1")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	lb := &logBuf{}
	cfg.Log = lb.logf
	p := New(cfg)
	done := make(chan struct{})
	go func() { p.Serve(l); close(done) }()
	t.Cleanup(func() { l.Close(); <-done })
	return path, p, lb
}

type logBuf struct {
	mu    sync.Mutex
	lines []string
}

func (l *logBuf) logf(format string, a ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, sprintf(format, a...))
}

func (l *logBuf) has(s string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, x := range l.lines {
		if strings.Contains(x, s) {
			return true
		}
	}
	return false
}

// client is libxl's side: one connection, line-oriented.
type client struct {
	t *testing.T
	c net.Conn
	r *bufio.Reader
}

func dialClient(t *testing.T, path string) *client {
	t.Helper()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	// A safety net so a broken proxy fails the test instead of hanging
	// it; no test asserts on timing.
	c.SetDeadline(time.Now().Add(30 * time.Second))
	return &client{t: t, c: c, r: bufio.NewReader(c)}
}

func (c *client) send(s string) {
	c.t.Helper()
	if _, err := c.c.Write([]byte(s + "\r\n")); err != nil {
		c.t.Fatal(err)
	}
}

// recv reads one message; ok is false at EOF.
func (c *client) recv() (map[string]any, bool) {
	c.t.Helper()
	line, err := c.r.ReadString('\n')
	if err != nil {
		return nil, false
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(line), &m); err != nil {
		c.t.Fatalf("proxy sent non-JSON %q", line)
	}
	return m, true
}

func (c *client) mustRecv() map[string]any {
	c.t.Helper()
	m, ok := c.recv()
	if !ok {
		c.t.Fatal("connection closed")
	}
	return m
}

// errDesc returns the error description of a reply, "" if none.
func errDesc(m map[string]any) string {
	e, _ := m["error"].(map[string]any)
	d, _ := e["desc"].(string)
	return d
}
