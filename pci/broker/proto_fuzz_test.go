package broker

import (
	"bytes"
	"errors"
	"testing"
)

// FuzzDecodeRequest: the decoder never panics, refuses with a FrameError
// carrying a non-zero errno, and whatever it accepts re-encodes to the
// exact bytes it was given (no field is lost or invented).
func FuzzDecodeRequest(f *testing.F) {
	for i, r := range sampleRequests() {
		f.Add(EncodeRequest(uint32(i), r))
	}
	f.Fuzz(func(t *testing.T, frame []byte) {
		h, req, err := DecodeRequest(frame)
		if err != nil {
			var fe *FrameError
			if !errors.As(err, &fe) || fe.Errno == 0 || req != nil {
				t.Fatalf("refusal %v is not a FrameError with an errno", err)
			}
			return
		}
		if again := EncodeRequest(h.Seq, req); !bytes.Equal(again, frame) {
			t.Fatalf("accepted frame does not re-encode:\n in %x\nout %x", frame, again)
		}
	})
}
