package qmpproxy

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// stateCommands name a host file QEMU writes (save) or reads (COLO
// restore). In the sandbox QEMU cannot open host paths, so the proxy
// opens the file (Config.Files decides which names are acceptable),
// hands QEMU the fd and names it by its fd set:
//
//	proxy ── add-fd {"opaque":...} + SCM_RIGHTS(fd) ──▶ QEMU
//	      ◀── {"return":{"fdset-id":N,"fd":M}}
//	      ── xen-save-devices-state {"filename":"/dev/fdset/N",...} ──▶   (the client's command)
//	      ◀── reply (passed to the client)
//	      ── remove-fd {"fdset-id":N} ──▶ ; its reply is the proxy's own
var stateCommands = map[string]bool{"xen-save-devices-state": true, "xen-load-devices-state": true}

var internalSeq atomic.Uint64

// internalID is the id of one of the proxy's own commands.
func internalID(name string) json.RawMessage {
	b, _ := json.Marshal("dmsandbox-" + name + "-" + strconv.FormatUint(internalSeq.Add(1), 10))
	return b
}

// withFile turns a state command into add-fd, then the command naming
// the fd set, then remove-fd. It returns the first of them or the
// client's error reply.
func (p *Proxy) withFile(client *pending) (*pending, []byte) {
	name := client.cmd.str("filename")
	if p.cfg.Files == nil {
		return nil, errorReply(client.cmd.ID, client.cmd.Execute+": no host files are handed to this device model")
	}
	f, err := p.cfg.Files(client.cmd.Execute, name)
	if err != nil {
		p.cfg.Log("qmp proxy: domain %d: refused %s of %q: %v", p.cfg.Domid, client.cmd.Execute, name, err)
		return nil, errorReply(client.cmd.ID, fmt.Sprintf("%s: %v", client.cmd.Execute, err))
	}
	add := &pending{internal: true, clientID: client.cmd.ID, file: f,
		cmd: &command{Execute: "add-fd", Arguments: map[string]any{"opaque": "dmsandbox " + client.cmd.Execute}, ID: internalID("add-fd")}}
	add.next = func(m *backendMsg) (*pending, []byte) {
		var r struct {
			Set *int `json:"fdset-id"`
		}
		if m.Error != nil || json.Unmarshal(m.Return, &r) != nil || r.Set == nil {
			return nil, errorReply(client.cmd.ID, "QEMU refused the state file's fd")
		}
		set := *r.Set
		client.cmd.Arguments["filename"] = fmt.Sprintf("/dev/fdset/%d", set)
		client.next = func(*backendMsg) (*pending, []byte) {
			return &pending{internal: true, clientID: client.cmd.ID,
				cmd: &command{Execute: "remove-fd", Arguments: map[string]any{"fdset-id": set}, ID: internalID("remove-fd")}}, nil
		}
		return client, nil
	}
	return add, nil
}

// writeWithFile writes data to QEMU with f attached (SCM_RIGHTS).
func (s *session) writeWithFile(data []byte, f *os.File) error {
	uc, ok := s.qemu.(*net.UnixConn)
	if !ok {
		return errors.New("monitor connection cannot carry fds")
	}
	uc.SetWriteDeadline(time.Now().Add(s.p.cfg.ReplyTimeout))
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var werr error
	if err := rc.Control(func(fd uintptr) {
		_, _, werr = uc.WriteMsgUnix(data, unix.UnixRights(int(fd)), nil)
	}); err != nil {
		return err
	}
	return werr
}
