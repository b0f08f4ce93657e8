package broker

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/dmsandbox/dmsandbox/pci"
	"github.com/dmsandbox/dmsandbox/pci/audit"
	"golang.org/x/sys/unix"
)

// Peer is who opened a session, from SO_PEERCRED of the control
// connection (or the embedding launcher's own process), and the device
// model's pid once the launcher names it at attach.
type Peer struct {
	PID int32  `json:"pid"`
	UID uint32 `json:"uid"`
}

// Session is one domain's channel to the broker. It holds the devices
// attached to the domain and everything done on their behalf.
type Session struct {
	b     *Broker
	ID    uint64
	Domid uint32
	// Name is the domain's name as the launcher gave it (libxl's -name),
	// "" if none: name-keyed authorisations match on it.
	Name string
	Peer Peer

	conn *packetConn // broker end of the session socket; owned, closed by serve

	mu   sync.Mutex
	devs map[pci.BDF]*sessionDevice
	// handed are the devices whose files (open_file) this session's
	// client holds: fds the broker cannot take back, so such a device
	// stays reserved for this session until it ends, detached or not.
	handed  map[pci.BDF]bool
	live    liveSet
	journal *journal
	closed  bool
	hello   bool
	lastSeq uint32
	done    chan struct{} // closed when serve returns
}

// serve answers frames until the client hangs up, then undoes the
// session. It owns s.conn.
func (s *Session) serve() {
	defer close(s.done)
	defer s.conn.Close()
	buf := make([]byte, MaxFrame+1)
	for {
		n, cred, err := s.conn.Recv(buf)
		if err != nil {
			if !errors.Is(err, io.EOF) {
				s.b.event(s, "session_error", err.Error())
			}
			break
		}
		reply, file := s.handleFrame(buf[:n], cred)
		err = s.conn.SendFile(reply, file)
		if file != nil {
			file.Close() // the client has its own copy now (or none: the send failed)
		}
		if err != nil {
			s.b.event(s, "session_error", "reply: "+err.Error())
			break
		}
	}
	// EOF for whatever reason: QEMU exited or crashed, the launcher was
	// killed, the domain was destroyed. Undo everything.
	if s.close("client hung up") {
		s.b.domainEnded(s.Domid)
	}
}

// handleFrame decodes, checks, executes and audits one frame and returns
// the reply, and the fd to send with it (open_file; the caller closes
// it). It never panics on client input.
//
// cred is the sender's pid/uid as the kernel saw it (SO_PASSCRED); the
// audit record carries it, falling back to the session's opener.
func (s *Session) handleFrame(frame []byte, cred *unix.Ucred) ([]byte, *os.File) {
	start := time.Now()
	peer := s.Peer
	if cred != nil {
		peer = Peer{PID: cred.Pid, UID: cred.Uid}
	}
	h, req, err := DecodeRequest(frame)
	if err != nil {
		var fe *FrameError
		errors.As(err, &fe)
		rec := s.record(start, peer, h.Op.String(), fmt.Sprintf("%d bytes", len(frame)), audit.Malformed, fe.Errno, fe.Why)
		if aerr := s.b.audit(rec); aerr != nil {
			return s.auditFailed(h, aerr), nil
		}
		return EncodeReply(h.Op, h.Seq, fe.Errno, nil), nil
	}
	// The record is written before the session lock is released, so a
	// concurrent close cannot audit the undo of this request before the
	// request itself.
	s.mu.Lock()
	result, f := s.dispatch(h, req)
	verdict, errno, why := audit.Allow, unix.Errno(0), ""
	if f != nil {
		verdict, errno, why = audit.Deny, f.errno, f.why
		if f.backend {
			verdict = audit.Failed
		}
	}
	args := describe(req)
	var file *os.File
	if fr, ok := result.(*fileResult); ok {
		result, file = &fr.reply, fr.f
		args += ": " + fr.note
	}
	aerr := s.b.audit(s.record(start, peer, h.Op.String(), args, verdict, errno, why))
	s.mu.Unlock()
	if aerr != nil {
		if file != nil {
			file.Close()
		}
		return s.auditFailed(h, aerr), nil
	}
	if f != nil {
		return EncodeReply(h.Op, h.Seq, f.errno, nil), nil
	}
	return EncodeReply(h.Op, h.Seq, 0, result), file
}

