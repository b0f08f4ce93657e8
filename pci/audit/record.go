package audit

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// FormatVersion is the record format written by this package.
const FormatVersion = 1

// Verdicts.
const (
	Allow     = "allow"     // policy allowed it and the backend did it
	Deny      = "deny"      // policy refused it
	Failed    = "failed"    // policy allowed it, the backend failed
	Malformed = "malformed" // the frame did not decode
	Event     = "event"     // session lifecycle (open, attach, close, undo)
)

// Record is one audited request or session event.
type Record struct {
	V         int       `json:"v"`
	N         uint64    `json:"n"`
	Time      time.Time `json:"time"`
	Session   uint64    `json:"session"`
	Domid     uint32    `json:"domid"`
	PID       int32     `json:"pid"`
	UID       uint32    `json:"uid"`
	Op        string    `json:"op"`
	Args      string    `json:"args,omitempty"`
	Verdict   string    `json:"verdict"`
	Errno     int       `json:"errno"`
	Err       string    `json:"err,omitempty"`
	LatencyNS int64     `json:"latency_ns"`
	Prev      string    `json:"prev"`
	Hash      string    `json:"hash"`
}

// genesis is the prev of the first record of a chain.
var genesis = string(bytes.Repeat([]byte("0"), 64))

const hashKey = `,"hash":"`

// encode fills r.Hash from r.Prev and the other fields and returns the
// line (with its newline).
func encode(r *Record) ([]byte, error) {
	r.Hash = ""
	r.V = FormatVersion
	b, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("audit: encode record %d: %w", r.N, err)
	}
	// b ends with `,"hash":""}`: hash the prefix, then write the hash in.
	suffix := hashKey + `"}`
	if !bytes.HasSuffix(b, []byte(suffix)) {
		return nil, fmt.Errorf("audit: encode record %d: unexpected layout", r.N)
	}
	prefix := b[:len(b)-len(suffix)]
	sum := sha256.Sum256(prefix)
	r.Hash = hex.EncodeToString(sum[:])
	line := make([]byte, 0, len(b)+66)
	line = append(line, prefix...)
	line = append(line, hashKey...)
	line = append(line, r.Hash...)
	line = append(line, "\"}\n"...)
	return line, nil
}

// ErrChain is wrapped by every integrity failure Verify and Open report.
var ErrChain = errors.New("audit chain broken")

// parseLine decodes one line (without newline) and checks its own hash.
func parseLine(line []byte) (*Record, error) {
	i := bytes.LastIndex(line, []byte(hashKey))
	if i < 0 || len(line) != i+len(hashKey)+64+2 || !bytes.HasSuffix(line, []byte(`"}`)) {
		return nil, fmt.Errorf("%w: no hash field at the end of the line", ErrChain)
	}
	var r Record
	if err := json.Unmarshal(line, &r); err != nil {
		return nil, fmt.Errorf("%w: not a record: %v", ErrChain, err)
	}
	if r.V != FormatVersion {
		return nil, fmt.Errorf("%w: record format version %d, this build reads %d", ErrChain, r.V, FormatVersion)
	}
	sum := sha256.Sum256(line[:i])
	if hex.EncodeToString(sum[:]) != r.Hash {
		return nil, fmt.Errorf("%w: record %d was modified (hash mismatch)", ErrChain, r.N)
	}
	return &r, nil
}
