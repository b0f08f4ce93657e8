package audit

import (
	"bytes"
	"testing"
)

// FuzzParseLine: audit files are read back by `dmsandbox audit verify`
// after someone may have tampered with them; parsing never panics, and a
// record it accepts can be encoded and parsed again.
func FuzzParseLine(f *testing.F) {
	r := &Record{N: 1, Prev: genesis, Op: "memory_mapping", Args: "domid=7 add=1", Verdict: Deny, Errno: 34, Err: "outside"}
	line, _ := encode(r)
	f.Add(bytes.TrimSuffix(line, []byte("\n")))
	f.Add([]byte(`{"v":1,"hash":"` + genesis + `"}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := parseLine(b)
		if err != nil {
			return
		}
		again, err := encode(r)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := parseLine(bytes.TrimSuffix(again, []byte("\n"))); err != nil {
			t.Fatalf("accepted record does not survive re-encoding: %v", err)
		}
	})
}
