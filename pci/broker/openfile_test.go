package broker

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dmsandbox/dmsandbox/pci"
	"github.com/dmsandbox/dmsandbox/pci/audit"
	"golang.org/x/sys/unix"
)

// Host addresses of the captured tree's MSI-X structures (helpers_test.go):
// 00:04.0 BAR3 febd0000+4000, table at 0 (5 entries), PBA at 0x2000;
// 00:05.0 BAR1 febd6000+1000, table at 0, PBA at 0x800.
const (
	e1000eMSIXBar = 0xfebd0000
	pci05MSIXBar  = 0xfebd6000
)

var noMSIX = pci.BDF{Bus: 3, Fn: 1} // 03:00.1: one memory BAR, no MSI-X

// openFileTree is a copy of the captured tree with the resourceN files a
// live sysfs has for the MSI-X BARs (the capture has none), each filled
// with its own pattern so a test can tell which one it was given.
func openFileTree(t testing.TB) string {
	t.Helper()
	root := copyTree(t)
	for _, f := range []struct {
		bdf  pci.BDF
		name string
		size int
	}{{e1000e, "resource3", 0x4000}, {pci05, "resource1", 0x1000}} {
		dir, err := filepath.EvalSymlinks(pci.NewSysfs(root).DevicePath(f.bdf))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f.name), barPattern(f.bdf, f.size), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func barPattern(b pci.BDF, n int) []byte {
	return bytes.Repeat([]byte(b.String()+"|"), n/13+1)[:n]
}

// sysfsFile is what the tree holds for bdf's file name.
func sysfsFile(t testing.TB, root string, b pci.BDF, name string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(pci.NewSysfs(root).DevicePath(b), name))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// checkReadOnly: the fd reads, but neither write nor a writable shared
// mapping works on it.
func checkReadOnly(t *testing.T, f *os.File) {
	t.Helper()
	if _, err := f.Write([]byte{0}); !errors.Is(err, unix.EBADF) {
		t.Errorf("%s: write: %v, want EBADF", f.Name(), err)
	}
	fl, err := unix.FcntlInt(f.Fd(), unix.F_GETFL, 0)
	if err != nil || fl&unix.O_ACCMODE != unix.O_RDONLY {
		t.Errorf("%s: flags %#x %v, want O_RDONLY", f.Name(), fl, err)
	}
	if m, err := unix.Mmap(int(f.Fd()), 0, 1, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED); err == nil {
		unix.Munmap(m)
		t.Errorf("%s: writable shared mapping of a read-only fd", f.Name())
	}
	if fd, err := unix.FcntlInt(f.Fd(), unix.F_GETFD, 0); err != nil || fd&unix.FD_CLOEXEC == 0 {
		t.Errorf("%s: received fd without FD_CLOEXEC", f.Name())
	}
}

func readAll(t *testing.T, f *os.File) []byte {
	t.Helper()
	data, err := io.ReadAll(f)
	if err != nil {
		t.Fatalf("%s: %v", f.Name(), err)
	}
	return data
}

// Every plain file opens and reads what the tree holds, read-only, with
// a zero reply; the broker keeps no copy of any fd.
func TestOpenFilePlainFiles(t *testing.T) {
	root := openFileTree(t)
	r := newRig(t, root)
	_, c := r.session(dom, e1000e, pci05)
	before := openFds(t)
	for file := FileConfig; file <= FileIRQ; file++ {
		for _, b := range []pci.BDF{e1000e, pci05} {
			f, rep, err := c.OpenFile(b, file, 0)
			if err != nil {
				t.Fatalf("%s %s: %v", b, FileName(file), err)
			}
			if rep != (OpenFileReply{}) {
				t.Errorf("%s %s: reply %+v, want zero", b, FileName(file), rep)
			}
			if got, want := readAll(t, f), sysfsFile(t, root, b, FileName(file)); !bytes.Equal(got, want) {
				t.Errorf("%s %s: read %q, want %q", b, FileName(file), got, want)
			}
			checkReadOnly(t, f)
			f.Close()
		}
	}
	// QEMU preads config: the vendor id of the e1000e.
	f, _, err := c.OpenFile(e1000e, FileConfig, 0)
	if err != nil {
		t.Fatal(err)
	}
	var id [2]byte
	if _, err := f.ReadAt(id[:], 0); err != nil || id != [2]byte{0x86, 0x80} {
		t.Fatalf("config pread: %x %v", id, err)
	}
	f.Close()
	// One more round trip: the broker closes its copy before it reads the
	// next frame, so now every fd it opened is closed.
	if err := c.Do(&ConfigRead{BDF: WireBDF(e1000e), Size: 4}, nil); err != nil {
		t.Fatal(err)
	}
	if after := openFds(t); after != before {
		t.Fatalf("%d fds open after, %d before: the broker kept copies", after, before)
	}
}

// msix_bar: an address in the table or PBA page of a named device, or of
// any session device, opens that BAR's resource file; Base and Size are
// the BAR's.
func TestOpenFileMSIXBar(t *testing.T) {
	root := openFileTree(t)
	r := newRig(t, root)
	s, c := r.session(dom, e1000e, pci05)
	cases := []struct {
		bdf  pci.BDF
		addr uint64
		dev  pci.BDF
		base uint64
		size uint64
	}{
		{e1000e, e1000eMSIXBar, e1000e, e1000eMSIXBar, 0x4000},          // table, first byte
		{e1000e, e1000eMSIXBar + 0xfff, e1000e, e1000eMSIXBar, 0x4000},  // table page, last byte
		{e1000e, e1000eMSIXBar + 0x2008, e1000e, e1000eMSIXBar, 0x4000}, // PBA
		{pci05, pci05MSIXBar + 0x800, pci05, pci05MSIXBar, 0x1000},      // PBA in the table's page
		{AnyBDF, e1000eMSIXBar + 0x2000, e1000e, e1000eMSIXBar, 0x4000},
		{AnyBDF, pci05MSIXBar, pci05, pci05MSIXBar, 0x1000},
	}
	for _, tc := range cases {
		f, rep, err := c.OpenFile(tc.bdf, FileMSIXBar, tc.addr)
		if err != nil {
			t.Fatalf("%s %#x: %v", tc.bdf, tc.addr, err)
		}
		if rep.Base != tc.base || rep.Size != tc.size {
			t.Errorf("%s %#x: reply %+v, want base %#x size %#x", tc.bdf, tc.addr, rep, tc.base, tc.size)
		}
		if got, want := readAll(t, f), barPattern(tc.dev, int(tc.size)); !bytes.Equal(got, want) {
			t.Errorf("%s %#x: not %s's MSI-X BAR (read %.20q)", tc.bdf, tc.addr, tc.dev, got)
		}
		checkReadOnly(t, f)
		f.Close()
	}
	// The audit record of an ANY request names the device it resolved to.
	found := false
	for _, rec := range r.records() {
		if rec.Session == s.ID && rec.Op == "open_file" && strings.HasPrefix(rec.Args, "bdf=any file=msix_bar addr=0xfebd6000") {
			found = rec.Verdict == audit.Allow && strings.Contains(rec.Args, "0000:00:05.0 resource1 (table)")
		}
	}
	if !found {
		t.Error("no allow record naming 0000:00:05.0 resource1 for the ANY request")
	}
}

// Refusals: each with its errno, without an fd, audited; the session
// keeps working.
func TestOpenFileRefusals(t *testing.T) {
	root := openFileTree(t)
	dir, err := filepath.EvalSymlinks(pci.NewSysfs(root).DevicePath(pci05))
	if err != nil {
		t.Fatal(err)
	}
	r := newRig(t, root)
	s, c := r.session(dom, e1000e, pci05)
	_, c2 := r.session(dom+1, other)
	_, c3 := r.session(dom+2, noMSIX)
	// After attach, which reads them: a file gone, a file become a link.
	os.Remove(filepath.Join(dir, "subsystem_vendor"))
	os.Remove(filepath.Join(dir, "class"))
	if err := os.Symlink("vendor", filepath.Join(dir, "class")); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		c      *Client
		req    OpenFile
		errno  unix.Errno
		failed bool // the policy allowed it, the open failed
	}{
		{"device not in the session", c, OpenFile{BDF: WireBDF(other), File: FileConfig}, unix.ENODEV, false},
		{"msix_bar of a device not in the session", c, OpenFile{BDF: WireBDF(other), File: FileMSIXBar, Addr: 0xfe500000}, unix.ENODEV, false},
		{"any for a plain file", c, OpenFile{BDF: WireAnyBDF, File: FileConfig}, unix.ENODEV, false},
		{"addr for a plain file", c, OpenFile{BDF: WireBDF(e1000e), File: FileResource, Addr: 0x1000}, unix.EINVAL, false},
		{"file 0", c, OpenFile{BDF: WireBDF(e1000e), File: 0}, unix.EINVAL, false},
		{"file 10", c, OpenFile{BDF: WireBDF(e1000e), File: 10}, unix.EINVAL, false},
		{"file max", c, OpenFile{BDF: WireBDF(e1000e), File: ^uint32(0)}, unix.EINVAL, false},
		{"between table and PBA", c, OpenFile{BDF: WireBDF(e1000e), File: FileMSIXBar, Addr: e1000eMSIXBar + 0x1000}, unix.ERANGE, false},
		{"past the PBA page", c, OpenFile{BDF: WireBDF(e1000e), File: FileMSIXBar, Addr: e1000eMSIXBar + 0x3000}, unix.ERANGE, false},
		{"below the table", c, OpenFile{BDF: WireBDF(e1000e), File: FileMSIXBar, Addr: e1000eMSIXBar - 1}, unix.ERANGE, false},
		{"another BAR of the device", c, OpenFile{BDF: WireBDF(e1000e), File: FileMSIXBar, Addr: 0xfeb80000}, unix.ERANGE, false},
		{"the other device's table, named wrong", c, OpenFile{BDF: WireBDF(e1000e), File: FileMSIXBar, Addr: pci05MSIXBar}, unix.ERANGE, false},
		{"any, addr in no table", c, OpenFile{BDF: WireAnyBDF, File: FileMSIXBar, Addr: 0}, unix.ERANGE, false},
		{"any, another session's table", c, OpenFile{BDF: WireAnyBDF, File: FileMSIXBar, Addr: 0xfe500000}, unix.ERANGE, false},
		{"msix_bar without MSI-X", c3, OpenFile{BDF: WireBDF(noMSIX), File: FileMSIXBar, Addr: 0xfe400000}, unix.ENXIO, false},
		{"any without MSI-X", c3, OpenFile{BDF: WireAnyBDF, File: FileMSIXBar, Addr: 0xfe400000}, unix.ENXIO, false},
		{"file the device lacks", c, OpenFile{BDF: WireBDF(pci05), File: FileSubsystemVendor}, unix.ENOENT, true},
		{"file that is a link", c, OpenFile{BDF: WireBDF(pci05), File: FileClass}, unix.ELOOP, true},
		{"resourceN missing", c2, OpenFile{BDF: WireBDF(other), File: FileMSIXBar, Addr: 0xfe500000}, unix.ENOENT, true},
	}
	before := openFds(t)
	for _, tc := range cases {
		st, nfds := rawOpenFile(t, tc.c, tc.req)
		if st != tc.errno || nfds != 0 {
			t.Errorf("%s: status %v with %d fds, want %v and none", tc.name, st, nfds, tc.errno)
		}
	}
	// The Go client's view of a refusal: a StatusError and no file.
	if f, _, err := c.OpenFile(other, FileConfig, 0); f != nil || Errno(err) != unix.ENODEV {
		t.Errorf("client: %v %v", f, err)
	}
	// The session still works, and so does open_file.
	f, _, err := c.OpenFile(e1000e, FileVendor, 0)
	if err != nil {
		t.Fatalf("session broken after refusals: %v", err)
	}
	if got := string(readAll(t, f)); got != "0x8086\n" {
		t.Errorf("vendor %q", got)
	}
	f.Close()
	if err := c.Do(&ConfigRead{BDF: WireBDF(e1000e), Size: 2}, nil); err != nil {
		t.Fatal(err)
	}
	if after := openFds(t); after != before {
		t.Errorf("%d fds open after the refusals, %d before", after, before)
	}
	// Each refusal was audited with its errno and verdict, naming the file.
	type key struct {
		errno   int
		verdict string
	}
	want, got := map[key]int{}, map[key]int{}
	for _, tc := range cases {
		v := audit.Deny
		if tc.failed {
			v = audit.Failed
		}
		want[key{int(tc.errno), v}]++
	}
	want[key{int(unix.ENODEV), audit.Deny}]++ // the Go client's
	for _, rec := range r.records() {
		if rec.Op == "open_file" && rec.Verdict != audit.Allow {
			if !strings.Contains(rec.Args, "file=") || rec.Err == "" {
				t.Errorf("audit record without the file or the reason: %+v", rec)
			}
			got[key{rec.Errno, rec.Verdict}]++
		}
	}
	for k, n := range want {
		if got[k] != n {
			t.Errorf("audited %d open_file %s with %v, want %d", got[k], k.verdict, unix.Errno(k.errno), n)
		}
	}
	// Nothing was journaled: open_file leaves nothing to undo.
	s.mu.Lock()
	n := len(s.live.items)
	s.mu.Unlock()
	if n != 2 { // the two assignments
		t.Errorf("live items after open_file: %d, want the 2 assignments", n)
	}
}

