package xenstore

import (
	"bytes"
	"errors"
	"testing"
)

// FuzzReply feeds arbitrary bytes from "xenstored" to the reply decoder:
// no panic, and whatever it accepts is consistent with the header and,
// for a directory, is a list of single path components.
func FuzzReply(f *testing.F) {
	ok := append(header{Type: typeDirectory, ReqID: 1, Len: 12}.marshal(), "51712\x0051728\x00"...)
	f.Add(ok)
	f.Add(append(header{Type: typeError, ReqID: 1, Len: 7}.marshal(), "ENOENT\x00"...))
	f.Add(append(header{Type: typeDirectory, ReqID: 1, Len: 3}.marshal(), "..\x00"...))
	f.Add(header{Type: typeDirectory, ReqID: 1, Len: 1 << 31}.marshal())
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) < headerLen {
			return
		}
		h, err := parseHeader(b[:headerLen])
		if err != nil {
			return
		}
		p, err := decodeReply(h, b[headerLen:], header{Type: typeDirectory, ReqID: 1})
		if err != nil {
			return
		}
		if len(p) != int(h.Len) || h.Len > PayloadMax {
			t.Fatalf("accepted %d bytes with header length %d", len(p), h.Len)
		}
		names, err := splitDirectory(p)
		if err != nil {
			if !errors.Is(err, ErrProtocol) {
				t.Fatalf("error not ErrProtocol: %v", err)
			}
			return
		}
		for _, n := range names {
			if n == "" || n == "." || n == ".." || bytes.ContainsAny([]byte(n), "/\x00") {
				t.Fatalf("accepted entry %q", n)
			}
		}
	})
}
