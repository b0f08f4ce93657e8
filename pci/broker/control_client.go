package broker

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"

	"github.com/dmsandbox/dmsandbox/pci"
	"golang.org/x/sys/unix"
)

// Controller is what the launcher needs from a broker, whether a daemon
// (ControlClient) or embedded in its own process (Embedded).
type Controller interface {
	// Open creates the session of domid, called name ("": unknown), and
	// returns its id and the client end of the session socket (caller
	// owns the file).
	Open(domid uint32, name string) (uint64, *os.File, error)
	Attach(session uint64, bdf pci.BDF, o AttachOptions) error
	Detach(session uint64, bdf pci.BDF) error
	Close(session uint64) error
	// Shutdown ends the controller: for a daemon, hangs up (which closes
	// the sessions this connection opened); embedded, closes every
	// session and the broker.
	Shutdown() error
}

// ControlClient talks to a broker daemon.
type ControlClient struct {
	mu   sync.Mutex
	conn *net.UnixConn
}

// DialControl connects to the daemon's control socket.
func DialControl(path string) (*ControlClient, error) {
	c, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		return nil, fmt.Errorf("broker: control %s: %w", path, err)
	}
	return &ControlClient{conn: c}, nil
}

func (c *ControlClient) call(req ControlRequest) (ControlReply, *os.File, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	msg, _ := json.Marshal(req)
	if _, _, err := c.conn.WriteMsgUnix(msg, nil, nil); err != nil {
		return ControlReply{}, nil, fmt.Errorf("broker: control: %w", err)
	}
	buf := make([]byte, maxControlMsg)
	oob := make([]byte, unix.CmsgSpace(4))
	n, oobn, _, _, err := c.conn.ReadMsgUnix(buf, oob)
	if err != nil {
		return ControlReply{}, nil, fmt.Errorf("broker: control: %w", err)
	}
	var f *os.File
	if oobn > 0 {
		msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
		if err == nil && len(msgs) == 1 {
			if fds, err := unix.ParseUnixRights(&msgs[0]); err == nil && len(fds) == 1 {
				unix.CloseOnExec(fds[0])
				f = os.NewFile(uintptr(fds[0]), "broker-session")
			}
		}
	}
	var rep ControlReply
	if err := json.Unmarshal(buf[:n], &rep); err != nil {
		if f != nil {
			f.Close()
		}
		return rep, nil, fmt.Errorf("broker: control reply: %w", err)
	}
	if !rep.OK {
		if f != nil {
			f.Close()
		}
		return rep, nil, errors.New("broker: " + rep.Error)
	}
	return rep, f, nil
}

// Open implements Controller.
func (c *ControlClient) Open(domid uint32, name string) (uint64, *os.File, error) {
	rep, f, err := c.call(ControlRequest{Op: "open", Domid: domid, Name: name})
	if err != nil {
		return 0, nil, err
	}
	if f == nil {
		return 0, nil, errors.New("broker: open: no session fd in the reply")
	}
	return rep.Session, f, nil
}

// Attach implements Controller.
func (c *ControlClient) Attach(session uint64, bdf pci.BDF, o AttachOptions) error {
	_, _, err := c.call(ControlRequest{Op: "attach", Session: session, BDF: bdf.String(), Options: &o})
	return err
}

// Detach implements Controller.
func (c *ControlClient) Detach(session uint64, bdf pci.BDF) error {
	_, _, err := c.call(ControlRequest{Op: "detach", Session: session, BDF: bdf.String()})
	return err
}

// Close implements Controller.
func (c *ControlClient) Close(session uint64) error {
	_, _, err := c.call(ControlRequest{Op: "close", Session: session})
	return err
}

// List returns the daemon's sessions.
func (c *ControlClient) List() ([]SessionInfo, error) {
	rep, _, err := c.call(ControlRequest{Op: "list"})
	return rep.Sessions, err
}

// Shutdown implements Controller.
func (c *ControlClient) Shutdown() error { return c.conn.Close() }
