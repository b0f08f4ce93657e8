package qmpproxy

import (
	"bufio"
	"encoding/json"
	"net"
	"reflect"
	"strings"
	"testing"
	"time"
)

const queryPCIWith = `[{"bus": 0, "devices": [{"qdev_id": "", "slot": 0}, {"qdev_id": "pci-pt-00_05.0", "slot": 4}]}]`
const queryPCIWithout = `[{"bus": 0, "devices": [{"qdev_id": "", "slot": 0}]}]`

// TestLibxlExchange replays the PCI hot-add conversation of
// captures/qmp-dom1.log: greeting passed on, the grant before QEMU sees
// device_add, the canonical hostaddr, one connection per exchange.
func TestLibxlExchange(t *testing.T) {
	hook := &fakeHook{}
	q := newFakeQEMU(t, wellBehaved(map[string]string{"query-pci": queryPCIWith}))
	hook.onGrant = func() {
		for _, c := range q.received() {
			if c == "device_add" {
				t.Error("QEMU got device_add before the grant")
			}
		}
	}
	path, p, _ := startProxy(t, Config{Domid: 1, Dial: q.dial, Hook: hook})

	c := dialClient(t, path)
	g := c.mustRecv()
	if _, ok := g["QMP"]; !ok {
		t.Fatalf("greeting %v", g)
	}
	c.send(`{"execute":"qmp_capabilities","id":2020372737}`)
	c.mustRecv()
	c.send(`{"execute":"device_add","arguments":{"driver":"xen-pci-passthrough","id":"pci-pt-00_05.0","hostaddr":"0000:00:05.0"},"id":2020372738}`)
	if r := c.mustRecv(); r["id"] != float64(2020372738) || errDesc(r) != "" {
		t.Fatalf("device_add reply %v", r)
	}
	c.c.Close()

	c = dialClient(t, path)
	c.mustRecv()
	c.send(`{"execute":"qmp_capabilities","id":1}`)
	c.mustRecv()
	c.send(`{"execute":"query-pci","id":2}`)
	c.mustRecv()
	if got := p.Granted(); len(got) != 1 {
		t.Errorf("granted %v", got)
	}
	if want := []string{"grant 0000:00:05.0"}; !reflect.DeepEqual(hook.Calls(), want) {
		t.Errorf("hook calls %v, want %v", hook.Calls(), want)
	}
}

// TestRevokeAfterDeleted: device_del, then DEVICE_DELETED revokes.
func TestRevokeAfterDeleted(t *testing.T) {
	hook := &fakeHook{}
	q := newFakeQEMU(t, wellBehaved(map[string]string{
		"device_del": `EVENT+{"event": "DEVICE_DELETED", "data": {"device": "pci-pt-00_05.0", "path": "/machine/peripheral/pci-pt-00_05.0"}, "timestamp": {"seconds": 1, "microseconds": 2}}`,
	}))
	path, p, _ := startProxy(t, Config{Domid: 1, Dial: q.dial, Hook: hook})
	c := dialClient(t, path)
	c.mustRecv()
	c.send(`{"execute":"device_add","arguments":{"driver":"xen-pci-passthrough","id":"pci-pt-00_05.0","hostaddr":"00:05.0"},"id":1}`)
	c.mustRecv()
	c.send(`{"execute":"device_del","arguments":{"id":"pci-pt-00_05.0"},"id":2}`)
	if ev := c.mustRecv(); ev["event"] != "DEVICE_DELETED" {
		t.Fatalf("event not passed on: %v", ev)
	}
	c.mustRecv()
	if want := []string{"grant 0000:00:05.0", "revoke 0000:00:05.0"}; !reflect.DeepEqual(hook.Calls(), want) {
		t.Errorf("hook calls %v, want %v", hook.Calls(), want)
	}
	if len(p.Granted()) != 0 {
		t.Errorf("still granted: %v", p.Granted())
	}
}

