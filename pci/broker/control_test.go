package broker

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

func serveControl(t *testing.T, r *rig) string {
	t.Helper()
	path := filepath.Join(r.dir, "run", "broker.sock")
	l, err := ListenControl(path)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error)
	go func() { done <- r.broker.ServeControl(l) }()
	t.Cleanup(func() { l.Close(); <-done })
	return path
}

func TestControlChannel(t *testing.T) {
	r := newRig(t, "")
	path := serveControl(t, r)
	if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode: %v %v", st.Mode(), err)
	}
	cc, err := DialControl(path)
	if err != nil {
		t.Fatal(err)
	}
	id, f, err := cc.Open(dom, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := cc.Attach(id, e1000e, AttachOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := cc.Attach(id, e1000e, AttachOptions{}); err == nil {
		t.Fatal("double attach accepted")
	}
	c, err := NewClient(f)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var hr HelloReply
	if err := c.Do(&Hello{Version: 1}, &hr); err != nil || hr.Domid != dom || hr.NDevices != 1 {
		t.Fatalf("hello over the passed fd: %v %+v", err, hr)
	}
	if err := c.Do(&MemoryMapping{Domid: dom, Add: 1, FirstGfn: 0xe0000, FirstMfn: 0xfeb80, NrMfns: 1}, nil); err != nil {
		t.Fatal(err)
	}
	list, err := cc.List()
	if err != nil || len(list) != 1 || list[0].ID != id || len(list[0].Live) != 2 || list[0].Peer.PID != int32(os.Getpid()) {
		t.Fatalf("list: %+v %v", list, err)
	}
	// Another connection may look but not touch.
	other, err := DialControl(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := other.Close(id); err == nil || !strings.Contains(err.Error(), "not opened on this connection") {
		t.Fatalf("foreign close: %v", err)
	}
	if err := other.Detach(id, e1000e); err == nil {
		t.Fatal("foreign detach accepted")
	}
	other.Shutdown()
	if err := cc.Close(id); err != nil {
		t.Fatal(err)
	}
	if got := Errno(c.Do(&ConfigRead{BDF: WireBDF(e1000e), Size: 4}, nil)); got != unix.ESHUTDOWN {
		t.Fatalf("after control close: %v", got)
	}
	if st := r.fake.State(); !st.Empty() {
		t.Fatalf("close left %v", st.Summary())
	}
	// A launcher that dies takes its sessions with it.
	id2, f2, err := cc.Open(dom+1, "")
	if err != nil {
		t.Fatal(err)
	}
	defer f2.Close()
	if err := cc.Attach(id2, e1000e, AttachOptions{}); err != nil {
		t.Fatal(err)
	}
	s2, _ := r.broker.session(id2)
	cc.Shutdown()
	<-waitClosed(s2)
	if st := r.fake.State(); !st.Empty() {
		t.Fatalf("control hang-up left %v", st.Summary())
	}
}

// waitClosed returns a channel closed once s is closed (its undo done).
func waitClosed(s *Session) <-chan struct{} {
	ch := make(chan struct{})
	go func() {
		for {
			// close() sets closed and undoes under one hold of s.mu, so
			// seeing closed under the lock means the undo is done.
			s.mu.Lock()
			c := s.closed
			s.mu.Unlock()
			if c {
				close(ch)
				return
			}
			runtime.Gosched()
		}
	}()
	return ch
}

// TestControlRefusesNonRoot connects from a child running as nobody.
func TestControlRefusesNonRoot(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to start a child as another uid")
	}
	r := newRig(t, "")
	path := serveControl(t, r)
	os.Chmod(path, 0o666) // let the child reach the check itself
	os.Chmod(filepath.Dir(path), 0o755)
	os.Chmod(r.dir, 0o755)
	os.Chmod(filepath.Dir(r.dir), 0o755)
	// The go test binary lives in a 0700 build directory: copy it where
	// nobody can execute it.
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin, err := os.MkdirTemp("", "dmsandbox-broker-test")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(bin)
	os.Chmod(bin, 0o755)
	exe := filepath.Join(bin, "broker.test")
	data, err := os.ReadFile(self)
	if err != nil || os.WriteFile(exe, data, 0o755) != nil {
		t.Fatal("copy test binary:", err)
	}
	cmd := exec.Command(exe, "-test.run=^TestHelperControlClient$")
	cmd.Env = append(os.Environ(), "DMSANDBOX_CONTROL_PATH="+path)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	cmd.Dir = bin
	out, err := cmd.CombinedOutput()
	var pe *fs.PathError
	if errors.As(err, &pe) && errors.Is(pe.Err, syscall.EACCES) {
		t.Skipf("cannot run a binary from %s as uid 65534 (noexec /tmp?): %v", bin, err)
	}
	if !strings.Contains(string(out), "REFUSED: broker: permission denied: the broker's control channel is root only") {
		t.Fatalf("non-root client: %v\n%s", err, out)
	}
	if len(r.broker.Sessions()) != 0 {
		t.Fatal("a non-root client opened a session")
	}
}

func TestHelperControlClient(t *testing.T) {
	path := os.Getenv("DMSANDBOX_CONTROL_PATH")
	if path == "" {
		t.Skip("helper for TestControlRefusesNonRoot")
	}
	cc, err := DialControl(path)
	if err != nil {
		fmt.Println("DIAL:", err)
		os.Exit(0)
	}
	if _, _, err := cc.Open(dom, ""); err != nil {
		fmt.Println("REFUSED:", err)
		os.Exit(0)
	}
	fmt.Println("OPENED")
	os.Exit(0)
}

// Connect uses the daemon when one listens, else the embedded broker.
func TestConnectPrefersDaemon(t *testing.T) {
	r := newRig(t, "")
	dir := t.TempDir()
	embedded := func() (*Embedded, error) {
		return NewEmbedded(EmbeddedConfig{Backend: r.fake, SysfsRoot: captured, AuditDir: filepath.Join(dir, "a"),
			StateDir: filepath.Join(dir, "s"), AllowFake: true})
	}
	c, err := Connect(filepath.Join(dir, "none.sock"), embedded)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := c.(*Embedded); !ok {
		t.Fatalf("no daemon: got %T", c)
	}
	c.(*Embedded).Broker.Close()
	c.(*Embedded).log.Close()
	// A stale socket file nobody listens on is not a daemon either.
	stale := filepath.Join(dir, "stale.sock")
	l, _ := ListenControl(stale)
	l.SetUnlinkOnClose(false)
	l.Close()
	if c, err := Connect(stale, embedded); err != nil {
		t.Fatal(err)
	} else if e, ok := c.(*Embedded); !ok {
		t.Fatalf("stale socket: got %T", c)
	} else {
		e.Broker.Close()
		e.log.Close()
	}
	path := serveControl(t, r)
	c, err = Connect(path, embedded)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Shutdown()
	if _, ok := c.(*ControlClient); !ok {
		t.Fatalf("daemon listening: got %T", c)
	}
	id, f, err := c.Open(dom, "")
	if err != nil || id == 0 {
		t.Fatal(err)
	}
	f.Close()
}
