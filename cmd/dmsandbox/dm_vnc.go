package main

import (
	"errors"
	"fmt"
	"net"
	"strconv"

	"github.com/dmsandbox/dmsandbox/launcher/dmargv"
	"github.com/dmsandbox/dmsandbox/launcher/qmpproxy"
)

// listenVNC listens on the first free port of l.Port..l.LastPort, as
// QEMU's "to=" does, in the host's network namespace.
func listenVNC(l *dmargv.VNCListen) (net.Listener, *qmpproxy.VNCServer, error) {
	var lastErr error
	for port := l.Port; port <= l.LastPort; port++ {
		ln, err := net.Listen("tcp", net.JoinHostPort(l.Host, strconv.Itoa(port)))
		if err != nil {
			lastErr = err
			continue
		}
		family := "ipv4"
		if ip := net.ParseIP(l.Host); ip != nil && ip.To4() == nil {
			family = "ipv6"
		}
		return ln, &qmpproxy.VNCServer{Host: l.Host, Service: strconv.Itoa(port), Family: family}, nil
	}
	return nil, nil, fmt.Errorf("vnc: no free port in %s:%d-%d: %w", l.Host, l.Port, l.LastPort, lastErr)
}

// serveVNC hands every viewer that connects to QEMU's VNC server until ln
// is closed.
func serveVNC(ln net.Listener, proxy *qmpproxy.Proxy, logf func(string, ...any)) {
	for {
		c, err := ln.Accept()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				logf("vnc: %v", err)
			}
			return
		}
		go func() {
			defer c.Close()
			tc, ok := c.(*net.TCPConn)
			if !ok {
				return
			}
			f, err := tc.File() // a dup, ours to close
			if err != nil {
				logf("vnc: %v", err)
				return
			}
			defer f.Close()
			if err := proxy.AddClient(f); err != nil {
				logf("vnc: viewer %s: %v", c.RemoteAddr(), err)
			}
		}()
	}
}
