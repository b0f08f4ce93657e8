package launcher

import (
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/digitalocean/go-qemu/qemu"
	"github.com/digitalocean/go-qemu/qmp"
)

// qmpChardevID names the management monitor in QEMU's argv.
const qmpChardevID = "dmsandbox-qmp"

// listenQMP creates the management QMP socket on the host. The launcher
// binds it (root, 0600 in a 0700 directory) and hands QEMU only the
// listening fd, like libxl does under dm_restrict: QEMU needs no path in
// its root and no write access anywhere to serve it.
func listenQMP(path string) (*os.File, error) {
	os.Remove(path)
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("qmp socket %s: %w", path, err)
	}
	l.SetUnlinkOnClose(false) // the path outlives our copy of the fd
	// Only root may connect (the directory is traversable for user
	// namespace setups, so the socket's own mode matters).
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, fmt.Errorf("qmp socket %s: %w", path, err)
	}
	f, err := l.File() // a dup; closing l leaves it open
	l.Close()
	if err != nil {
		return nil, fmt.Errorf("qmp socket %s: %w", path, err)
	}
	return f, nil
}

// qmpArgs are the QEMU options serving the monitor on inherited fd.
func qmpArgs(fd int) []string {
	return []string{
		"-chardev", fmt.Sprintf("socket,id=%s,fd=%d,server=on,wait=off", qmpChardevID, fd),
		"-mon", "chardev=" + qmpChardevID + ",mode=control",
	}
}

// DialQMP connects to a QMP socket and completes the capabilities
// handshake, all within timeout. The go-qemu monitor has no read
// deadline of its own, so a peer that accepts but never greets is cut off
// here by closing the connection.
func DialQMP(path string, timeout time.Duration) (*qmp.SocketMonitor, error) {
	deadline := time.Now().Add(timeout)
	var lastErr error
	for time.Now().Before(deadline) {
		mon, err := qmp.NewSocketMonitor("unix", path, time.Until(deadline))
		if err != nil {
			lastErr = err
			time.Sleep(5 * time.Millisecond)
			continue
		}
		done := make(chan error, 1)
		go func() { done <- mon.Connect() }()
		select {
		case err := <-done:
			if err == nil {
				return mon, nil
			}
			mon.Disconnect()
			return nil, fmt.Errorf("qmp %s: handshake: %w", path, err)
		case <-time.After(time.Until(deadline)):
			mon.Disconnect()
			<-done
			return nil, fmt.Errorf("qmp %s: no greeting within %v", path, timeout)
		}
	}
	if lastErr == nil {
		lastErr = errors.New("timed out")
	}
	return nil, fmt.Errorf("qmp %s: %w", path, lastErr)
}

// waitQMP is the readiness check: the monitor greets, accepts
// qmp_capabilities and answers query-status. It then disconnects so the
// socket is free for its users (QEMU serves one client at a time).
func waitQMP(path string, timeout time.Duration) (qemu.Status, error) {
	deadline := time.Now().Add(timeout)
	mon, err := DialQMP(path, timeout)
	if err != nil {
		return 0, err
	}
	dom, err := qemu.NewDomain(mon, "dmsandbox")
	if err != nil {
		mon.Disconnect()
		return 0, fmt.Errorf("qmp %s: %w", path, err)
	}
	// One deadline for the whole check: a monitor that greets but never
	// answers query-status is cut off by closing the connection.
	type result struct {
		st  qemu.Status
		err error
	}
	done := make(chan result, 1)
	go func() {
		st, err := dom.Status()
		done <- result{st, err}
	}()
	select {
	case r := <-done:
		dom.Close()
		if r.err != nil {
			return 0, fmt.Errorf("qmp %s: query-status: %w", path, r.err)
		}
		return r.st, nil
	case <-time.After(time.Until(deadline)):
		dom.Close()
		return 0, fmt.Errorf("qmp %s: no answer to query-status within %v", path, timeout)
	}
}
