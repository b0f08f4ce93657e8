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