// TestRevokeByQueryPCI: no event reached a client; libxl's query-pci
// polling shows the device gone.
func TestRevokeByQueryPCI(t *testing.T) {
	hook := &fakeHook{}
	q := newFakeQEMU(t, wellBehaved(map[string]string{"query-pci": queryPCIWithout}))
	path, _, _ := startProxy(t, Config{Domid: 1, Dial: q.dial, Hook: hook})
	c := dialClient(t, path)
	c.mustRecv()
	c.send(`{"execute":"device_add","arguments":{"driver":"xen-pci-passthrough","id":"pci-pt-00_05.0","hostaddr":"0000:00:05.0"},"id":1}`)
	c.mustRecv()
	c.send(`{"execute":"query-pci","id":2}`)
	c.mustRecv()
	if n := len(hook.Calls()); n != 1 {
		t.Fatalf("revoked before device_del: %v", hook.Calls())
	}
	c.send(`{"execute":"device_del","arguments":{"id":"pci-pt-00_05.0"},"id":3}`)
	c.mustRecv()
	c.send(`{"execute":"query-pci","id":4}`)
	c.mustRecv()
	if want := []string{"grant 0000:00:05.0", "revoke 0000:00:05.0"}; !reflect.DeepEqual(hook.Calls(), want) {
		t.Errorf("hook calls %v, want %v", hook.Calls(), want)
	}
}

// TestGrantRefused: QEMU never sees a device_add the broker refused.
func TestGrantRefused(t *testing.T) {
	q := newFakeQEMU(t, wellBehaved(nil))
	path, _, lb := startProxy(t, Config{Domid: 1, Dial: q.dial, Hook: &fakeHook{Deny: true}})
	c := dialClient(t, path)
	c.mustRecv()
	c.send(`{"execute":"device_add","arguments":{"driver":"xen-pci-passthrough","id":"x","hostaddr":"0000:00:05.0"},"id":7}`)
	r := c.mustRecv()
	if !strings.Contains(errDesc(r), "refused") || r["id"] != float64(7) {
		t.Errorf("reply %v", r)
	}
	c.send(`{"execute":"query-status","id":8}`)
	c.mustRecv()
	if got := q.received(); !reflect.DeepEqual(got, []string{"query-status"}) {
		t.Errorf("QEMU received %v", got)
	}
	if !lb.has("passthrough of 0000:00:05.0 refused") {
		t.Error("refusal not logged")
	}
}

// TestDefaultHookFailsClosed: without a hook, passthrough is refused.
func TestDefaultHookFailsClosed(t *testing.T) {
	q := newFakeQEMU(t, wellBehaved(nil))
	path, _, _ := startProxy(t, Config{Domid: 1, Dial: q.dial})
	c := dialClient(t, path)
	c.mustRecv()
	c.send(`{"execute":"device_add","arguments":{"driver":"xen-pci-passthrough","id":"x","hostaddr":"0000:00:05.0"},"id":7}`)
	if !strings.Contains(errDesc(c.mustRecv()), "no broker") {
		t.Error("passthrough allowed without a broker")
	}
}

// TestRefusedCommands: outside the allowlist, malformed, or a host
// device: an error reply, logged, the connection goes on, QEMU sees
// nothing of it.
func TestRefusedCommands(t *testing.T) {
	q := newFakeQEMU(t, wellBehaved(nil))
	path, _, lb := startProxy(t, Config{Domid: 1, Dial: q.dial, Hook: &fakeHook{}})
	c := dialClient(t, path)
	c.mustRecv()
	for _, cmd := range []string{
		`{"execute":"human-monitor-command","arguments":{"command-line":"info registers"},"id":1}`,
		`{"execute":"migrate","arguments":{"uri":"exec:sh -c id"},"id":2}`,
		`{"exec-oob":"cont","id":3}`,
		`{"execute":"cont","execute":"quit","extra":1,"id":4}`,
		`{"execute":"device_add","arguments":{"driver":"vfio-pci","host":"0000:00:05.0"},"id":5}`,
		`{"execute":"device_add","arguments":{"driver":"xen-pci-passthrough","hostaddr":"../../etc","id":"x"},"id":6}`,
		`{"execute":17,"id":7}`,
		`{"arguments":{},"id":8}`,
	} {
		c.send(cmd)
		if r := c.mustRecv(); errDesc(r) == "" {
			t.Errorf("%s: reply %v", cmd, r)
		}
	}
	c.send(`{"execute":"query-status","id":9}`)
	if r := c.mustRecv(); errDesc(r) != "" {
		t.Errorf("allowed command after refusals: %v", r)
	}
	c.send(`{"execute":"query-status"}`) // no id: QEMU's reply has none either
	if r := c.mustRecv(); errDesc(r) != "" {
		t.Errorf("command without id: %v", r)
	}
	if got := q.received(); !reflect.DeepEqual(got, []string{"query-status", "query-status"}) {
		t.Errorf("QEMU received %v", got)
	}
	if !lb.has(`refused command "human-monitor-command"`) {
		t.Error("refusal not logged")
	}
}

