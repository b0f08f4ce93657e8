package broker

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dmsandbox/dmsandbox/pci/audit"
	"golang.org/x/sys/unix"
)

const dom = 7

// A QEMU-like life of a device: every op through a real socket, then the
// teardown QEMU does, leaving only the assignment.
func TestEveryOpRoundTrip(t *testing.T) {
	r := newRig(t, "")
	s, c := r.session(dom, e1000e)
	var hr HelloReply
	c.SetSeq(100)
	if err := c.Do(&Hello{Version: 1}, &hr); err != nil || hr.Domid != dom || hr.NDevices != 1 || BDFFromWire(hr.Devices[0]) != e1000e {
		t.Fatalf("hello: %v %+v", err, hr)
	}
	must := func(req Request, res any) {
		t.Helper()
		if err := c.Do(req, res); err != nil {
			t.Fatalf("%s %s: %v", req.Op(), describe(req), err)
		}
	}
	must(&MemoryMapping{Domid: dom, Add: 1, FirstGfn: 0xe0000, FirstMfn: 0xfeb80, NrMfns: 0x20}, nil)
	must(&IoportMapping{Domid: dom, Add: 1, FirstGport: 0xc000, FirstMport: 0xc040, NrPorts: 0x20}, nil)
	var intx, msix PirqReply
	must(&MapPirq{Domid: dom, Index: 10, Pirq: -1}, &intx)
	must(&BindPtPciIrq{Domid: dom, MachineIrq: uint8(intx.Pirq), Bus: 0, Device: 5, Intx: 0}, nil)
	must(&MapPirqMSI{Domid: dom, Index: -1, Pirq: -1, Devfn: 4 << 3, Bus: 0, EntryNr: 4, TableBase: 0xfebd0000}, &msix)
	must(&UpdateMsiIrq{Domid: dom, Gvec: 0x41, Pirq: uint32(msix.Pirq), Gtable: 0xf1000000}, nil)
	var cr ConfigReadReply
	must(&ConfigRead{BDF: WireBDF(e1000e), Offset: 0, Size: 2}, &cr)
	if cr.Value != 0x8086 {
		t.Errorf("vendor %#x", cr.Value)
	}
	must(&ConfigRead{BDF: WireBDF(e1000e), Offset: 4, Size: 2}, &cr)
	must(&ConfigWrite{BDF: WireBDF(e1000e), Offset: 4, Size: 2, Value: cr.Value | 0x7}, nil)
	// The ROM BAR's enable bit (SeaBIOS runs option ROMs), not its address.
	must(&ConfigRead{BDF: WireBDF(e1000e), Offset: 0x30, Size: 4}, &cr)
	must(&ConfigWrite{BDF: WireBDF(e1000e), Offset: 0x30, Size: 4, Value: cr.Value | 1}, nil)
	must(&Reset{BDF: WireBDF(e1000e)}, nil)
	if got := len(r.fake.State().Summary()); got != 7 {
		t.Fatalf("live in backend: %v", r.fake.State().Summary())
	}
	must(&UnbindMsiIrq{Domid: dom, Gvec: 0x41, Pirq: uint32(msix.Pirq)}, nil)
	must(&UnmapPirq{Domid: dom, Pirq: msix.Pirq}, nil)
	must(&UnbindPtIrq{Domid: dom, MachineIrq: uint8(intx.Pirq), Device: 5}, nil)
	must(&UnmapPirq{Domid: dom, Pirq: intx.Pirq}, nil)
	must(&MemoryMapping{Domid: dom, Add: 0, FirstGfn: 0xe0000, FirstMfn: 0xfeb80, NrMfns: 0x20}, nil)
	must(&IoportMapping{Domid: dom, Add: 0, FirstGport: 0xc000, FirstMport: 0xc040, NrPorts: 0x20}, nil)
	if sum := r.fake.State().Summary(); len(sum) != 1 || !strings.HasPrefix(sum[0], "assigned 0000:00:04.0") {
		t.Fatalf("after teardown: %v", sum)
	}
	c.Close()
	r.waitGone(s)
	if st := r.fake.State(); !st.Empty() {
		t.Fatalf("after close: %v", st.Summary())
	}
	// Every request was audited, and the chain verifies.
	n := 0
	for _, rec := range r.records() {
		if rec.Verdict == audit.Allow && rec.Session == s.ID && !strings.HasPrefix(rec.Op, "undo") {
			n++
		}
	}
	if n != 20 {
		t.Errorf("%d allowed requests audited, want 20", n)
	}
	files, _ := audit.Files(filepath.Join(r.dir, "audit"))
	if _, err := audit.Verify(files...); err != nil {
		t.Fatal(err)
	}
}

