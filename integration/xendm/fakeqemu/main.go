// Command fakeqemu is a fake Xen device model for DM-mode tests on hosts
// without Xen, where the real one (/usr/libexec/xen-qemu-system-i386)
// exits at "failed to initialize xen". It is run by dmsandbox inside the
// real sandbox under a name ending in -qemu-system-i386, so it gets the
// launcher's management monitor exactly as QEMU does, and it:
//
//   - serves QMP on the -chardev socket,fd=N of the management monitor:
//     greeting, qmp_capabilities, query-status (prelaunch under -S),
//     query-chardev (one "serial" chardev per -chardev serial,id=X),
//     cont, quit, query-vnc, getfd + add_client (greets the viewer as
//     QEMU's VNC server does); anything else gets CommandNotFound;
//   - reports on stderr what it was handed: for each -add-fd whether the
//     fd is open, for each serial chardev that its fd is a socket; its
//     uid, its NoNewPrivs and Seccomp lines;
//   - plays the guest on each serial port: a greeting, then an echo of
//     every line typed on the console;
//   - exits 0 with QEMU's message on SIGHUP/SIGTERM/SIGINT.
//
// Build it static (CGO_ENABLED=0): the sandbox root holds only its ELF
// closure.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

func main() {
	args := os.Args[1:]
	monFD := -1
	paused := false
	var serials []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		next := ""
		if i+1 < len(args) {
			next = args[i+1]
		}
		switch a {
		case "-S":
			paused = true
		case "-chardev":
			if strings.HasPrefix(next, "socket,id=dmsandbox-qmp,fd=") {
				monFD, _ = strconv.Atoi(strings.Split(strings.TrimPrefix(next, "socket,id=dmsandbox-qmp,fd="), ",")[0])
			}
			if strings.HasPrefix(next, "socket,id=serial") {
				id, fd := chardevFD(next)
				serials = append(serials, id)
				go echoSerial(id, fd)
			}
		case "-add-fd":
			reportFD(next)
		}
	}
	fmt.Fprintf(os.Stderr, "fake-qemu: uid %d %s\n", os.Getuid(), statusLines())
	if monFD < 0 {
		fmt.Fprintln(os.Stderr, "fake-qemu: no management monitor fd")
		os.Exit(1)
	}
	l, err := net.FileListener(os.NewFile(uintptr(monFD), "qmp"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "fake-qemu:", err)
		os.Exit(1)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT)
	quit := make(chan struct{})
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			serve(c, &paused, serials, quit) // one client at a time, like QEMU
		}
	}()
	select {
	case s := <-sig:
		fmt.Fprintf(os.Stderr, "fake-qemu: terminating on signal %d\n", s.(syscall.Signal))
	case <-quit:
		fmt.Fprintln(os.Stderr, "fake-qemu: quit")
	}
}

// chardevFD returns id and fd of "socket,id=ID,fd=N".
func chardevFD(opts string) (string, int) {
	var id string
	fd := -1
	for _, kv := range strings.Split(opts, ",") {
		k, v, _ := strings.Cut(kv, "=")
		switch k {
		case "id":
			id = v
		case "fd":
			fd, _ = strconv.Atoi(v)
		}
	}
	return id, fd
}

// echoSerial stands in for the guest on a serial port: it reports the
// fd, says hello, and answers each line it reads with "echo: LINE".
func echoSerial(id string, fd int) {
	if _, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE); err != nil {
		fmt.Fprintf(os.Stderr, "fake-qemu: %s fd %d: not a socket: %v\n", id, fd, err)
		return
	}
	fmt.Fprintf(os.Stderr, "fake-qemu: %s fd %d is a socket\n", id, fd)
	f := os.NewFile(uintptr(fd), id)
	f.Write([]byte("fake guest on " + id + "\r\n"))
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		f.Write([]byte("echo: " + strings.TrimSpace(sc.Text()) + "\r\n"))
	}
}