// TestBadClientInput: oversized JSON and non-JSON get an error and a
// closed connection; the next client is served.
func TestBadClientInput(t *testing.T) {
	q := newFakeQEMU(t, wellBehaved(nil))
	path, _, _ := startProxy(t, Config{Domid: 1, Dial: q.dial, MaxCommand: 1024})
	for _, bad := range []string{
		`{"execute":"query-status","arguments":{"x":"` + strings.Repeat("A", 4096) + `"}}`,
		`this is not json`,
		`{"execute": "cont", "id": 1, }`,
		`[1,2,3]`,
	} {
		c := dialClient(t, path)
		c.mustRecv()
		c.send(bad)
		if r := c.mustRecv(); errDesc(r) == "" {
			t.Errorf("%.40q: reply %v", bad, r)
		}
		if _, ok := c.recv(); ok {
			t.Errorf("%.40q: connection left open", bad)
		}
	}
	c := dialClient(t, path)
	c.mustRecv()
	c.send(`{"execute":"query-status","id":1}`)
	if r := c.mustRecv(); errDesc(r) != "" {
		t.Errorf("proxy broken after bad clients: %v", r)
	}
}

// TestSilentQEMU: QEMU accepts and never greets, or greets and never
// answers: libxl gets a closed connection or an error reply, never a hang.
func TestSilentQEMU(t *testing.T) {
	mute := newFakeQEMU(t, func(q *fakeQEMU, c net.Conn, r *bufio.Reader) { r.ReadByte() })
	path, _, lb := startProxy(t, Config{Domid: 1, Dial: mute.dial, ReplyTimeout: 100 * time.Millisecond})
	c := dialClient(t, path)
	if m, ok := c.recv(); ok {
		t.Errorf("got %v from a QEMU that never greeted", m)
	}
	if !lb.has("no greeting") {
		t.Error("not logged")
	}

	deaf := newFakeQEMU(t, func(q *fakeQEMU, c net.Conn, r *bufio.Reader) {
		c.Write([]byte(greeting + "\r\n"))
		r.ReadString('\n')
		r.ReadByte() // never answers
	})
	path, _, _ = startProxy(t, Config{Domid: 1, Dial: deaf.dial, ReplyTimeout: 100 * time.Millisecond})
	c = dialClient(t, path)
	c.mustRecv()
	c.send(`{"execute":"query-status","id":5}`)
	if r := c.mustRecv(); !strings.Contains(errDesc(r), "did not answer query-status") || r["id"] != float64(5) {
		t.Errorf("reply %v", r)
	}
}

