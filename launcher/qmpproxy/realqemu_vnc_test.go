package qmpproxy

import (
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// TestRealQEMUVNC: a viewer's connection handed to a real QEMU's VNC
// server (-vnc none,password=on: no listener of its own) speaks RFB and
// asks for the password; query-vnc reports dmsandbox's listener.
func TestRealQEMUVNC(t *testing.T) {
	if testing.Short() {
		t.Skip("starts QEMU (-short)")
	}
	bin, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		t.Skip("qemu-system-x86_64 not installed (apt-get install qemu-system-x86)")
	}
	mon := filepath.Join(t.TempDir(), "qmp.sock")
	cmd := exec.Command(bin, "-machine", "none", "-nodefaults", "-display", "none", "-S", "-vnc", "none,password=on",
		"-chardev", "socket,id=m,path="+mon+",server=on,wait=off", "-mon", "chardev=m,mode=control")
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	dial := func() (net.Conn, error) {
		var c net.Conn
		var err error
		for i := 0; i < 200; i++ {
			if c, err = net.Dial("unix", mon); err == nil {
				return c, nil
			}
			time.Sleep(25 * time.Millisecond)
		}
		return nil, err
	}
	path, p, _ := startProxy(t, Config{Domid: 1, Dial: dial, VNC: &VNCServer{Host: "127.0.0.1", Service: "5907", Family: "ipv4"}})

	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	viewer := os.NewFile(uintptr(fds[0]), "viewer")
	qemuEnd := os.NewFile(uintptr(fds[1]), "qemu-end")
	defer viewer.Close()
	if err := p.AddClient(qemuEnd); err != nil {
		t.Fatal(err)
	}
	qemuEnd.Close()
	viewer.SetDeadline(time.Now().Add(20 * time.Second)) // hang guard
	ver := make([]byte, 12)
	if _, err := io.ReadFull(viewer, ver); err != nil || string(ver) != "RFB 003.008\n" {
		t.Fatalf("server version %q, %v", ver, err)
	}
	viewer.Write([]byte("RFB 003.008\n"))
	sec := make([]byte, 2)
	if _, err := io.ReadFull(viewer, sec); err != nil || sec[0] != 1 || sec[1] != 2 {
		t.Errorf("security types %v, %v: want [1 2] (VNC password)", sec, err)
	}

	c := dialClient(t, path)
	c.mustRecv()
	c.send(`{"execute":"qmp_capabilities","id":1}`)
	c.mustRecv()
	c.send(`{"execute":"query-vnc","id":2}`)
	r := c.mustRecv()
	ret, _ := r["return"].(map[string]any)
	if ret["enabled"] != true || ret["service"] != "5907" || ret["host"] != "127.0.0.1" {
		t.Errorf("query-vnc %v", r)
	}
}
