package qmpproxy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"github.com/dmsandbox/dmsandbox/pci"
)

// Config configures a Proxy. Zero durations and sizes take the defaults.
type Config struct {
	Domid uint32
	// Dial connects to QEMU's management monitor (a fresh connection
	// per client).
	Dial func() (net.Conn, error)
	// Hook grants and revokes passthrough devices; nil refuses them.
	Hook Hook
	// Allow is the command allowlist; nil means Allowlist.
	Allow map[string]bool
	// MaxCommand bounds one client message, MaxReply one of QEMU's.
	MaxCommand, MaxReply int
	// QueueTimeout bounds the wait for the monitor while another client
	// holds it; ReplyTimeout the wait for QEMU's greeting and each reply,
	// and each write; IdleTimeout a client that sends nothing.
	QueueTimeout, ReplyTimeout, IdleTimeout time.Duration
	// PTYs maps a chardev label (serial0) to the host pty libxl must be
	// told in query-chardev's filename instead of the sandbox's.
	PTYs map[string]string
	// VNC, when set, is what query-vnc reports (vnc.go).
	VNC *VNCServer
	// Files opens the host file a state command names (statefile.go);
	// nil refuses those commands.
	Files func(command, filename string) (*os.File, error)
	// Log receives one line per refused command and per failure.
	Log func(format string, args ...any)
}

// Defaults. libxl itself gives up on a QMP command after
// LIBXL_QMP_CMD_TIMEOUT (10 s) on some paths and waits 60 s on others.
const (
	DefaultMaxCommand   = 64 << 10
	DefaultMaxReply     = 4 << 20
	DefaultQueueTimeout = 10 * time.Second
	DefaultReplyTimeout = 30 * time.Second
	DefaultIdleTimeout  = 60 * time.Second
)

// maxStaleBeforeGreeting bounds the messages of a previous monitor client
// the proxy drops before QEMU's greeting.
const maxStaleBeforeGreeting = 16

// Proxy serves libxl's QMP sockets. It is safe for concurrent clients.
type Proxy struct {
	cfg     Config
	backend chan struct{} // holds a token while a client uses the monitor

	mu       sync.Mutex
	granted  map[string]pci.BDF // qdev id -> passthrough device granted
	deleting map[string]bool    // qdev ids device_del-ed, not yet gone
	wg       sync.WaitGroup
}

// New returns a proxy.
func New(cfg Config) *Proxy {
	if cfg.Hook == nil {
		cfg.Hook = DenyHook{}
	}
	if cfg.Allow == nil {
		cfg.Allow = Allowlist
	}
	if cfg.MaxCommand <= 0 {
		cfg.MaxCommand = DefaultMaxCommand
	}
	if cfg.MaxReply <= 0 {
		cfg.MaxReply = DefaultMaxReply
	}
	if cfg.QueueTimeout <= 0 {
		cfg.QueueTimeout = DefaultQueueTimeout
	}
	if cfg.ReplyTimeout <= 0 {
		cfg.ReplyTimeout = DefaultReplyTimeout
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = DefaultIdleTimeout
	}
	if cfg.Log == nil {
		cfg.Log = func(string, ...any) {}
	}
	return &Proxy{cfg: cfg, backend: make(chan struct{}, 1), granted: map[string]pci.BDF{}, deleting: map[string]bool{}}
}

// Serve accepts clients on l until l is closed, then waits for the
// clients it is serving. It takes ownership of l.
func (p *Proxy) Serve(l net.Listener) error {
	defer p.wg.Wait()
	for {
		c, err := l.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("qmp proxy: accept: %w", err)
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			p.serveConn(c)
		}()
	}
}

// Granted returns the passthrough devices currently granted, by qdev id.
func (p *Proxy) Granted() map[string]pci.BDF {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[string]pci.BDF, len(p.granted))
	for k, v := range p.granted {
		out[k] = v
	}
	return out
}

