package qmpproxy

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// ErrFrame marks a message that is not one JSON object; ErrTooLarge one
// longer than the limit. After either the stream cannot be
// resynchronised and the connection is closed.
var (
	ErrFrame    = errors.New("qmp: not a JSON object")
	ErrTooLarge = errors.New("qmp: message too large")
)

// frameReader cuts a QMP stream into top-level JSON objects. It tracks
// only nesting, strings and escapes: the object is then checked whole
// with json.Valid, so a frame it returns is always valid JSON.
type frameReader struct {
	r   *bufio.Reader
	max int
}

func newFrameReader(r io.Reader, max int) *frameReader {
	return &frameReader{r: bufio.NewReaderSize(r, 4096), max: max}
}

// next returns the next object, at most max bytes (whitespace between
// objects, which QEMU and libxl send as "\r\n", is skipped).
func (f *frameReader) next() ([]byte, error) {
	var c byte
	var err error
	for {
		if c, err = f.r.ReadByte(); err != nil {
			return nil, err
		}
		if c != ' ' && c != '\t' && c != '\r' && c != '\n' {
			break
		}
	}
	if c != '{' {
		return nil, fmt.Errorf("%w: starts with %q", ErrFrame, c)
	}
	buf := []byte{c}
	depth, inString, escaped := 1, false, false
	for depth > 0 {
		if c, err = f.r.ReadByte(); err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
		if len(buf) >= f.max {
			return nil, fmt.Errorf("%w: over %d bytes", ErrTooLarge, f.max)
		}
		buf = append(buf, c)
		switch {
		case escaped:
			escaped = false
		case inString:
			switch c {
			case '\\':
				escaped = true
			case '"':
				inString = false
			}
		case c == '"':
			inString = true
		case c == '{' || c == '[':
			depth++
		case c == '}' || c == ']':
			depth--
		}
	}
	if !json.Valid(buf) {
		return nil, fmt.Errorf("%w: invalid JSON", ErrFrame)
	}
	return buf, nil
}
