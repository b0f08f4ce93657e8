package broker

import (
	"errors"
	"fmt"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// Client speaks the session protocol: the Go twin of the C shim, used by
// `dmsandbox broker try`, the tests and the benchmarks. One request is in
// flight at a time.
type Client struct {
	mu   sync.Mutex
	conn *packetConn // owned; closed by Close
	seq  uint32
	buf  []byte
}

// NewClient takes ownership of f, the client end of a session.
func NewClient(f *os.File) (*Client, error) {
	return &Client{conn: newPacketConn(f), buf: make([]byte, MaxFrame+1)}, nil
}

// StatusError is a non-zero reply status.
type StatusError struct {
	Op    Op
	Errno unix.Errno
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("broker: %s refused: %s (%v)", e.Op, unix.ErrnoName(e.Errno), e.Errno)
}

// Unwrap makes errors.Is(err, unix.EPERM) work.
func (e *StatusError) Unwrap() error { return e.Errno }

// Do sends req with the next seq and waits for its reply; result (may be
// nil) receives the op's result. A refusal is a *StatusError.
func (c *Client) Do(req Request, result any) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seq++
	return c.exchange(EncodeRequest(c.seq, req), c.seq, result)
}

// Raw sends an arbitrary frame (tests: malformed input) and returns the
// reply's header and status.
func (c *Client) Raw(frame []byte) (Header, unix.Errno, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.conn.Send(frame); err != nil {
		return Header{}, 0, err
	}
	n, _, err := c.conn.Recv(c.buf)
	if err != nil {
		return Header{}, 0, err
	}
	return DecodeReply(c.buf[:n], nil)
}

// SetSeq sets the seq the next Do uses minus one (tests: repeated seq).
func (c *Client) SetSeq(s uint32) { c.mu.Lock(); c.seq = s; c.mu.Unlock() }

func (c *Client) exchange(frame []byte, seq uint32, result any) error {
	if err := c.conn.Send(frame); err != nil {
		return err
	}
	n, _, err := c.conn.Recv(c.buf)
	if err != nil {
		return err
	}
	h, status, err := DecodeReply(c.buf[:n], result)
	if err != nil {
		return err
	}
	if h.Seq != seq {
		return fmt.Errorf("%w: reply seq %d to request %d", ErrBadReply, h.Seq, seq)
	}
	if status != 0 {
		return &StatusError{Op: h.Op, Errno: status}
	}
	return nil
}

// Errno extracts the status of a Do error (0 for nil, EIO for transport
// errors).
func Errno(err error) unix.Errno {
	if err == nil {
		return 0
	}
	var se *StatusError
	if errors.As(err, &se) {
		return se.Errno
	}
	return unix.EIO
}

// Close hangs up, which makes the broker undo the session.
func (c *Client) Close() error { return c.conn.Close() }
