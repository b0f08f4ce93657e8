package xenstore

import (
	"errors"
	"io"
	"net"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
)

// fakeXenstored serves XS_READ and XS_DIRECTORY from a map of nodes, as
// xenstored answers them; reply, when set, replaces the well-formed
// reply (a misbehaving peer).
type fakeXenstored struct {
	nodes map[string]string
	reply func(h header, req []byte) []byte
}

func (f *fakeXenstored) serve(conn net.Conn) {
	defer conn.Close()
	for {
		hb := make([]byte, headerLen)
		if _, err := io.ReadFull(conn, hb); err != nil {
			return
		}
		h, err := parseHeader(hb)
		if err != nil {
			return
		}
		p := make([]byte, h.Len)
		if _, err := io.ReadFull(conn, p); err != nil {
			return
		}
		if f.reply != nil {
			conn.Write(f.reply(h, p))
			continue
		}
		path := strings.TrimSuffix(string(p), "\x00")
		var out []byte
		typ := h.Type
		switch h.Type {
		case typeRead:
			v, ok := f.nodes[path]
			if !ok {
				typ, out = typeError, []byte("ENOENT\x00")
			} else {
				out = []byte(v)
			}
		case typeDirectory:
			seen := map[string]bool{}
			found := false
			for k := range f.nodes {
				if k == path {
					found = true
				}
				if rest, ok := strings.CutPrefix(k, path+"/"); ok {
					found = true
					name, _, _ := strings.Cut(rest, "/")
					if !seen[name] {
						seen[name] = true
						out = append(append(out, name...), 0)
					}
				}
			}
			if !found {
				typ, out = typeError, []byte("ENOENT\x00")
			}
		default:
			typ, out = typeError, []byte("ENOSYS\x00")
		}
		conn.Write(append(header{Type: typ, ReqID: h.ReqID, TxID: h.TxID, Len: uint32(len(out))}.marshal(), out...))
	}
}

func fakeClient(t *testing.T, f *fakeXenstored) *Client {
	t.Helper()
	a, b := net.Pipe()
	go f.serve(b)
	c := NewClient(a)
	t.Cleanup(func() { c.Close() })
	return c
}

func TestReadList(t *testing.T) {
	c := fakeClient(t, &fakeXenstored{nodes: map[string]string{
		"/local/domain/0/backend/qdisk/3/51712/params": "aio:/var/lib/xen/a.img",
		"/local/domain/0/backend/qdisk/3/51712/mode":   "w",
		"/local/domain/0/backend/qdisk/3/51728/params": "/var/lib/xen/b.img",
	}})
	v, err := c.Read("/local/domain/0/backend/qdisk/3/51712/params")
	if err != nil || v != "aio:/var/lib/xen/a.img" {
		t.Fatalf("read: %q, %v", v, err)
	}
	names, err := c.List("/local/domain/0/backend/qdisk/3")
	slices.Sort(names)
	if err != nil || !slices.Equal(names, []string{"51712", "51728"}) {
		t.Fatalf("list: %q, %v", names, err)
	}
	_, err = c.Read("/local/domain/0/backend/qdisk/4")
	if !errors.Is(err, os.ErrNotExist) || !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("missing node: %v, want ENOENT", err)
	}
	if _, err := c.List("/local/domain/0/backend/vbd"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing dir: %v, want ENOENT", err)
	}
}

// A peer that answers out of protocol gets an error, never a hang or a
// value: wrong request id, wrong type, bad listing, oversized length.
func TestBadReplies(t *testing.T) {
	cases := map[string]func(h header, req []byte) []byte{
		"wrong id": func(h header, _ []byte) []byte {
			return append(header{Type: h.Type, ReqID: h.ReqID + 1, Len: 1}.marshal(), 'x')
		},
		"wrong type": func(h header, _ []byte) []byte {
			return append(header{Type: 11, ReqID: h.ReqID, Len: 1}.marshal(), 'x')
		},
		"oversized": func(h header, _ []byte) []byte {
			return header{Type: h.Type, ReqID: h.ReqID, Len: PayloadMax + 1}.marshal()
		},
		"bad entry": func(h header, _ []byte) []byte {
			return append(header{Type: h.Type, ReqID: h.ReqID, Len: 6}.marshal(), "a/../\x00"...)
		},
		"unknown error": func(h header, _ []byte) []byte {
			return append(header{Type: typeError, ReqID: h.ReqID, Len: 5}.marshal(), "EWHAT"...)
		},
	}
	for name, reply := range cases {
		t.Run(name, func(t *testing.T) {
			c := fakeClient(t, &fakeXenstored{reply: reply})
			if names, err := c.List("/x"); err == nil {
				t.Fatalf("accepted %q", names)
			}
		})
	}
}

// Watch events interleaved with a reply are skipped.
func TestSkipsWatchEvent(t *testing.T) {
	c := fakeClient(t, &fakeXenstored{reply: func(h header, _ []byte) []byte {
		ev := append(header{Type: typeWatchEvent, Len: 4}.marshal(), "a\x00b\x00"...)
		return append(ev, append(header{Type: h.Type, ReqID: h.ReqID, Len: 2}.marshal(), "ok"...)...)
	}})
	if v, err := c.Read("/x"); err != nil || v != "ok" {
		t.Fatalf("read: %q, %v", v, err)
	}
}

func TestRequestRefusesBadPath(t *testing.T) {
	for _, p := range []string{"", "a\x00b", strings.Repeat("a", PayloadMax)} {
		if _, err := request(typeRead, 1, p); err == nil {
			t.Errorf("request(%q) accepted", p)
		}
	}
}

func TestOpenUnavailable(t *testing.T) {
	if _, err := Open(t.TempDir() + "/none"); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Open of a missing socket: %v, want ErrUnavailable", err)
	}
}

// A real unix socket, as in dom0.
func TestOpenSocket(t *testing.T) {
	sock := t.TempDir() + "/socket"
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		conn, err := ln.Accept()
		if err == nil {
			(&fakeXenstored{nodes: map[string]string{"/a": "b"}}).serve(conn)
		}
	}()
	c, err := Open(t.TempDir()+"/none", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if v, err := c.Read("/a"); err != nil || v != "b" {
		t.Fatalf("read: %q, %v", v, err)
	}
}
