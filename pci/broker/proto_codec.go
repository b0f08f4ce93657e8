package broker

import (
	"encoding/binary"
	"errors"
	"fmt"
	"reflect"

	"golang.org/x/sys/unix"
)

// FrameError is a request frame the decoder refused. Errno is the status
// the reply carries; Header holds whatever the decoder recovered (a
// truncated frame has a zero header) so the reply can echo seq and op.
type FrameError struct {
	Header Header
	Errno  unix.Errno
	Why    string
}

func (e *FrameError) Error() string {
	return fmt.Sprintf("broker: bad frame (seq %d, op %s): %s: %v", e.Header.Seq, e.Header.Op, e.Why, e.Errno)
}

// Unwrap lets errors.Is(err, unix.EPROTO) and friends work.
func (e *FrameError) Unwrap() error { return e.Errno }

// DecodeRequest parses one request datagram. It never panics: every
// malformed input yields a *FrameError naming the errno to reply with.
//
//	short header            EBADMSG
//	wrong magic             EPROTO
//	wrong version           EPROTONOSUPPORT
//	frame over MaxFrame     EMSGSIZE
//	length ≠ bytes received EBADMSG   (truncated body, lying length)
//	flags or reserved set   EBADMSG
//	unknown op              ENOSYS
//	body size ≠ op's size   EBADMSG
//	reserved body field set EBADMSG
func DecodeRequest(frame []byte) (Header, Request, error) {
	if len(frame) < HeaderSize {
		return Header{}, nil, &FrameError{Errno: unix.EBADMSG, Why: fmt.Sprintf("frame of %d bytes is shorter than the header", len(frame))}
	}
	h := getHeader(frame)
	bad := func(e unix.Errno, format string, a ...any) (Header, Request, error) {
		return h, nil, &FrameError{Header: h, Errno: e, Why: fmt.Sprintf(format, a...)}
	}
	switch {
	case h.Magic != Magic:
		return bad(unix.EPROTO, "magic %#x", h.Magic)
	case h.Version != Version:
		return bad(unix.EPROTONOSUPPORT, "version %d, this broker speaks %d", h.Version, Version)
	case len(frame) > MaxFrame:
		return bad(unix.EMSGSIZE, "frame of %d bytes exceeds %d", len(frame), MaxFrame)
	case uint64(h.Length) != uint64(len(frame)-HeaderSize):
		return bad(unix.EBADMSG, "header says %d body bytes, frame has %d", h.Length, len(frame)-HeaderSize)
	case h.Flags != 0:
		return bad(unix.EBADMSG, "flags %#x set in a request", h.Flags)
	case h.Reserved != 0:
		return bad(unix.EBADMSG, "reserved header field set")
	}
	req := newRequest(h.Op)
	if req == nil {
		return bad(unix.ENOSYS, "unknown op %d", uint16(h.Op))
	}
	if want := binary.Size(req); int(h.Length) != want {
		return bad(unix.EBADMSG, "%s body is %d bytes, want %d", h.Op, h.Length, want)
	}
	if _, err := binary.Decode(frame[HeaderSize:], binary.LittleEndian, req); err != nil {
		return bad(unix.EBADMSG, "%s body: %v", h.Op, err)
	}
	if reservedSet(req) {
		return bad(unix.EBADMSG, "%s: reserved field set", h.Op)
	}
	return h, req, nil
}

// reservedSet reports whether any field whose name starts with Reserved
// is non-zero, so v1 clients cannot smuggle data a v2 broker would read.
func reservedSet(r Request) bool {
	v := reflect.ValueOf(r).Elem()
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		if len(t.Field(i).Name) >= 8 && t.Field(i).Name[:8] == "Reserved" && !v.Field(i).IsZero() {
			return true
		}
	}
	return false
}

// EncodeRequest builds a request frame (client side).
func EncodeRequest(seq uint32, r Request) []byte {
	n := binary.Size(r)
	b := make([]byte, HeaderSize+n)
	Header{Magic: Magic, Version: Version, Op: r.Op(), Seq: seq, Length: uint32(n)}.put(b)
	if _, err := binary.Encode(b[HeaderSize:], binary.LittleEndian, r); err != nil {
		panic("broker: encode " + r.Op().String() + ": " + err.Error()) // fixed-size types only
	}
	return b
}

// EncodeReply builds a reply frame: the request's op and seq, status 0 or
// an errno, then result (nil for ops without one, or when status ≠ 0).
func EncodeReply(op Op, seq uint32, status unix.Errno, result any) []byte {
	n := 0
	if result != nil {
		n = binary.Size(result)
	}
	b := make([]byte, HeaderSize+ReplyPrefix+n)
	Header{Magic: Magic, Version: Version, Op: op, Flags: FlagReply, Seq: seq, Length: uint32(ReplyPrefix + n)}.put(b)
	binary.LittleEndian.PutUint32(b[HeaderSize:], uint32(status))
	if result != nil {
		if _, err := binary.Encode(b[HeaderSize+ReplyPrefix:], binary.LittleEndian, result); err != nil {
			panic("broker: encode reply " + op.String() + ": " + err.Error())
		}
	}
	return b
}

// ErrBadReply is returned by DecodeReply for frames that are not a v1
// reply.
var ErrBadReply = errors.New("broker: malformed reply")

// DecodeReply parses a reply frame (client side). status is 0 or an errno;
// result, if non-nil and status is 0, is filled from the body.
func DecodeReply(frame []byte, result any) (Header, unix.Errno, error) {
	if len(frame) < HeaderSize+ReplyPrefix {
		return Header{}, 0, fmt.Errorf("%w: %d bytes", ErrBadReply, len(frame))
	}
	h := getHeader(frame)
	if h.Magic != Magic || h.Version != Version || h.Flags&FlagReply == 0 || int(h.Length) != len(frame)-HeaderSize {
		return h, 0, fmt.Errorf("%w: header %+v", ErrBadReply, h)
	}
	status := unix.Errno(binary.LittleEndian.Uint32(frame[HeaderSize:]))
	// Ops without a result send none; result is then left alone.
	if status == 0 && result != nil && len(frame) > HeaderSize+ReplyPrefix {
		if _, err := binary.Decode(frame[HeaderSize+ReplyPrefix:], binary.LittleEndian, result); err != nil {
			return h, 0, fmt.Errorf("%w: %s result: %v", ErrBadReply, h.Op, err)
		}
	}
	return h, status, nil
}