func (p *Proxy) serveConn(c net.Conn) {
	defer c.Close()
	select {
	case p.backend <- struct{}{}:
	case <-time.After(p.cfg.QueueTimeout):
		p.cfg.Log("qmp proxy: domain %d: monitor busy for %v, client dropped", p.cfg.Domid, p.cfg.QueueTimeout)
		return
	}
	defer func() { <-p.backend }()
	b, err := p.cfg.Dial()
	if err != nil {
		p.cfg.Log("qmp proxy: domain %d: monitor: %v", p.cfg.Domid, err)
		return
	}
	s := &session{p: p, client: c, qemu: b}
	s.run()
	b.Close()
	c.Close()
	s.drain()
}

// frame is one message read, or the error that ended a stream.
type frame struct {
	data []byte
	err  error
}

// session is one client connection and its monitor connection.
type session struct {
	p            *Proxy
	client, qemu net.Conn
	fromClient   chan frame
	fromQEMU     chan frame
	cfds         *fdConn // the client connection, when it can carry fds
	readers      sync.WaitGroup
}

// reader pumps frames of r into ch until an error, which it sends last.
func (s *session) reader(r io.Reader, max int, ch chan frame, done <-chan struct{}) {
	defer s.readers.Done()
	fr := newFrameReader(r, max)
	for {
		data, err := fr.next()
		select {
		case ch <- frame{data, err}:
		case <-done:
			return
		}
		if err != nil {
			return
		}
	}
}

func (s *session) drain() { s.readers.Wait() }

func (s *session) write(c net.Conn, data []byte) error {
	c.SetWriteDeadline(time.Now().Add(s.p.cfg.ReplyTimeout))
	_, err := c.Write(data)
	return err
}

// pending is the command awaiting QEMU's reply.
type pending struct {
	cmd      *command
	deadline *time.Timer
	addID    string // device_add of a granted passthrough device
	addBDF   pci.BDF
	// internal marks the proxy's own command (add-fd, remove-fd): its
	// reply is not the client's; errors go to the client under clientID.
	internal bool
	clientID json.RawMessage
	// wire is the id the command carries to QEMU: unique to this proxy
	// (internalID), whatever the client chose, so that a reply QEMU
	// still owes a previous client cannot pass for this one's.
	wire json.RawMessage
	file *os.File // sent with the command (SCM_RIGHTS), closed once sent
	// next, when set, runs on the reply and returns the command to send
	// next (nil: none) or an error reply for the client.
	next func(m *backendMsg) (*pending, []byte)
}

// replyID is the id an error reply for p carries.
func (p *pending) replyID() json.RawMessage {
	if p.internal {
		return p.clientID
	}
	return p.cmd.ID
}

