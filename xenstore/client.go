package xenstore

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"
)

// DefaultPaths are where dom0 reaches xenstored, in the order
// libxenstore tries them: the daemon's socket (cxenstored and
// oxenstored), then the kernel's xenbus device. $XENSTORED_PATH, as for
// libxenstore, replaces them.
var DefaultPaths = []string{"/run/xenstored/socket", "/var/run/xenstored/socket", "/dev/xen/xenbus"}

// ErrUnavailable marks a host where no xenstored can be reached (not
// dom0, xenstored not started).
var ErrUnavailable = errors.New("xenstore unavailable")

// Timeout bounds each request: xenstored answers in microseconds, and a
// device model start must not hang on a stuck one.
const Timeout = 5 * time.Second

// Client is one connection to xenstored. It is safe for concurrent use;
// requests are serialised.
type Client struct {
	mu    sync.Mutex
	conn  io.ReadWriteCloser
	path  string
	reqID uint32
}

// Open connects to the first of paths that exists (DefaultPaths, or
// $XENSTORED_PATH, when paths is empty).
func Open(paths ...string) (*Client, error) {
	if len(paths) == 0 {
		if p := os.Getenv("XENSTORED_PATH"); p != "" {
			paths = []string{p}
		} else {
			paths = DefaultPaths
		}
	}
	var errs []error
	for _, p := range paths {
		st, err := os.Stat(p)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		var conn io.ReadWriteCloser
		if st.Mode()&os.ModeSocket != 0 {
			conn, err = net.DialTimeout("unix", p, Timeout)
		} else {
			conn, err = os.OpenFile(p, os.O_RDWR, 0)
		}
		if err != nil {
			return nil, fmt.Errorf("xenstore: %w", err)
		}
		return &Client{conn: conn, path: p}, nil
	}
	return nil, fmt.Errorf("%w: %w", ErrUnavailable, errors.Join(errs...))
}

// NewClient uses conn (a connection to xenstored, or to a fake one in
// tests). The client owns it: Close closes it.
func NewClient(conn io.ReadWriteCloser) *Client { return &Client{conn: conn, path: "conn"} }

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

// Read returns the value of path. A missing node is an error wrapping
// os.ErrNotExist (syscall.ENOENT).
func (c *Client) Read(path string) (string, error) {
	p, err := c.do(typeRead, path)
	if err != nil {
		return "", err
	}
	return string(p), nil
}

// List returns the names of path's children.
func (c *Client) List(path string) ([]string, error) {
	p, err := c.do(typeDirectory, path)
	if err != nil {
		return nil, err
	}
	names, err := splitDirectory(p)
	if err != nil {
		return nil, fmt.Errorf("xenstore: list %s: %w", path, err)
	}
	return names, nil
}

type deadliner interface{ SetDeadline(time.Time) error }

// do sends one request and reads its reply. Watch events are skipped
// (this client sets no watch, but a shared xenbus fd could carry one);
// anything else out of order ends the connection.
func (c *Client) do(typ uint32, path string) ([]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.reqID++
	want := header{Type: typ, ReqID: c.reqID}
	req, err := request(typ, c.reqID, path)
	if err != nil {
		return nil, err
	}
	if d, ok := c.conn.(deadliner); ok {
		d.SetDeadline(time.Now().Add(Timeout)) // a char device without a poller ignores it
	}
	if _, err := c.conn.Write(req); err != nil {
		return nil, fmt.Errorf("xenstore: %s %s: %w", c.path, path, err)
	}
	for {
		hb := make([]byte, headerLen)
		if _, err := io.ReadFull(c.conn, hb); err != nil {
			return nil, fmt.Errorf("xenstore: %s %s: %w", c.path, path, err)
		}
		h, err := parseHeader(hb)
		if err != nil {
			c.conn.Close()
			return nil, fmt.Errorf("xenstore: %s %s: %w", c.path, path, err)
		}
		payload := make([]byte, h.Len)
		if _, err := io.ReadFull(c.conn, payload); err != nil {
			return nil, fmt.Errorf("xenstore: %s %s: %w", c.path, path, err)
		}
		if h.Type == typeWatchEvent {
			continue
		}
		p, err := decodeReply(h, payload, want)
		if errors.Is(err, ErrProtocol) {
			c.conn.Close()
		}
		if err != nil {
			return nil, fmt.Errorf("xenstore: %s: %w", path, err)
		}
		return p, nil
	}
}