// TestMisbehavingQEMU: oversized, non-JSON, unsolicited and mismatched
// replies from QEMU end in an error for the client (a reply of another
// id is taken for one owed to a previous client and dropped: the client
// then gets the proxy's "did not answer").
func TestMisbehavingQEMU(t *testing.T) {
	for name, answer := range map[string]string{
		"oversized":  `{"return": "` + strings.Repeat("x", 8192) + `", "id": 1}`,
		"non-json":   `{"return": nonsense}`,
		"wrong-id":   `{"return": {}, "id": 99}`,
		"no-id":      `{"return": {}}`,
		"not-object": `"return"`,
		"neither":    `{"something": 1}`,
	} {
		t.Run(name, func(t *testing.T) {
			q := newFakeQEMU(t, func(q *fakeQEMU, c net.Conn, r *bufio.Reader) {
				c.Write([]byte(greeting + "\r\n"))
				r.ReadString('\n')
				c.Write([]byte(answer + "\r\n"))
				r.ReadByte()
			})
			path, _, _ := startProxy(t, Config{Domid: 1, Dial: q.dial, MaxReply: 4096, ReplyTimeout: 200 * time.Millisecond})
			c := dialClient(t, path)
			c.mustRecv()
			c.send(`{"execute":"query-status","id":1}`)
			if r := c.mustRecv(); errDesc(r) == "" {
				t.Errorf("reply %v", r)
			}
		})
	}
}

// TestQueue: a client that holds the monitor and sends nothing is cut
// off after IdleTimeout; the client queued behind it is then served.
func TestQueue(t *testing.T) {
	q := newFakeQEMU(t, wellBehaved(nil))
	path, _, _ := startProxy(t, Config{Domid: 1, Dial: q.dial, IdleTimeout: 200 * time.Millisecond, QueueTimeout: 20 * time.Second})
	idle := dialClient(t, path)
	idle.mustRecv()
	c := dialClient(t, path)
	c.mustRecv()
	c.send(`{"execute":"query-status","id":1}`)
	if r := c.mustRecv(); errDesc(r) != "" {
		t.Errorf("reply %v", r)
	}
	if _, ok := idle.recv(); ok {
		t.Error("idle client not cut off")
	}
}

// TestChardevRewrite: libxl learns the host pty's name.
func TestChardevRewrite(t *testing.T) {
	q := newFakeQEMU(t, wellBehaved(map[string]string{"query-chardev": `[{"frontend-open": false, "filename": "serial:/dev/fdset/1001", "label": "serial0"}, {"frontend-open": true, "filename": "unix:", "label": "dmsandbox-qmp"}]`}))
	path, _, _ := startProxy(t, Config{Domid: 1, Dial: q.dial, PTYs: map[string]string{"serial0": "/dev/pts/7"}})
	c := dialClient(t, path)
	c.mustRecv()
	c.send(`{"execute":"query-chardev","id":1}`)
	r := c.mustRecv()
	list := r["return"].([]any)
	if f := list[0].(map[string]any)["filename"]; f != "pty:/dev/pts/7" {
		t.Errorf("filename %v", f)
	}
	if f := list[1].(map[string]any)["filename"]; f != "unix:" {
		t.Errorf("other chardev changed: %v", f)
	}
}

// TestStateFileRefused: without a Files hook, a state command is refused
// before QEMU sees it.
func TestStateFileRefused(t *testing.T) {
	q := newFakeQEMU(t, wellBehaved(nil))
	path, _, _ := startProxy(t, Config{Domid: 1, Dial: q.dial})
	c := dialClient(t, path)
	c.mustRecv()
	c.send(`{"execute":"xen-save-devices-state","arguments":{"filename":"/var/lib/xen/qemu-save.1"},"id":1}`)
	if r := c.mustRecv(); errDesc(r) == "" {
		t.Errorf("reply %v", r)
	}
	if got := q.received(); len(got) != 0 {
		t.Errorf("QEMU received %v", got)
	}
}

