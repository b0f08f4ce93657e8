package main

import (
	"bufio"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestPTYRelay: what QEMU writes on its socket end reaches a console
// reader of the host pty, and what the console types reaches QEMU.
func TestPTYRelay(t *testing.T) {
	rl, hold, path, qemu, err := newPTYRelay()
	if err != nil {
		t.Fatal(err)
	}
	defer rl.close()
	defer hold.Close()
	defer qemu.Close()
	if !strings.HasPrefix(path, "/dev/pts/") {
		t.Fatalf("pty path %q", path)
	}
	con, err := os.OpenFile(path, os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer con.Close()
	con.SetDeadline(time.Now().Add(20 * time.Second)) // hang guard
	qemu.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := qemu.Write([]byte("guest says hi\r\n")); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(con).ReadString('\n')
	if err != nil || !strings.Contains(line, "guest says hi") {
		t.Fatalf("console read %q, %v", line, err)
	}
	con.Write([]byte("typed\r"))
	buf := make([]byte, 64)
	n, err := qemu.Read(buf)
	if err != nil || !strings.Contains(string(buf[:n]), "typed") {
		t.Fatalf("QEMU read %q, %v", buf[:n], err)
	}
}
