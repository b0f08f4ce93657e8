package xenstore

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"syscall"
)

// Message types used here (xs_wire.h enum xsd_sockmsg_type).
const (
	typeDirectory  uint32 = 1
	typeRead       uint32 = 2
	typeWatchEvent uint32 = 15
	typeError      uint32 = 16
)

const (
	headerLen = 16
	// PayloadMax is XENSTORE_PAYLOAD_MAX: no request or reply is longer.
	PayloadMax = 4096
)

// ErrProtocol marks a reply that is not what the protocol allows.
var ErrProtocol = errors.New("xenstore protocol error")

// header is struct xsd_sockmsg.
type header struct {
	Type, ReqID, TxID, Len uint32
}

func (h header) marshal() []byte {
	b := make([]byte, headerLen)
	binary.NativeEndian.PutUint32(b[0:], h.Type)
	binary.NativeEndian.PutUint32(b[4:], h.ReqID)
	binary.NativeEndian.PutUint32(b[8:], h.TxID)
	binary.NativeEndian.PutUint32(b[12:], h.Len)
	return b
}

func parseHeader(b []byte) (header, error) {
	if len(b) != headerLen {
		return header{}, fmt.Errorf("%w: header of %d bytes", ErrProtocol, len(b))
	}
	h := header{binary.NativeEndian.Uint32(b[0:]), binary.NativeEndian.Uint32(b[4:]),
		binary.NativeEndian.Uint32(b[8:]), binary.NativeEndian.Uint32(b[12:])}
	if h.Len > PayloadMax {
		return header{}, fmt.Errorf("%w: payload of %d bytes (max %d)", ErrProtocol, h.Len, PayloadMax)
	}
	return h, nil
}

// request encodes a request whose payload is one NUL-terminated path.
func request(typ, reqID uint32, path string) ([]byte, error) {
	if path == "" || len(path)+1 > PayloadMax || bytes.IndexByte([]byte(path), 0) >= 0 {
		return nil, fmt.Errorf("xenstore: invalid path %q", path)
	}
	b := header{Type: typ, ReqID: reqID, Len: uint32(len(path) + 1)}.marshal()
	return append(append(b, path...), 0), nil
}

// xsErrors are the errno names xenstored replies with (xsd_errors[]);
// the ones not listed map to EIO.
var xsErrors = map[string]syscall.Errno{
	"EINVAL": syscall.EINVAL, "EACCES": syscall.EACCES, "EEXIST": syscall.EEXIST,
	"EISDIR": syscall.EISDIR, "ENOENT": syscall.ENOENT, "ENOMEM": syscall.ENOMEM,
	"ENOSPC": syscall.ENOSPC, "EIO": syscall.EIO, "ENOTEMPTY": syscall.ENOTEMPTY,
	"ENOSYS": syscall.ENOSYS, "EROFS": syscall.EROFS, "EBUSY": syscall.EBUSY,
	"EAGAIN": syscall.EAGAIN, "EISCONN": syscall.EISCONN, "E2BIG": syscall.E2BIG,
	"EPERM": syscall.EPERM,
}

// decodeReply checks a reply (header and payload) against the request
// it answers and returns the payload, or xenstored's error as an Errno.
func decodeReply(h header, payload []byte, want header) ([]byte, error) {
	if int(h.Len) != len(payload) {
		return nil, fmt.Errorf("%w: payload of %d bytes, header says %d", ErrProtocol, len(payload), h.Len)
	}
	if h.ReqID != want.ReqID || h.TxID != want.TxID {
		return nil, fmt.Errorf("%w: reply to request %d/%d, sent %d/%d", ErrProtocol, h.ReqID, h.TxID, want.ReqID, want.TxID)
	}
	switch h.Type {
	case want.Type:
		return payload, nil
	case typeError:
		name := string(bytes.TrimRight(payload, "\x00"))
		if e, ok := xsErrors[name]; ok {
			return nil, e
		}
		return nil, fmt.Errorf("%w: error %q", syscall.EIO, name)
	default:
		return nil, fmt.Errorf("%w: reply type %d to request type %d", ErrProtocol, h.Type, want.Type)
	}
}

// splitDirectory decodes XS_DIRECTORY's payload: names, each followed by
// a NUL. A name is a single path component: never empty, never "." or
// "..", never containing '/'.
func splitDirectory(p []byte) ([]string, error) {
	if len(p) == 0 {
		return nil, nil
	}
	if p[len(p)-1] != 0 {
		return nil, fmt.Errorf("%w: directory listing not NUL-terminated", ErrProtocol)
	}
	parts := bytes.Split(p[:len(p)-1], []byte{0})
	out := make([]string, 0, len(parts))
	for _, b := range parts {
		s := string(b)
		if s == "" || s == "." || s == ".." || bytes.IndexByte(b, '/') >= 0 {
			return nil, fmt.Errorf("%w: directory entry %q", ErrProtocol, s)
		}
		out = append(out, s)
	}
	return out, nil
}