// Adversarial input: each refused with its errno, audited, and the
// session keeps working.
func TestAdversarial(t *testing.T) {
	root := copyTree(t)
	// Make BAR3 of 00:05.0 sub-page so its page is shared.
	res := filepath.Join(root, "sys/devices/pci0000:00/0000:00:05.0/resource")
	data, err := os.ReadFile(res)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(data), "\n")
	lines[3] = "0x00000000fe000800 0x00000000fe000fff 0x0000000000040200"
	os.WriteFile(res, []byte(strings.Join(lines, "\n")), 0o644)

	r := newRig(t, root)
	_, c := r.session(dom, e1000e, pci05)
	_, c2 := r.session(dom+1, other)
	var theirs PirqReply
	if err := c2.Do(&MapPirq{Domid: dom + 1, Index: 11, Pirq: -1}, &theirs); err != nil {
		t.Fatal(err)
	}
	if err := c.Do(&MemoryMapping{Domid: dom, Add: 1, FirstGfn: 0xe0000, FirstMfn: 0xfeb80, NrMfns: 0x10}, nil); err != nil {
		t.Fatal(err)
	}
	var mine PirqReply
	if err := c.Do(&MapPirq{Domid: dom, Index: 10, Pirq: -1}, &mine); err != nil {
		t.Fatal(err)
	}
	hdr := func(mut func(b []byte) []byte) []byte {
		return mut(EncodeRequest(5000, &ConfigRead{BDF: WireBDF(e1000e), Size: 4}))
	}
	raw := []struct {
		name  string
		frame []byte
		errno unix.Errno
	}{
		{"wrong magic", hdr(func(b []byte) []byte { b[1] = 'X'; return b }), unix.EPROTO},
		{"wrong version", hdr(func(b []byte) []byte { b[4] = 9; return b }), unix.EPROTONOSUPPORT},
		{"truncated header", hdr(func(b []byte) []byte { return b[:7] }), unix.EBADMSG},
		{"truncated body", hdr(func(b []byte) []byte { return b[:len(b)-3] }), unix.EBADMSG},
		{"lying length", hdr(func(b []byte) []byte { b[16] = 64; return b }), unix.EBADMSG},
		{"oversized frame", hdr(func(b []byte) []byte { return append(b, make([]byte, 1000)...) }), unix.EMSGSIZE},
		{"unknown op", hdr(func(b []byte) []byte { b[6] = 99; return b }), unix.ENOSYS},
		{"repeated seq", EncodeRequest(1, &ConfigRead{BDF: WireBDF(e1000e), Size: 4}), unix.EALREADY},
	}
	for _, rc := range raw {
		_, st, err := c.Raw(rc.frame)
		if err != nil || st != rc.errno {
			t.Errorf("%s: status %v err %v, want %v", rc.name, st, err, rc.errno)
		}
	}
	c.SetSeq(6000)
	pol := []struct {
		name  string
		req   Request
		errno unix.Errno
	}{
		{"other domid", &MemoryMapping{Domid: 99, Add: 1, FirstGfn: 1, FirstMfn: 0xfeb90, NrMfns: 1}, unix.ESRCH},
		{"range outside BARs", &MemoryMapping{Domid: dom, Add: 1, FirstGfn: 0xf0000, FirstMfn: 0xfee00, NrMfns: 1}, unix.ERANGE},
		{"range past the BAR end", &MemoryMapping{Domid: dom, Add: 1, FirstGfn: 0xf0000, FirstMfn: 0xfebd3, NrMfns: 2}, unix.ERANGE},
		{"straddling two BARs", &MemoryMapping{Domid: dom, Add: 1, FirstGfn: 0xf0000, FirstMfn: 0xfeb9f, NrMfns: 2}, unix.EXDEV},
		{"unaligned BAR page", &MemoryMapping{Domid: dom, Add: 1, FirstGfn: 0xf0000, FirstMfn: 0xfe000, NrMfns: 1}, unix.EINVAL},
		{"zero pages", &MemoryMapping{Domid: dom, Add: 1, FirstGfn: 0xf0000, FirstMfn: 0xfeb90, NrMfns: 0}, unix.EINVAL},
		{"overlapping live mapping (host)", &MemoryMapping{Domid: dom, Add: 1, FirstGfn: 0xf0000, FirstMfn: 0xfeb8f, NrMfns: 2}, unix.EBUSY},
		{"overlapping live mapping (guest)", &MemoryMapping{Domid: dom, Add: 1, FirstGfn: 0xe000f, FirstMfn: 0xfeba0, NrMfns: 1}, unix.EBUSY},
		{"remove what is not mapped", &MemoryMapping{Domid: dom, Add: 0, FirstGfn: 0xe0000, FirstMfn: 0xfeb80, NrMfns: 1}, unix.ENOENT},
		{"io outside BARs", &IoportMapping{Domid: dom, Add: 1, FirstGport: 0xc000, FirstMport: 0x3f8, NrPorts: 8}, unix.ERANGE},
		{"io past the BAR", &IoportMapping{Domid: dom, Add: 1, FirstGport: 0xc000, FirstMport: 0xc05f, NrPorts: 0x40}, unix.ERANGE},
		{"io straddling two BARs", &IoportMapping{Domid: dom, Add: 1, FirstGport: 0xc000, FirstMport: 0xc050, NrPorts: 0x20}, unix.EXDEV},
		{"GSI not the device's", &MapPirq{Domid: dom, Index: 11, Pirq: -1}, unix.EACCES},
		{"MSI-X entry past the table", &MapPirqMSI{Domid: dom, Index: -1, Pirq: -1, Devfn: 4 << 3, EntryNr: 5, TableBase: 0xfebd0000}, unix.EDOM},
		{"MSI vector past the count", &MapPirqMSI{Domid: dom, Index: -1, Pirq: -1, Devfn: 4 << 3, EntryNr: 1}, unix.EDOM},
		{"MSI-X table base not the BAR", &MapPirqMSI{Domid: dom, Index: -1, Pirq: -1, Devfn: 4 << 3, EntryNr: 0, TableBase: 0xfebd1000}, unix.EFAULT},
		{"MSI on a device not in the session", &MapPirqMSI{Domid: dom, Index: -1, Pirq: -1, Devfn: 3 << 3, Bus: 0, EntryNr: 0}, unix.ENODEV},
		{"MSI without capability", &MapPirqMSI{Domid: dom, Index: -1, Pirq: -1, Devfn: 5 << 3, EntryNr: 0}, unix.ENXIO},
		{"pirq of another session", &UnmapPirq{Domid: dom, Pirq: theirs.Pirq}, unix.EPERM},
		{"bind a pirq of another session", &BindPtPciIrq{Domid: dom, MachineIrq: uint8(theirs.Pirq), Device: 5}, unix.EPERM},
		{"msi-bind a pirq of another session", &UpdateMsiIrq{Domid: dom, Gvec: 0x30, Pirq: uint32(theirs.Pirq)}, unix.EPERM},
		{"msi-bind a GSI pirq", &UpdateMsiIrq{Domid: dom, Gvec: 0x30, Pirq: uint32(mine.Pirq)}, unix.EINVAL},
		{"unbind what is not bound", &UnbindPtIrq{Domid: dom, MachineIrq: uint8(mine.Pirq), Device: 5}, unix.ENOENT},
		{"config of a device not in the session", &ConfigRead{BDF: WireBDF(other), Size: 4}, unix.ENODEV},
		{"config unaligned", &ConfigRead{BDF: WireBDF(e1000e), Offset: 2, Size: 4}, unix.EINVAL},
		{"config past the end", &ConfigRead{BDF: WireBDF(e1000e), Offset: 4096, Size: 4}, unix.ERANGE},
		{"config write to a BAR", &ConfigWrite{BDF: WireBDF(e1000e), Offset: 0x10, Size: 4, Value: 0xdead0000}, unix.EROFS},
		{"config write to vendor id", &ConfigWrite{BDF: WireBDF(e1000e), Offset: 0, Size: 2, Value: 0x1234}, unix.EROFS},
		{"config write moving the ROM BAR", &ConfigWrite{BDF: WireBDF(e1000e), Offset: 0x30, Size: 4, Value: 0xfea00001}, unix.EROFS},
		{"reset a device not in the session", &Reset{BDF: WireBDF(other)}, unix.ENODEV},
	}
	for _, pc := range pol {
		if got := Errno(c.Do(pc.req, nil)); got != pc.errno {
			t.Errorf("%s: got %v (%d), want %v", pc.name, got, got, pc.errno)
		}
	}
	// The session still works.
	var cr ConfigReadReply
	if err := c.Do(&ConfigRead{BDF: WireBDF(e1000e), Size: 2}, &cr); err != nil || cr.Value != 0x8086 {
		t.Fatalf("session broken after adversarial input: %v %#x", err, cr.Value)
	}
	// Each refusal was audited with its errno.
	byErrno := map[int]int{}
	for _, rec := range r.records() {
		if rec.Verdict == audit.Deny || rec.Verdict == audit.Malformed {
			byErrno[rec.Errno]++
		}
	}
	want := map[int]int{}
	for _, rc := range raw {
		want[int(rc.errno)]++
	}
	for _, pc := range pol {
		want[int(pc.errno)]++
	}
	for e, n := range want {
		if byErrno[e] != n {
			t.Errorf("audited %d refusals with %v, want %d", byErrno[e], unix.Errno(e), n)
		}
	}
	// The other session did not notice.
	if err := c2.Do(&ConfigRead{BDF: WireBDF(other), Size: 2}, &cr); err != nil {
		t.Fatal(err)
	}
}