func (s *session) run() {
	cfg := &s.p.cfg
	done := make(chan struct{})
	defer close(done)
	s.fromClient, s.fromQEMU = make(chan frame), make(chan frame)
	s.readers.Add(2)
	go s.reader(s.qemu, cfg.MaxReply, s.fromQEMU, done)
	var clientIn io.Reader = s.client
	if uc, ok := s.client.(*net.UnixConn); ok {
		s.cfds = &fdConn{c: uc}
		defer s.cfds.drop()
		clientIn = s.cfds
	}
	go s.reader(clientIn, cfg.MaxCommand, s.fromClient, done)

	// The greeting, passed on as QEMU sent it once it is checked. A
	// JSON object that is not the greeting can come first: QEMU finishes
	// a command the monitor's previous client left in flight after that
	// client is gone, and its reply (or an event) then goes out on the
	// chardev, now this connection. The Xen rig saw a first message
	// that was not the greeting once (hvm4, dm_restrict). Such messages
	// are dropped, a bounded number, and logged; anything else fails.
	t := time.NewTimer(cfg.ReplyTimeout)
	defer t.Stop()
	for stale := 0; ; stale++ {
		var f frame
		select {
		case f = <-s.fromQEMU:
		case <-t.C:
			cfg.Log("qmp proxy: domain %d: QEMU sent no greeting within %v", cfg.Domid, cfg.ReplyTimeout)
			return
		}
		var m backendMsg
		if f.err == nil && decode(f.data, &m) == nil && m.QMP == nil && stale < maxStaleBeforeGreeting {
			cfg.Log("qmp proxy: domain %d: dropped %.120q queued before QEMU's greeting", cfg.Domid, f.data)
			continue
		}
		if f.err != nil || decode(f.data, &m) != nil || m.QMP == nil {
			what := fmt.Sprint(f.err)
			if f.err == nil {
				what = fmt.Sprintf("%.120q", f.data) // what QEMU sent instead
			}
			cfg.Log("qmp proxy: domain %d: bad greeting from QEMU: %s", cfg.Domid, what)
			return
		}
		if s.write(s.client, append(f.data, '\r', '\n')) != nil {
			return
		}
		break
	}

	var pend *pending
	stale := 0
	idle := time.NewTimer(cfg.IdleTimeout)
	defer idle.Stop()
	for {
		var clientIn <-chan frame
		var timeout <-chan time.Time
		if pend == nil {
			clientIn, timeout = s.fromClient, idle.C
		} else {
			timeout = pend.deadline.C
		}
		select {
		case f := <-clientIn:
			if f.err != nil {
				if errors.Is(f.err, ErrFrame) || errors.Is(f.err, ErrTooLarge) {
					cfg.Log("qmp proxy: domain %d: client: %v", cfg.Domid, f.err)
					s.write(s.client, errorReply(nil, f.err.Error()))
				}
				return
			}
			p, reply := s.p.command(f.data)
			if reply == nil && stateCommands[p.cmd.Execute] {
				p, reply = s.p.withFile(p)
			} else if reply == nil {
				reply = s.attachClientFD(p)
			}
			if reply != nil {
				if s.write(s.client, reply) != nil {
					return
				}
				continue
			}
			if !s.send(p) {
				return
			}
			pend = p
		case f := <-s.fromQEMU:
			if f.err != nil {
				if pend != nil {
					s.p.abandon(pend)
					s.write(s.client, errorReply(pend.replyID(), "QEMU's monitor failed: "+f.err.Error()))
				}
				cfg.Log("qmp proxy: domain %d: QEMU: %v", cfg.Domid, f.err)
				return
			}
			out, isReply, err := s.p.fromQEMU(f.data, pend)
			if errors.Is(err, errStale) && stale < maxStale {
				// A reply QEMU owed the monitor's previous client
				// (its command's wire id is not pend's): dropped.
				stale++
				cfg.Log("qmp proxy: domain %d: dropped %.120q: %v", cfg.Domid, f.data, err)
				continue
			}
			if err != nil {
				cfg.Log("qmp proxy: domain %d: QEMU: %v", cfg.Domid, err)
				if pend != nil {
					s.p.abandon(pend)
					s.write(s.client, errorReply(pend.replyID(), "bad reply from QEMU"))
				}
				return
			}
			if !(isReply && pend.internal) {
				if s.write(s.client, out) != nil {
					return
				}
			}
			if isReply {
				done := pend
				done.deadline.Stop()
				pend = nil
				idle.Reset(cfg.IdleTimeout)
				if done.next != nil {
					var m backendMsg
					decode(f.data, &m)
					next, reply := done.next(&m)
					if reply != nil && s.write(s.client, reply) != nil {
						return
					}
					if next != nil {
						if !s.send(next) {
							return
						}
						pend = next
					}
				}
			}
		case <-timeout:
			if pend != nil {
				s.p.abandon(pend)
				cfg.Log("qmp proxy: domain %d: QEMU did not answer %s within %v", cfg.Domid, pend.cmd.Execute, cfg.ReplyTimeout)
				s.write(s.client, errorReply(pend.replyID(), fmt.Sprintf("QEMU did not answer %s within %v", pend.cmd.Execute, cfg.ReplyTimeout)))
			}
			return
		}
	}
}

// send writes p's command to QEMU (with its file, if any) and starts its
// reply timer. On failure the client has its error reply and the session
// must end.
func (s *session) send(p *pending) bool {
	p.wire = internalID("cmd")
	wire := *p.cmd
	wire.ID = p.wire
	data := wire.encode()
	var err error
	if p.file != nil {
		err = s.writeWithFile(data, p.file)
		p.file.Close() // QEMU has its own copy, or never will
		p.file = nil
	} else {
		err = s.write(s.qemu, data)
	}
	if err != nil {
		s.p.abandon(p)
		s.write(s.client, errorReply(p.replyID(), "QEMU's monitor: "+err.Error()))
		return false
	}
	p.deadline = time.NewTimer(s.p.cfg.ReplyTimeout)
	return true
}