// auditFailed: a request whose record is not durable must not look done.
// Fail closed: reply EIO and end the session (which undoes it).
func (s *Session) auditFailed(h Header, err error) []byte {
	s.b.logf("session %d: audit failed, closing: %v", s.ID, err)
	go s.b.CloseSession(s.ID)
	return EncodeReply(h.Op, h.Seq, unix.EIO, nil)
}

func (s *Session) record(start time.Time, peer Peer, op, args, verdict string, errno unix.Errno, why string) *audit.Record {
	return &audit.Record{
		Time: start.UTC(), Session: s.ID, Domid: s.Domid, PID: peer.PID, UID: peer.UID,
		Op: op, Args: args, Verdict: verdict, Errno: int(errno), Err: why,
		LatencyNS: time.Since(start).Nanoseconds(),
	}
}

// dispatch runs the session-level checks, then the op's handler.
func (s *Session) dispatch(h Header, req Request) (any, *refusal) {
	if s.closed {
		return nil, deny(unix.ESHUTDOWN, "session %d is closed", s.ID)
	}
	if h.Seq <= s.lastSeq {
		return nil, deny(unix.EALREADY, "seq %d not above %d", h.Seq, s.lastSeq)
	}
	s.lastSeq = h.Seq
	if h.Op != OpHello && !s.hello {
		return nil, deny(unix.ENOTCONN, "%s before hello", h.Op)
	}
	var res any
	var f *refusal
	switch r := req.(type) {
	case *Hello:
		res, f = s.doHello(r)
	case *MemoryMapping:
		res, f = s.memoryMapping(r)
	case *IoportMapping:
		res, f = s.ioportMapping(r)
	case *MapPirq:
		res, f = s.mapPirq(r)
	case *MapPirqMSI:
		res, f = s.mapPirqMSI(r)
	case *UnmapPirq:
		res, f = s.unmapPirq(r)
	case *BindPtPciIrq:
		res, f = s.bindPtPciIrq(r)
	case *UnbindPtIrq:
		res, f = s.unbindPtIrq(r)
	case *UpdateMsiIrq:
		res, f = s.updateMsiIrq(r)
	case *UnbindMsiIrq:
		res, f = s.unbindMsiIrq(r)
	case *ConfigRead:
		res, f = s.configRead(r)
	case *ConfigWrite:
		res, f = s.configWrite(r)
	case *Reset:
		res, f = s.reset(r)
	case *OpenFile:
		res, f = s.openFile(r)
	default:
		f = deny(unix.ENOSYS, "no handler for %s", h.Op)
	}
	return res, f
}

func (s *Session) doHello(r *Hello) (any, *refusal) {
	if r.Version != uint32(Version) {
		return nil, deny(unix.EPROTONOSUPPORT, "hello version %d", r.Version)
	}
	s.hello = true
	rep := &HelloReply{Domid: s.Domid}
	for _, sd := range s.sortedDevs() {
		if rep.NDevices < MaxHelloDevices {
			rep.Devices[rep.NDevices] = WireBDF(sd.dev.BDF)
		}
		rep.NDevices++
	}
	return rep, nil
}

func (s *Session) sortedDevs() []*sessionDevice {
	var out []*sessionDevice
	for _, sd := range s.devs {
		out = append(out, sd)
	}
	for i := 1; i < len(out); i++ {
		for j := i; j > 0 && out[j].dev.BDF.Less(out[j-1].dev.BDF); j-- {
			out[j], out[j-1] = out[j-1], out[j]
		}
	}
	return out
}

// close marks the session closed and undoes everything it holds. It is
// idempotent. Later frames get ESHUTDOWN.
func (s *Session) close(why string) (closedNow bool) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return false
	}
	s.closed = true
	plan := s.live.undoPlan()
	failed := s.b.undo(s.ID, s.Domid, s.Peer, plan, s.devByBDF)
	for _, it := range plan {
		if !failed[it.String()] {
			s.live.remove(it)
		}
	}
	if len(failed) == 0 {
		s.journal.remove()
	}
	s.mu.Unlock()
	s.b.forget(s, why)
	return true
}

func (s *Session) devByBDF(name string) *pci.Device {
	for _, sd := range s.devs {
		if sd.dev.BDF.String() == name {
			return sd.dev
		}
	}
	return nil
}
