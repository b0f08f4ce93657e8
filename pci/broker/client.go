package broker

import (
	"errors"
	"fmt"
	"os"
	"sync"

	"github.com/dmsandbox/dmsandbox/pci"
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
	return checkReply(c.buf[:n], seq, result)
}

func checkReply(frame []byte, seq uint32, result any) error {
	h, status, err := DecodeReply(frame, result)
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

// AnyBDF passed to OpenFile with FileMSIXBar lets the broker pick the
// session device whose MSI-X table or PBA holds addr (WireAnyBDF).
var AnyBDF = BDFFromWire(WireAnyBDF)

// OpenFile asks for a read-only fd of file (File*) of session device bdf;
// addr is 0, or for FileMSIXBar a host address in the MSI-X table or PBA
// (bdf may then be AnyBDF). The reply's Base and Size are the BAR's for
// FileMSIXBar. A refusal is a *StatusError and returns no file.
func (c *Client) OpenFile(bdf pci.BDF, file uint32, addr uint64) (*os.File, OpenFileReply, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seq++
	var rep OpenFileReply
	if err := c.conn.Send(EncodeRequest(c.seq, &OpenFile{BDF: WireBDF(bdf), File: file, Addr: addr})); err != nil {
		return nil, rep, err
	}
	n, f, err := c.conn.RecvFile(c.buf, fmt.Sprintf("broker:%s/%s", bdf, FileName(file)))
	if err != nil {
		return nil, rep, err
	}
	if err := checkReply(c.buf[:n], c.seq, &rep); err != nil {
		if f != nil {
			f.Close()
		}
		return nil, OpenFileReply{}, err
	}
	if f == nil {
		return nil, OpenFileReply{}, fmt.Errorf("%w: open_file of %s %s succeeded without an fd", ErrBadReply, bdf, FileName(file))
	}
	return f, rep, nil
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