// command checks one client command. It returns what to forward, or the
// error reply to send instead.
func (p *Proxy) command(data []byte) (*pending, []byte) {
	cmd, err := parseCommand(data)
	if err != nil {
		var id json.RawMessage
		if cmd != nil {
			id = cmd.ID
		}
		p.cfg.Log("qmp proxy: domain %d: refused malformed command: %v", p.cfg.Domid, err)
		return nil, errorReply(id, "malformed command: "+err.Error())
	}
	if !p.cfg.Allow[cmd.Execute] {
		p.cfg.Log("qmp proxy: domain %d: refused command %q (not in the allowlist)", p.cfg.Domid, cmd.Execute)
		return nil, errorReply(cmd.ID, fmt.Sprintf("command %q is not allowed", cmd.Execute))
	}
	pend := &pending{cmd: cmd}
	switch cmd.Execute {
	case "device_add":
		drv := cmd.str("driver")
		if refusedDrivers[drv] {
			p.cfg.Log("qmp proxy: domain %d: refused device_add of %q", p.cfg.Domid, drv)
			return nil, errorReply(cmd.ID, fmt.Sprintf("device %q opens host devices and is not allowed", drv))
		}
		if drv == passthroughDriver {
			bdf, err := pci.ParseBDF(cmd.str("hostaddr"))
			id := cmd.str("id")
			if err != nil || id == "" {
				p.cfg.Log("qmp proxy: domain %d: refused passthrough device_add without a valid hostaddr and id", p.cfg.Domid)
				return nil, errorReply(cmd.ID, "xen-pci-passthrough needs hostaddr (a PCI address) and id")
			}
			if err := p.cfg.Hook.Grant(p.cfg.Domid, bdf); err != nil {
				p.cfg.Log("qmp proxy: domain %d: passthrough of %s refused: %v", p.cfg.Domid, bdf, err)
				return nil, errorReply(cmd.ID, fmt.Sprintf("passthrough of %s refused: %v", bdf, err))
			}
			// QEMU opens exactly the device that was granted.
			cmd.Arguments["hostaddr"] = bdf.String()
			pend.addID, pend.addBDF = id, bdf
		}
	case "device_del":
		id := cmd.str("id")
		p.mu.Lock()
		if _, ok := p.granted[id]; ok {
			p.deleting[id] = true
		}
		p.mu.Unlock()
	}
	return pend, nil
}

// abandon undoes what command did for a command that never got a reply:
// a device_add QEMU may or may not have done stays granted (the broker
// undoes it with the session); nothing else is pending.
func (p *Proxy) abandon(pend *pending) {
	if pend.addID != "" {
		p.mu.Lock()
		p.granted[pend.addID] = pend.addBDF
		p.mu.Unlock()
	}
}

// fromQEMU checks one message of QEMU's for the client and returns the
// bytes to send and whether it is the pending command's reply.
func (p *Proxy) fromQEMU(data []byte, pend *pending) (out []byte, isReply bool, err error) {
	var m backendMsg
	if err := decode(data, &m); err != nil {
		return nil, false, err
	}
	out = append(data, '\r', '\n')
	switch {
	case m.Event != "":
		if m.Event == "DEVICE_DELETED" {
			var d struct {
				Device string `json:"device"`
			}
			json.Unmarshal(m.Data, &d)
			p.gone(d.Device)
		}
		return out, false, nil
	case m.isReply():
		if pend == nil {
			return nil, false, fmt.Errorf("%w: a reply (id %s) without a command", errStale, m.ID)
		}
		if !bytes.Equal(normID(m.ID), normID(pend.wire)) {
			return nil, false, fmt.Errorf("%w: reply id %s while waiting for %s", errStale, m.ID, pend.wire)
		}
		// The client's own id back in place of the wire one.
		defer func() { out = withID(out, pend.cmd.ID) }()
		if pend.addID != "" {
			if m.Error != nil {
				p.revoke(pend.addBDF)
			} else {
				p.mu.Lock()
				p.granted[pend.addID] = pend.addBDF
				p.mu.Unlock()
			}
		}
		if m.Return != nil {
			switch pend.cmd.Execute {
			case "query-pci":
				p.queryPCI(m.Return)
			case "query-chardev":
				if r := p.rewriteChardev(data); r != nil {
					out = r
				}
			case "query-vnc":
				if r := p.rewriteVNC(data); r != nil {
					out = r
				}
			}
		}
		return out, true, nil
	}
	return nil, false, errors.New("neither an event nor a reply")
}

