package broker

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/dmsandbox/dmsandbox/pci"
	"golang.org/x/sys/unix"
)

// The control channel: JSON messages over a SOCK_SEQPACKET unix socket
// (one message per datagram), for the launcher and administrators.
//
//	launcher                                  broker daemon
//	   connect /run/dmsandbox/broker.sock ──▶ accept; SO_PEERCRED: uid 0 or refuse
//	   {"op":"open","domid":7,"name":"web"} ──▶ socketpair; session 3
//	                                      ◀── {"ok":true,"session":3} + SCM_RIGHTS(fd)
//	   {"op":"attach","session":3,"bdf":"0000:03:00.0","grant":{...}} ──▶
//	                                      ◀── {"ok":true}
//	   ... launcher passes the fd to QEMU ...
//	   {"op":"close","session":3}         ──▶ undo  (or: the connection ends)
//
// Sessions belong to the control connection that opened them: only it
// may attach, detach or close them, and when it ends (the launcher
// exited or was killed) its sessions are closed and undone.
//
// Pre-authorisation is keyed by domid or by domain name, not by session,
// and outlives connections and broker restarts (authz.go):
//
//	hotplug script / admin                    broker daemon
//	   {"op":"authorize","domid":7,"bdf":"0000:03:00.0"}   ──▶ stored (fsync'd), audited
//	                                      ◀── {"ok":true}
//	   {"op":"authorize","name":"web","bdf":"0000:04:00.0"} ──▶ for the domain called web, now or later
//	   {"op":"deauthorize","domid":7,"bdf":"0000:03:00.0"} ──▶ dropped; detached if dom 7's session holds it
//	   {"op":"authorizations","domid":7}  ──▶ (neither domid nor name: all)
//	                                      ◀── {"ok":true,"authorizations":[...]}

// DefaultControlSocket is where the daemon listens.
const DefaultControlSocket = "/run/dmsandbox/broker.sock"

// ControlRequest is one control message.
type ControlRequest struct {
	Op      string         `json:"op"` // open, attach, detach, close, list, authorize, deauthorize, authorizations
	Domid   uint32         `json:"domid,omitempty"`
	Name    string         `json:"name,omitempty"` // open: the domain's name; authz ops: instead of domid
	Session uint64         `json:"session,omitempty"`
	BDF     string         `json:"bdf,omitempty"`
	Options *AttachOptions `json:"options,omitempty"`
}

// ControlReply answers one ControlRequest.
type ControlReply struct {
	OK       bool          `json:"ok"`
	Error    string        `json:"error,omitempty"`
	Session  uint64        `json:"session,omitempty"`
	Sessions []SessionInfo `json:"sessions,omitempty"`
	// Authorizations answers "authorizations" (an empty list is
	// omitted).
	Authorizations []Authorization `json:"authorizations,omitempty"`
}

const maxControlMsg = 64 << 10

// ListenControl creates the control socket at path (parent 0700, socket
// 0600), replacing a stale one.
func ListenControl(path string) (*net.UnixListener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("broker: control socket: %w", err)
	}
	if c, err := net.Dial("unixpacket", path); err == nil {
		c.Close()
		return nil, fmt.Errorf("broker: control socket %s: %w: another broker is listening", path, ErrConflict)
	}
	os.Remove(path)
	l, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		return nil, fmt.Errorf("broker: control socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, fmt.Errorf("broker: control socket: %w", err)
	}
	return l, nil
}

// ServeControl accepts control connections until l is closed.
func (b *Broker) ServeControl(l *net.UnixListener) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c, err := l.AcceptUnix()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("broker: control accept: %w", err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			b.serveControlConn(c)
		}()
	}
}

// peerCred returns SO_PEERCRED of c: who is on the other end, as the
// kernel saw it at connect time.
func peerCred(c *net.UnixConn) (*unix.Ucred, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	var cred *unix.Ucred
	var cerr error
	if err := rc.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return nil, err
	}
	return cred, cerr
}

func (b *Broker) serveControlConn(c *net.UnixConn) {
	defer c.Close()
	cred, err := peerCred(c)
	if err != nil || cred.Uid != 0 {
		who := "unknown"
		if cred != nil {
			who = fmt.Sprintf("pid %d uid %d", cred.Pid, cred.Uid)
		}
		b.event(nil, "control_refused", who)
		// Answer the first request (unread data would turn our close
		// into a reset the client cannot tell from a crash), then hang up.
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		c.ReadMsgUnix(make([]byte, maxControlMsg), nil)
		b.sendControl(c, ControlReply{Error: "permission denied: the broker's control channel is root only"}, nil)
		return
	}
	peer := Peer{PID: cred.Pid, UID: cred.Uid}
	owned := map[uint64]bool{}
	defer func() {
		// The controlling launcher is gone: its sessions go with it.
		for id := range owned {
			b.CloseSession(id)
		}
	}()
	buf := make([]byte, maxControlMsg)
	for {
		n, _, _, _, err := c.ReadMsgUnix(buf, nil)
		if err != nil || n == 0 {
			return
		}
		var req ControlRequest
		if err := json.Unmarshal(buf[:n], &req); err != nil {
			b.sendControl(c, ControlReply{Error: "bad request: " + err.Error()}, nil)
			continue
		}
		rep, fd := b.control(req, peer, owned)
		err = b.sendControl(c, rep, fd)
		if fd != nil {
			fd.Close() // sent (or failed): our copy goes either way
		}
		if err != nil {
			return
		}
	}
}

func (b *Broker) control(req ControlRequest, peer Peer, owned map[uint64]bool) (ControlReply, *os.File) {
	fail := func(err error) (ControlReply, *os.File) { return ControlReply{Error: err.Error()}, nil }
	mine := func() error {
		if !owned[req.Session] {
			return fmt.Errorf("%w: session %d was not opened on this connection", ErrNoSession, req.Session)
		}
		return nil
	}
	switch req.Op {
	case "open":
		s, f, err := b.OpenSession(req.Domid, req.Name, peer)
		if err != nil {
			return fail(err)
		}
		owned[s.ID] = true
		return ControlReply{OK: true, Session: s.ID}, f
	case "attach", "detach":
		if err := mine(); err != nil {
			return fail(err)
		}
		bdf, err := pci.ParseBDF(req.BDF)
		if err != nil {
			return fail(err)
		}
		if req.Op == "detach" {
			err = b.Detach(req.Session, bdf)
		} else {
			o := AttachOptions{}
			if req.Options != nil {
				o = *req.Options
			}
			err = b.Attach(req.Session, bdf, o)
		}
		if err != nil {
			return fail(err)
		}
	case "close":
		if err := mine(); err != nil {
			return fail(err)
		}
		delete(owned, req.Session)
		if err := b.CloseSession(req.Session); err != nil {
			return fail(err)
		}
	case "list":
		return ControlReply{OK: true, Sessions: b.Sessions()}, nil
	case "authorize", "deauthorize", "authorizations":
		return b.controlAuthz(req, peer), nil
	default:
		return fail(fmt.Errorf("unknown control op %q", req.Op))
	}
	return ControlReply{OK: true}, nil
}

func (b *Broker) sendControl(c *net.UnixConn, rep ControlReply, fd *os.File) error {
	msg, err := json.Marshal(rep)
	if err != nil {
		return err
	}
	var oob []byte
	if fd != nil {
		oob = unix.UnixRights(int(fd.Fd()))
	}
	_, _, err = c.WriteMsgUnix(msg, oob, nil)
	return err
}
