package qmpproxy

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"testing"
)

// FuzzFrame: the framer never panics, never returns more than max bytes,
// and whatever it returns is one valid JSON object.
func FuzzFrame(f *testing.F) {
	for _, s := range []string{
		greeting + "\r\n",
		`{"execute":"qmp_capabilities","id":2020372737}` + "\r\n" + `{"execute":"query-pci","id":2020372736}`,
		`{"return": [{"bus": 0, "devices": [{"qdev_id": "pci-pt-00_05.0", "regions": [{"bar": 0}]}]}], "id": 1}`,
		`{"a":"\"}{\\"}`, `{"a":[{]}`, `   {}   {}`, `{"x":"` + "\xff" + `"}`, `[]`, `{`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		fr := newFrameReader(bytes.NewReader(data), 256)
		for i := 0; i < 64; i++ {
			b, err := fr.next()
			if err != nil {
				if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, ErrFrame) && !errors.Is(err, ErrTooLarge) {
					t.Fatalf("unexpected error %v", err)
				}
				return
			}
			if len(b) > 256 || !json.Valid(b) || b[0] != '{' {
				t.Fatalf("bad frame %q", b)
			}
		}
	})
}

// FuzzCommand: whatever a client sends, the checked command the proxy
// would forward is valid JSON naming an allowed command, and a
// passthrough device_add carries a canonical PCI address.
func FuzzCommand(f *testing.F) {
	for _, s := range []string{
		`{"execute":"device_add","arguments":{"driver":"xen-pci-passthrough","id":"pci-pt-00_05.0","hostaddr":"0000:00:05.0"},"id":1}`,
		`{"execute":"query-status","id":"x"}`, `{"execute":"human-monitor-command","arguments":{"command-line":"q"}}`,
		`{"execute":"device_add","arguments":{"driver":"vfio-pci"}}`,
	} {
		f.Add([]byte(s))
	}
	p := New(Config{Hook: &fakeHook{}})
	f.Fuzz(func(t *testing.T, data []byte) {
		if !json.Valid(data) {
			return
		}
		pend, reply := p.command(data)
		if pend == nil {
			if !json.Valid(bytes.TrimSpace(reply)) {
				t.Fatalf("error reply %q", reply)
			}
			return
		}
		out := pend.cmd.encode()
		var m map[string]any
		if err := json.Unmarshal(out, &m); err != nil {
			t.Fatalf("forwarded %q: %v", out, err)
		}
		if !Allowlist[m["execute"].(string)] {
			t.Fatalf("forwarded %v", m["execute"])
		}
		if a, _ := m["arguments"].(map[string]any); a != nil && a["driver"] == passthroughDriver && pend.addID == "" {
			t.Fatalf("passthrough forwarded without a grant: %q", out)
		}
	})
}

// FuzzFromQEMU: whatever QEMU sends while a client's command is in
// flight (QEMU's side is untrusted), the proxy never panics; what it
// passes on is one JSON object and a CRLF; a reply passed on answers the
// command under the client's own id (stale or foreign ids are refused);
// and no device is recorded as granted by a reply to a command that did
// not add one.
func FuzzFromQEMU(f *testing.F) {
	const wire = `"dmsandbox-cmd-1"`
	for _, s := range []string{
		`{"return": {"status": "running", "running": true}, "id": ` + wire + `}`,
		`{"return": {}, "id": 7}`,
		`{"return": {}}`,
		`{"error": {"class": "GenericError", "desc": "x"}, "id": ` + wire + `}`,
		`{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "DEVICE_DELETED", "data": {"device": "pci-pt-00_05.0"}}`,
		`{"return": [{"label": "serial0", "filename": "pty:/dev/pts/3"}], "id": ` + wire + `}`,
		`{"return": [{"bus": 0, "devices": [{"qdev_id": "pci-pt-00_05.0"}]}], "id": ` + wire + `}`,
		`{"QMP": {"version": {}, "capabilities": []}}`,
		`{"return": 1, "id": ` + wire + `, "id": 7}`,
	} {
		f.Add([]byte(s), "query-status")
	}
	f.Add([]byte(`{"return": [], "id": `+wire+`}`), "query-chardev")
	f.Add([]byte(`{"return": {"enabled": true, "host": "0.0.0.0", "service": "5900"}, "id": `+wire+`}`), "query-vnc")
	f.Fuzz(func(t *testing.T, data []byte, execute string) {
		if !Allowlist[execute] || execute == "device_add" || execute == "device_del" {
			return
		}
		p := New(Config{Hook: &fakeHook{}})
		pend := &pending{cmd: &command{Execute: execute, ID: json.RawMessage(`7`)}, wire: json.RawMessage(wire)}
		out, isReply, err := p.fromQEMU(data, pend)
		if len(p.granted) != 0 {
			t.Fatalf("granted %v by QEMU's %q", p.granted, data)
		}
		if err != nil {
			return
		}
		if !bytes.HasSuffix(out, []byte("\r\n")) || !json.Valid(bytes.TrimSuffix(out, []byte("\r\n"))) {
			t.Fatalf("passed on %q", out)
		}
		if !isReply {
			return
		}
		var m struct {
			ID json.RawMessage `json:"id"`
		}
		if err := json.Unmarshal(out, &m); err != nil || string(m.ID) != "7" {
			t.Fatalf("reply %q passed on under id %s (%v)", out, m.ID, err)
		}
	})
}