// errStale: a reply from QEMU that answers no command of this
// connection. The monitor's previous client can leave a command in
// flight (it timed out, or hung up); QEMU still answers it, on whatever
// connection the chardev has by then. Up to maxStale are dropped per
// connection; more, and the connection ends.
var errStale = errors.New("not a reply to this connection's command")

const maxStale = 16

// withID returns the reply line out (JSON and CRLF) with its "id" set
// to id, or removed when id is nil (the client sent none).
func withID(out []byte, id json.RawMessage) []byte {
	var m map[string]json.RawMessage
	if decode(bytes.TrimSpace(out), &m) != nil {
		return out // fromQEMU decoded it already; not reached
	}
	if id == nil {
		delete(m, "id")
	} else {
		m["id"] = id
	}
	b, err := json.Marshal(m)
	if err != nil {
		return out
	}
	return append(b, '\r', '\n')
}

// normID makes an absent id and a null one the same (QEMU omits "id"
// when the command had none; a peer may send null).
func normID(id json.RawMessage) []byte {
	id = bytes.TrimSpace(id)
	if bytes.Equal(id, []byte("null")) {
		return nil
	}
	return id
}

// gone revokes the device with qdev id, if it was granted.
func (p *Proxy) gone(id string) {
	p.mu.Lock()
	bdf, ok := p.granted[id]
	if ok {
		delete(p.granted, id)
		delete(p.deleting, id)
	}
	p.mu.Unlock()
	if ok {
		p.revoke(bdf)
	}
}

func (p *Proxy) revoke(bdf pci.BDF) {
	if err := p.cfg.Hook.Revoke(p.cfg.Domid, bdf); err != nil {
		p.cfg.Log("qmp proxy: domain %d: revoke %s: %v", p.cfg.Domid, bdf, err)
	}
}

// queryPCI revokes every device being deleted that QEMU no longer lists:
// libxl polls query-pci after device_del, and DEVICE_DELETED may have
// gone to no client at all.
func (p *Proxy) queryPCI(ret json.RawMessage) {
	var buses []struct {
		Devices []struct {
			QdevID string `json:"qdev_id"`
		} `json:"devices"`
	}
	if json.Unmarshal(ret, &buses) != nil {
		return
	}
	present := map[string]bool{}
	for _, b := range buses {
		for _, d := range b.Devices {
			present[d.QdevID] = true
		}
	}
	p.mu.Lock()
	var gone []string
	for id := range p.deleting {
		if !present[id] {
			gone = append(gone, id)
		}
	}
	p.mu.Unlock()
	for _, id := range gone {
		p.gone(id)
	}
}

// rewriteChardev replaces the sandbox's pty names by the host's in a
// query-chardev reply. It returns nil when nothing changes.
func (p *Proxy) rewriteChardev(data []byte) []byte {
	if len(p.cfg.PTYs) == 0 {
		return nil
	}
	var m map[string]any
	if decode(data, &m) != nil {
		return nil
	}
	list, _ := m["return"].([]any)
	changed := false
	for _, it := range list {
		cd, _ := it.(map[string]any)
		label, _ := cd["label"].(string)
		if host, ok := p.cfg.PTYs[label]; ok {
			cd["filename"] = "pty:" + host
			changed = true
		}
	}
	if !changed {
		return nil
	}
	b, err := json.Marshal(m)
	if err != nil {
		return nil
	}
	return append(b, '\r', '\n')
}