func TestBeforeHelloAndAfterClose(t *testing.T) {
	r := newRig(t, "")
	s, f, err := r.broker.OpenSession(dom, "", Peer{})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.broker.Attach(s.ID, e1000e, AttachOptions{}); err != nil {
		t.Fatal(err)
	}
	c, _ := NewClient(f)
	defer c.Close()
	if got := Errno(c.Do(&ConfigRead{BDF: WireBDF(e1000e), Size: 4}, nil)); got != unix.ENOTCONN {
		t.Fatalf("before hello: %v", got)
	}
	if err := c.Do(&Hello{Version: 1}, nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Do(&MemoryMapping{Domid: dom, Add: 1, FirstGfn: 0xe0000, FirstMfn: 0xfeb80, NrMfns: 1}, nil); err != nil {
		t.Fatal(err)
	}
	if err := r.broker.CloseSession(s.ID); err != nil {
		t.Fatal(err)
	}
	if st := r.fake.State(); !st.Empty() {
		t.Fatalf("close left %v", st.Summary())
	}
	for _, req := range []Request{&Hello{Version: 1}, &ConfigRead{BDF: WireBDF(e1000e), Size: 4},
		&MemoryMapping{Domid: dom, Add: 1, FirstGfn: 0xe0000, FirstMfn: 0xfeb80, NrMfns: 1}} {
		if got := Errno(c.Do(req, nil)); got != unix.ESHUTDOWN {
			t.Errorf("%s after close: %v", req.Op(), got)
		}
	}
	// The device is free again: another domain may take it.
	s2, f2, err := r.broker.OpenSession(dom+1, "", Peer{})
	if err != nil {
		t.Fatal(err)
	}
	defer f2.Close()
	if err := r.broker.Attach(s2.ID, e1000e, AttachOptions{}); err != nil {
		t.Fatal(err)
	}
}

func TestDeviceExclusiveAndOneSessionPerDomain(t *testing.T) {
	r := newRig(t, "")
	r.session(dom, e1000e)
	s2, f2, err := r.broker.OpenSession(dom+1, "", Peer{})
	if err != nil {
		t.Fatal(err)
	}
	defer f2.Close()
	if err := r.broker.Attach(s2.ID, e1000e, AttachOptions{}); err == nil {
		t.Fatal("a device was attached to two sessions")
	}
	if _, _, err := r.broker.OpenSession(dom, "", Peer{}); err == nil {
		t.Fatal("two sessions for one domain")
	}
}

func TestDetachUndoesTheDeviceOnly(t *testing.T) {
	r := newRig(t, "")
	s, c := r.session(dom, e1000e, other)
	var p PirqReply
	for _, req := range []Request{
		&MemoryMapping{Domid: dom, Add: 1, FirstGfn: 0xe0000, FirstMfn: 0xfeb80, NrMfns: 1},
		&MapPirq{Domid: dom, Index: 11, Pirq: -1},
	} {
		if err := c.Do(req, &p); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.broker.Detach(s.ID, other); err != nil {
		t.Fatal(err)
	}
	sum := r.fake.State().Summary()
	if len(sum) != 2 || !strings.HasPrefix(sum[0], "assigned 0000:00:04.0") || !strings.HasPrefix(sum[1], "mem ") {
		t.Fatalf("after detach: %v", sum)
	}
	if got := Errno(c.Do(&ConfigRead{BDF: WireBDF(other), Size: 4}, nil)); got != unix.ENODEV {
		t.Fatalf("detached device still reachable: %v", got)
	}
}

func TestFakeRefusedWithoutAllowFake(t *testing.T) {
	r := newRig(t, "")
	cfg := r.broker.cfg
	cfg.AllowFake = false
	if _, err := New(cfg); err == nil || !strings.Contains(err.Error(), "fake") {
		t.Fatalf("fake backend accepted by a production config: %v", err)
	}
}

// A request whose audit record cannot be made durable is answered EIO and
// the session is undone: nothing happens unaudited (fail closed).
func TestAuditFailureClosesSession(t *testing.T) {
	r := newRig(t, "")
	s, c := r.session(dom, e1000e)
	if err := c.Do(&MemoryMapping{Domid: dom, Add: 1, FirstGfn: 0xe0000, FirstMfn: 0xfeb80, NrMfns: 1}, nil); err != nil {
		t.Fatal(err)
	}
	r.audit.Close()
	if got := Errno(c.Do(&ConfigRead{BDF: WireBDF(e1000e), Size: 4}, nil)); got != unix.EIO {
		t.Fatalf("unauditable request: %v", got)
	}
	<-waitClosed(s)
	if st := r.fake.State(); !st.Empty() {
		t.Fatalf("session not undone: %v", st.Summary())
	}
	if got := Errno(c.Do(&ConfigRead{BDF: WireBDF(e1000e), Size: 4}, nil)); got != unix.EIO && got != unix.ESHUTDOWN {
		t.Fatalf("after: %v", got)
	}
}

// Session ids never repeat across broker restarts: an audit record names
// one session for good.
func TestSessionIDsSurviveRestart(t *testing.T) {
	r := newRig(t, "")
	s1, f1, err := r.broker.OpenSession(dom, "", Peer{})
	if err != nil {
		t.Fatal(err)
	}
	f1.Close()
	r.waitGone(s1)
	r.stop()
	r.start()
	s2, f2, err := r.broker.OpenSession(dom, "", Peer{})
	if err != nil {
		t.Fatal(err)
	}
	defer f2.Close()
	if s2.ID <= s1.ID {
		t.Fatalf("session id %d after restart, was %d", s2.ID, s1.ID)
	}
}
