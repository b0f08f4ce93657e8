package qmpproxy

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestRealQEMU puts the proxy in front of a real QEMU monitor
// (qemu-system-x86_64 -machine none, unconfined: the sandbox is the
// launcher's business) and checks that adversarial clients leave the
// guest running and the monitor usable.
func TestRealQEMU(t *testing.T) {
	if testing.Short() {
		t.Skip("starts QEMU (-short)")
	}
	bin, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		t.Skip("qemu-system-x86_64 not installed (apt-get install qemu-system-x86)")
	}
	dir := t.TempDir()
	mon := filepath.Join(dir, "qmp.sock")
	cmd := exec.Command(bin, "-machine", "none", "-nodefaults", "-display", "none", "-S",
		"-chardev", "socket,id=m,path="+mon+",server=on,wait=off", "-mon", "chardev=m,mode=control")
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() { cmd.Process.Kill(); <-exited })
	dial := func() (net.Conn, error) {
		var c net.Conn
		var err error
		for i := 0; i < 200; i++ { // QEMU creates the socket while starting
			if c, err = net.Dial("unix", mon); err == nil {
				return c, nil
			}
			time.Sleep(25 * time.Millisecond)
		}
		return nil, err
	}
	saveFile := filepath.Join(dir, "qemu-save.1")
	var asked []string
	files := func(cmd, name string) (*os.File, error) {
		asked = append(asked, cmd+" "+name)
		if name != "/var/lib/xen/qemu-save.1" {
			return nil, os.ErrPermission
		}
		return os.OpenFile(saveFile, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	}
	path, _, _ := startProxy(t, Config{Domid: 1, Dial: dial, MaxCommand: 4096, Files: files})

	status := func() string {
		c := dialClient(t, path)
		c.mustRecv()
		c.send(`{"execute":"qmp_capabilities","id":1}`)
		c.mustRecv()
		c.send(`{"execute":"query-status","id":2}`)
		r := c.mustRecv()
		c.c.Close() // libxl hangs up after each exchange
		ret, _ := r["return"].(map[string]any)
		s, _ := ret["status"].(string)
		return s
	}
	if s := status(); s != "prelaunch" {
		t.Fatalf("status %q", s)
	}
	for _, bad := range []string{
		`{"execute":"human-monitor-command","arguments":{"command-line":"quit"},"id":3}`,
		`{"execute":"qmp_capabilities","arguments":{"x":"` + strings.Repeat("A", 8192) + `"}}`,
		"\x00\x01garbage",
	} {
		c := dialClient(t, path)
		c.mustRecv()
		c.send(bad)
		if r := c.mustRecv(); errDesc(r) == "" {
			t.Errorf("%.30q: %v", bad, r)
		}
		c.c.Close()
	}
	select {
	case err := <-exited:
		t.Fatalf("QEMU exited: %v", err)
	default:
	}
	if s := status(); s != "prelaunch" {
		t.Errorf("after adversarial clients: status %q", s)
	}
	// xl save: QEMU writes libxl's save file through an fd the proxy
	// opened; the client sees its own reply only.
	c0 := dialClient(t, path)
	c0.mustRecv()
	c0.send(`{"execute":"qmp_capabilities","id":1}`)
	c0.mustRecv()
	c0.send(`{"execute":"xen-save-devices-state","arguments":{"filename":"/var/lib/xen/qemu-save.1","live":false},"id":2}`)
	if r := c0.mustRecv(); errDesc(r) != "" || r["id"] != float64(2) {
		t.Fatalf("xen-save-devices-state: %v", r)
	}
	c0.send(`{"execute":"xen-save-devices-state","arguments":{"filename":"/etc/passwd","live":false},"id":3}`)
	if r := c0.mustRecv(); errDesc(r) == "" || r["id"] != float64(3) {
		t.Errorf("save to /etc/passwd: %v", r)
	}
	// The stream is in step: no reply of the proxy's own add-fd or
	// remove-fd reaches the client. (QEMU keeps a removed fd open while
	// the VM is not running, so query-fdsets still lists it here.)
	c0.send(`{"execute":"query-status","id":4}`)
	if r := c0.mustRecv(); r["id"] != float64(4) {
		t.Fatalf("after save: %v", r)
	}
	c0.c.Close()
	if st, err := os.Stat(saveFile); err != nil || st.Size() == 0 {
		t.Errorf("save file: %v %v", st, err)
	}
	if len(asked) != 2 {
		t.Errorf("Files asked %q", asked)
	}

	// xl cd-insert: libxl sends the medium's fd with add-fd; a directory
	// fd is refused (it would open the host's tree to QEMU).
	c1 := dialClient(t, path)
	c1.mustRecv()
	c1.send(`{"execute":"qmp_capabilities","id":1}`)
	c1.mustRecv()
	iso, _ := os.CreateTemp(dir, "cd-*.iso")
	defer iso.Close()
	sendFD := func(cmd string, f *os.File) map[string]any {
		uc := c1.c.(*net.UnixConn)
		if _, _, err := uc.WriteMsgUnix([]byte(cmd+"\r\n"), syscall.UnixRights(int(f.Fd())), nil); err != nil {
			t.Fatal(err)
		}
		return c1.mustRecv()
	}
	if r := sendFD(`{"execute":"add-fd","arguments":{"opaque":"cd"},"id":2}`, iso); errDesc(r) != "" {
		t.Errorf("add-fd of a file: %v", r)
	}
	root, _ := os.Open("/")
	defer root.Close()
	if r := sendFD(`{"execute":"add-fd","arguments":{"opaque":"root"},"id":3}`, root); errDesc(r) == "" {
		t.Errorf("add-fd of / accepted: %v", r)
	}
	c1.send(`{"execute":"query-fdsets","id":4}`)
	r := c1.mustRecv()
	sets, _ := r["return"].([]any)
	n := 0
	for _, s := range sets {
		fds, _ := s.(map[string]any)["fds"].([]any)
		for _, fd := range fds {
			if fd.(map[string]any)["opaque"] == "root" {
				t.Errorf("QEMU got the directory fd: %v", r)
			}
			if fd.(map[string]any)["opaque"] == "cd" {
				n++
			}
		}
	}
	if n != 1 {
		t.Errorf("QEMU's fd sets %v", r)
	}
	c1.c.Close()

	// quit is allowed (libxl 4.19's probe ends with it).
	c := dialClient(t, path)
	c.mustRecv()
	c.send(`{"execute":"qmp_capabilities","id":1}`)
	c.mustRecv()
	c.send(`{"execute":"quit","id":2}`)
	c.recv()
	if err := <-exited; err != nil {
		t.Errorf("QEMU after quit: %v", err)
	}
	exited <- nil
}
