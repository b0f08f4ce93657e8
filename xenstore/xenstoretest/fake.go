// Package xenstoretest is a fake xenstored for tests on hosts without
// Xen: it answers XS_READ and XS_DIRECTORY from a fixed map of nodes over
// a unix socket, as xenstored answers them (ENOENT for anything else).
package xenstoretest

import (
	"encoding/binary"
	"io"
	"net"
	"strings"
)

// Message types (xs_wire.h).
const (
	typeDirectory = 1
	typeRead      = 2
	typeError     = 16
)

// Serve answers every connection accepted on ln until ln is closed.
// nodes maps a full path to its value; a path's children are the next
// components of the longer paths under it.
func Serve(ln net.Listener, nodes map[string]string) {
	for {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		go serveConn(conn, nodes)
	}
}

func serveConn(conn net.Conn, nodes map[string]string) {
	defer conn.Close()
	for {
		h := make([]byte, 16)
		if _, err := io.ReadFull(conn, h); err != nil {
			return
		}
		typ, n := binary.NativeEndian.Uint32(h[0:]), binary.NativeEndian.Uint32(h[12:])
		if n > 4096 {
			return
		}
		p := make([]byte, n)
		if _, err := io.ReadFull(conn, p); err != nil {
			return
		}
		path := strings.TrimSuffix(string(p), "\x00")
		out, ok := answer(typ, path, nodes)
		if !ok {
			typ, out = typeError, []byte("ENOENT\x00")
		}
		binary.NativeEndian.PutUint32(h[0:], typ)
		binary.NativeEndian.PutUint32(h[12:], uint32(len(out)))
		conn.Write(append(h, out...))
	}
}

func answer(typ uint32, path string, nodes map[string]string) ([]byte, bool) {
	switch typ {
	case typeRead:
		v, ok := nodes[path]
		return []byte(v), ok
	case typeDirectory:
		var out []byte
		seen := map[string]bool{}
		for k := range nodes {
			if rest, ok := strings.CutPrefix(k, path+"/"); ok {
				name, _, _ := strings.Cut(rest, "/")
				if !seen[name] {
					seen[name] = true
					out = append(append(out, name...), 0)
				}
			}
		}
		_, leaf := nodes[path]
		return out, len(out) > 0 || leaf
	}
	return nil, false
}