func reportFD(opts string) {
	var fd int
	var name string
	for _, kv := range strings.Split(opts, ",") {
		k, v, _ := strings.Cut(kv, "=")
		switch k {
		case "fd":
			fd, _ = strconv.Atoi(v)
		case "opaque":
			name = v
		}
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		fmt.Fprintf(os.Stderr, "fake-qemu: fd %d (%s): %v\n", fd, name, err)
		return
	}
	_, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	fmt.Fprintf(os.Stderr, "fake-qemu: fd %d (%s) open tty=%v\n", fd, name, err == nil)
}

// fdReader reads the monitor connection and keeps the fds that arrive
// with it (getfd).
type fdReader struct {
	c   *net.UnixConn
	fds []int
}

func (r *fdReader) Read(p []byte) (int, error) {
	oob := make([]byte, unix.CmsgSpace(4*4))
	n, oobn, _, _, err := r.c.ReadMsgUnix(p, oob)
	if n < 0 {
		n = 0
	}
	if oobn > 0 {
		if msgs, err := unix.ParseSocketControlMessage(oob[:oobn]); err == nil {
			for _, m := range msgs {
				if fds, err := unix.ParseUnixRights(&m); err == nil {
					r.fds = append(r.fds, fds...)
				}
			}
		}
	}
	return n, err
}

func statusLines() string {
	data, _ := os.ReadFile("/proc/self/status")
	var out []string
	for _, l := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(l, "NoNewPrivs:") || strings.HasPrefix(l, "Seccomp:") {
			out = append(out, strings.Join(strings.Fields(l), " "))
		}
	}
	return strings.Join(out, " ")
}

func serve(c net.Conn, paused *bool, serials []string, quit chan struct{}) {
	defer c.Close()
	w := func(v any) { b, _ := json.Marshal(v); c.Write(append(b, '\r', '\n')) }
	w(map[string]any{"QMP": map[string]any{"version": map[string]any{"qemu": map[string]int{"major": 7, "minor": 2, "micro": 0}, "package": "fake"}, "capabilities": []string{}}})
	fr := &fdReader{c: c.(*net.UnixConn)}
	names := map[string]int{}
	dec := json.NewDecoder(fr)
	for {
		var cmd struct {
			Execute   string          `json:"execute"`
			ID        json.RawMessage `json:"id"`
			Arguments struct {
				FDName string `json:"fdname"`
			} `json:"arguments"`
		}
		if dec.Decode(&cmd) != nil {
			return
		}
		var ret any = map[string]any{}
		switch cmd.Execute {
		case "qmp_capabilities":
		case "query-status":
			st := "running"
			if *paused {
				st = "prelaunch"
			}
			ret = map[string]any{"status": st, "running": !*paused}
		case "cont":
			*paused = false
		case "query-chardev":
			var l []map[string]any
			for _, s := range serials {
				l = append(l, map[string]any{"label": s, "filename": "unix:", "frontend-open": true})
			}
			ret = l
		case "getfd": // the fd came with the command (SCM_RIGHTS)
			if len(fr.fds) == 0 {
				w(map[string]any{"error": map[string]string{"class": "GenericError", "desc": "No file descriptor supplied via SCM_RIGHTS"}, "id": cmd.ID})
				continue
			}
			names[cmd.Arguments.FDName], fr.fds = fr.fds[0], fr.fds[1:]
		case "add_client": // like QEMU's VNC server: greet the viewer
			fd, ok := names[cmd.Arguments.FDName]
			if !ok {
				w(map[string]any{"error": map[string]string{"class": "GenericError", "desc": "fd not found"}, "id": cmd.ID})
				continue
			}
			delete(names, cmd.Arguments.FDName)
			unix.Write(fd, []byte("RFB 003.008\n"))
			unix.Close(fd)
		case "query-vnc":
			ret = map[string]any{"enabled": false}
		case "quit":
			w(map[string]any{"return": ret, "id": cmd.ID})
			close(quit)
			return
		default:
			w(map[string]any{"error": map[string]string{"class": "CommandNotFound", "desc": "The command " + cmd.Execute + " has not been found"}, "id": cmd.ID})
			continue
		}
		w(map[string]any{"return": ret, "id": cmd.ID})
	}
}