// TestStaleBeforeGreeting: a reply or event QEMU still owed the monitor's
// previous client comes before the greeting on the next connection; the
// proxy drops it (logged) and the client sees the greeting first. A QEMU
// that never stops sending such messages, or sends non-JSON before the
// greeting, gets the connection closed.
func TestStaleBeforeGreeting(t *testing.T) {
	stale := newFakeQEMU(t, func(q *fakeQEMU, c net.Conn, r *bufio.Reader) {
		c.Write([]byte(`{"return": {"status": "paused", "running": false}, "id": 7}` + "\r\n"))
		c.Write([]byte(`{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "STOP"}` + "\r\n"))
		c.Write([]byte(greeting + "\r\n"))
		m, _ := readCmd(r)
		id, _ := json.Marshal(m["id"])
		c.Write([]byte(`{"return": {"status": "running"}, "id": ` + string(id) + "}\r\n"))
		r.ReadByte()
	})
	path, _, lb := startProxy(t, Config{Domid: 1, Dial: stale.dial})
	c := dialClient(t, path)
	if g := c.mustRecv(); g["QMP"] == nil {
		t.Fatalf("first message %v, want the greeting", g)
	}
	c.send(`{"execute":"query-status","id":1}`)
	if r := c.mustRecv(); errDesc(r) != "" || r["id"] != float64(1) {
		t.Errorf("reply %v", r)
	}
	if !lb.has("queued before QEMU's greeting") {
		t.Error("dropped messages not logged")
	}

	for name, send := range map[string]func(c net.Conn){
		"endless": func(c net.Conn) {
			for i := 0; i < 2*maxStaleBeforeGreeting; i++ {
				c.Write([]byte(`{"event": "STOP"}` + "\r\n"))
			}
			c.Write([]byte(greeting + "\r\n"))
		},
		"non-json": func(c net.Conn) { c.Write([]byte("nonsense\r\n" + greeting + "\r\n")) },
	} {
		q := newFakeQEMU(t, func(q *fakeQEMU, c net.Conn, r *bufio.Reader) { send(c); r.ReadByte() })
		path, _, lb := startProxy(t, Config{Domid: 1, Dial: q.dial, ReplyTimeout: time.Second})
		c := dialClient(t, path)
		if m, ok := c.recv(); ok {
			t.Errorf("%s: got %v", name, m)
		}
		if !lb.has("bad greeting") && !lb.has("no greeting") {
			t.Errorf("%s: not logged", name)
		}
	}
}

// TestStaleReplyAfterGreeting: a reply QEMU still owed the monitor's
// previous client can also come after the greeting, while this client's
// command is in flight, and may even carry the very id this client chose
// (libxl numbers each connection's commands alike). Commands reach QEMU
// under ids unique to the proxy, so the stale reply matches nothing and
// is dropped (logged); the client gets its own reply, under its own id.
func TestStaleReplyAfterGreeting(t *testing.T) {
	q := newFakeQEMU(t, func(q *fakeQEMU, c net.Conn, r *bufio.Reader) {
		c.Write([]byte(greeting + "\r\n"))
		m, _ := readCmd(r)
		c.Write([]byte(`{"return": {"status": "paused", "running": false}, "id": 1}` + "\r\n"))
		c.Write([]byte(`{"return": {}}` + "\r\n"))
		id, _ := json.Marshal(m["id"])
		if strings.Contains(string(id), `1`) && !strings.Contains(string(id), "dmsandbox-") {
			c.Write([]byte(`{"error": {"class": "GenericError", "desc": "the client's id reached QEMU"}, "id": 1}` + "\r\n"))
		}
		c.Write([]byte(`{"return": {"status": "running", "running": true}, "id": ` + string(id) + "}\r\n"))
		r.ReadByte()
	})
	path, _, lb := startProxy(t, Config{Domid: 1, Dial: q.dial})
	c := dialClient(t, path)
	c.mustRecv()
	c.send(`{"execute":"query-status","id":1}`)
	r := c.mustRecv()
	ret, _ := r["return"].(map[string]any)
	if errDesc(r) != "" || r["id"] != float64(1) || ret["status"] != "running" {
		t.Fatalf("reply %v", r)
	}
	if !lb.has("not a reply to this connection's command") {
		t.Error("dropped replies not logged")
	}
	// A client without an id gets a reply without one (the monitor is
	// one client's at a time: this one hangs up first).
	c.c.Close()
	c = dialClient(t, path)
	c.mustRecv()
	c.send(`{"execute":"query-status"}`)
	if r := c.mustRecv(); errDesc(r) != "" || r["id"] != nil {
		t.Fatalf("reply without id: %v", r)
	}
}