// rawOpenFile sends an open_file and returns the status and the number of
// fds that came with the reply (closing them).
func rawOpenFile(t *testing.T, c *Client, req OpenFile) (unix.Errno, int) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seq++
	if err := c.conn.Send(EncodeRequest(c.seq, &req)); err != nil {
		t.Fatal(err)
	}
	n, _, fds, err := c.conn.recv(c.buf)
	if err != nil {
		t.Fatal(err)
	}
	closeFds(fds)
	_, st, err := DecodeReply(c.buf[:n], nil)
	if err != nil {
		t.Fatal(err)
	}
	return st, len(fds)
}

// openFds counts this process's open fds (the broker runs in it too).
func openFds(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// Fds a client sends to the broker are closed, not collected.
func TestBrokerDropsFdsItIsSent(t *testing.T) {
	r := newRig(t, "")
	_, c := r.session(dom, e1000e)
	before := openFds(t)
	p := make([]int, 2)
	if err := unix.Pipe2(p, unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	frame := EncodeRequest(100, &ConfigRead{BDF: WireBDF(e1000e), Size: 4})
	if err := unix.Sendmsg(c.conn.fd, frame, unix.UnixRights(p[0], p[1]), nil, 0); err != nil {
		t.Fatal(err)
	}
	n, _, err := c.conn.Recv(c.buf)
	if err != nil {
		t.Fatal(err)
	}
	if _, st, err := DecodeReply(c.buf[:n], nil); err != nil || st != 0 {
		t.Fatalf("reply %v %v", st, err)
	}
	unix.Close(p[0])
	unix.Close(p[1])
	if after := openFds(t); after != before {
		t.Fatalf("%d fds open after, %d before: the broker kept what it was sent", after, before)
	}
}

// TestHandedDeviceReserved: once a session's client holds an fd of a
// device's files, detaching the device does not free it for another
// session (the fd cannot be taken back, and it would read the other
// domain's device); the same session may attach it again, and when the
// session ends the device is free.
func TestHandedDeviceReserved(t *testing.T) {
	r := newRig(t, openFileTree(t))
	s, c := r.session(dom, e1000e)
	f, _, err := c.OpenFile(e1000e, FileConfig, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := r.broker.Detach(s.ID, e1000e); err != nil {
		t.Fatal(err)
	}
	s2, c2 := r.session(dom + 1)
	defer c2.Close()
	if err := r.broker.Attach(s2.ID, e1000e, AttachOptions{}); !errors.Is(err, ErrConflict) {
		t.Fatalf("attach to another session while the first holds its files: %v", err)
	}
	if err := r.broker.Attach(s.ID, e1000e, AttachOptions{}); err != nil {
		t.Fatalf("re-attach to the same session: %v", err)
	}
	if err := r.broker.Attach(s.ID, e1000e, AttachOptions{}); !errors.Is(err, ErrConflict) {
		t.Fatalf("attach twice to one session: %v", err)
	}
	c.Close()
	r.waitGone(s)
	if err := r.broker.Attach(s2.ID, e1000e, AttachOptions{}); err != nil {
		t.Fatalf("attach after the holding session ended: %v", err)
	}
	// A device whose files were never handed is free at once.
	s3, c3 := r.session(dom+2, other)
	defer c3.Close()
	if err := r.broker.Detach(s3.ID, other); err != nil {
		t.Fatal(err)
	}
	if err := r.broker.Attach(s2.ID, other, AttachOptions{}); err != nil {
		t.Fatalf("attach of a detached, never handed device: %v", err)
	}
}

// TestROMEnableNeedsKernelAddress: the ROM BAR's enable bit may be set
// only while the register holds the address the kernel gave the ROM
// (sysfs resource); a stale address must not start decoding.
func TestROMEnableNeedsKernelAddress(t *testing.T) {
	root := openFileTree(t)
	cfgPath := filepath.Join(pci.NewSysfs(root).DevicePath(e1000e), "config")
	data, err := os.ReadFile(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	binary.LittleEndian.PutUint32(data[0x30:], 0xfea00000) // not the kernel's feb00000
	if err := os.WriteFile(cfgPath, data, 0o644); err != nil {
		t.Fatal(err)
	}
	r := newRig(t, root)
	_, c := r.session(dom, e1000e)
	defer c.Close()
	err = c.Do(&ConfigWrite{BDF: WireBDF(e1000e), Offset: 0x30, Size: 4, Value: 0xfea00001}, nil)
	if Errno(err) != unix.EROFS {
		t.Fatalf("enable at a stale ROM address: %v", err)
	}
	if err := c.Do(&ConfigWrite{BDF: WireBDF(e1000e), Offset: 0x30, Size: 4, Value: 0xfea00000}, nil); err != nil {
		t.Fatalf("writing the value back: %v", err)
	}
}
