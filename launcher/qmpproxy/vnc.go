package qmpproxy

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"
)

// VNC viewers reach QEMU through dmsandbox: QEMU runs a VNC server with
// no listener (-vnc none), dmsandbox accepts viewers in the host's network
// namespace and hands each connection over the monitor:
//
//	viewer ── TCP ──▶ dmsandbox accept
//	proxy  ── getfd {"fdname":F} + SCM_RIGHTS(conn) ──▶ QEMU
//	proxy  ── add_client {"protocol":"vnc","fdname":F} ──▶ QEMU (takes the fd)
//
// and libxl's query-vnc is answered with dmsandbox's address (Config.VNC)
// so that it records the port in xenstore as it would QEMU's.

// VNCServer is the address query-vnc reports.
type VNCServer struct {
	Host, Service, Family string // "127.0.0.1", "5900", "ipv4"
}

// AddClient hands conn (a connected socket, owned by the caller) to
// QEMU's VNC server. It takes the monitor like a client does (waiting at
// most QueueTimeout), and every reply is bounded by ReplyTimeout.
func (p *Proxy) AddClient(conn *os.File) error {
	select {
	case p.backend <- struct{}{}:
	case <-time.After(p.cfg.QueueTimeout):
		return errors.New("qmp proxy: monitor busy")
	}
	defer func() { <-p.backend }()
	b, err := p.cfg.Dial()
	if err != nil {
		return fmt.Errorf("qmp proxy: monitor: %w", err)
	}
	defer b.Close()
	s := &session{p: p, qemu: b}
	fr := newFrameReader(b, p.cfg.MaxReply)
	b.SetDeadline(time.Now().Add(p.cfg.ReplyTimeout))
	// reply reads up to the reply of id, skipping events.
	reply := func(id string) error {
		for {
			data, err := fr.next()
			if err != nil {
				return err
			}
			var m backendMsg
			if err := decode(data, &m); err != nil {
				return err
			}
			if m.Event != "" || m.QMP != nil {
				continue
			}
			var got string
			json.Unmarshal(m.ID, &got)
			if got != id {
				return fmt.Errorf("reply id %s, want %q", m.ID, id)
			}
			if m.Error != nil {
				return fmt.Errorf("%s", m.Error)
			}
			return nil
		}
	}
	fdname := fmt.Sprintf("dmsandbox-vnc-%d", internalSeq.Add(1))
	steps := []struct {
		cmd  string
		args map[string]any
		file *os.File
	}{
		{"qmp_capabilities", nil, nil},
		{"getfd", map[string]any{"fdname": fdname}, conn},
		{"add_client", map[string]any{"protocol": "vnc", "fdname": fdname, "skipauth": false}, nil},
	}
	if _, err := fr.next(); err != nil { // the greeting
		return fmt.Errorf("qmp proxy: greeting: %w", err)
	}
	for i, st := range steps {
		id := fmt.Sprintf("dmsandbox-%d", i)
		c := &command{Execute: st.cmd, Arguments: st.args}
		c.ID, _ = json.Marshal(id)
		if st.file != nil {
			err = s.writeWithFile(c.encode(), st.file)
		} else {
			_, err = b.Write(c.encode())
		}
		if err == nil {
			err = reply(id)
		}
		if err != nil {
			return fmt.Errorf("qmp proxy: %s: %w", st.cmd, err)
		}
	}
	return nil
}

// rewriteVNC answers query-vnc with dmsandbox's listener, keeping what
// QEMU reports about auth and clients. It returns nil when VNC is not
// served by dmsandbox.
func (p *Proxy) rewriteVNC(data []byte) []byte {
	v := p.cfg.VNC
	if v == nil {
		return nil
	}
	var m map[string]any
	if decode(data, &m) != nil {
		return nil
	}
	ret, _ := m["return"].(map[string]any)
	if ret == nil {
		return nil
	}
	ret["enabled"], ret["host"], ret["service"], ret["family"] = true, v.Host, v.Service, v.Family
	out, err := json.Marshal(m)
	if err != nil {
		return nil
	}
	return append(out, '\r', '\n')
}
