package broker

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// sampleRequests has one request of every op, with non-zero fields so a
// field-order mistake shows up in the round trip.
func sampleRequests() []Request {
	return []Request{
		&Hello{Version: 1},
		&MemoryMapping{Domid: 7, Add: 1, FirstGfn: 0xf0000, FirstMfn: 0xfebf0, NrMfns: 4},
		&IoportMapping{Domid: 7, Add: 1, FirstGport: 0xc000, FirstMport: 0xe000, NrPorts: 0x20},
		&MapPirq{Domid: 7, Index: 11, Pirq: -1},
		&MapPirqMSI{Domid: 7, Index: -1, Pirq: -1, Devfn: 0x28, Bus: 0, EntryNr: 2, TableBase: 0xfebf0000},
		&UnmapPirq{Domid: 7, Pirq: 55},
		&BindPtPciIrq{Domid: 7, MachineIrq: 55, Bus: 0, Device: 5, Intx: 0},
		&UnbindPtIrq{Domid: 7, MachineIrq: 55, Device: 5},
		&UpdateMsiIrq{Domid: 7, Gvec: 0x41, Pirq: 56, Gflags: 0x1000, Gtable: 0xf1000000},
		&UnbindMsiIrq{Domid: 7, Gvec: 0x41, Pirq: 56},
		&ConfigRead{BDF: 0x28, Offset: 4, Size: 2},
		&ConfigWrite{BDF: 0x28, Offset: 4, Size: 2, Value: 0x6},
		&Reset{BDF: 0x28},
		&OpenFile{BDF: WireAnyBDF, File: FileMSIXBar, Addr: 0xfebd0000},
	}
}

func TestRoundTripEveryOp(t *testing.T) {
	for i, r := range sampleRequests() {
		frame := EncodeRequest(uint32(i+1), r)
		h, got, err := DecodeRequest(frame)
		if err != nil {
			t.Fatalf("%s: %v", r.Op(), err)
		}
		if h.Seq != uint32(i+1) || h.Op != r.Op() {
			t.Errorf("%s: header %+v", r.Op(), h)
		}
		if !bytes.Equal(EncodeRequest(h.Seq, got), frame) {
			t.Errorf("%s: re-encoding differs", r.Op())
		}
	}
}

// TestBodySizesAreFixed pins the wire sizes documented in
// docs/broker-protocol.md: changing one is a protocol change.
func TestBodySizesAreFixed(t *testing.T) {
	want := map[Op]int{
		OpHello: 8, OpMemoryMapping: 32, OpIoportMapping: 24, OpMapPirq: 16, OpMapPirqMSI: 32,
		OpUnmapPirq: 8, OpBindPtPciIrq: 8, OpUnbindPtIrq: 12, OpUpdateMsiIrq: 24, OpUnbindMsiIrq: 16,
		OpConfigRead: 8, OpConfigWrite: 16, OpReset: 8, OpOpenFile: 16,
	}
	for op := Op(1); op <= opMax; op++ {
		if got := BodySize(op); got != want[op] {
			t.Errorf("%s: body %d bytes, documented %d", op, got, want[op])
		}
	}
	if n := binary.Size(HelloReply{}); n != 40 {
		t.Errorf("hello reply %d bytes, documented 40", n)
	}
	if n := binary.Size(OpenFileReply{}); n != 16 {
		t.Errorf("open_file reply %d bytes, documented 16", n)
	}
}

func TestDecodeRefusals(t *testing.T) {
	good := EncodeRequest(9, &ConfigRead{BDF: 0x28, Offset: 0, Size: 4})
	mut := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), good...)) }
	cases := []struct {
		name  string
		frame []byte
		errno unix.Errno
	}{
		{"empty", nil, unix.EBADMSG},
		{"truncated header", good[:HeaderSize-1], unix.EBADMSG},
		{"wrong magic", mut(func(b []byte) []byte { b[0] ^= 0xff; return b }), unix.EPROTO},
		{"wrong version", mut(func(b []byte) []byte { b[4] = 2; return b }), unix.EPROTONOSUPPORT},
		{"truncated body", good[:len(good)-1], unix.EBADMSG},
		{"length lies long", mut(func(b []byte) []byte { b[16] = 200; return b }), unix.EBADMSG},
		{"length lies short", mut(func(b []byte) []byte { b[16] = 4; return b }), unix.EBADMSG},
		{"oversized", append(mut(func(b []byte) []byte { return b }), make([]byte, MaxFrame)...), unix.EMSGSIZE},
		{"reply flag", mut(func(b []byte) []byte { b[8] = 1; return b }), unix.EBADMSG},
		{"reserved header", mut(func(b []byte) []byte { b[20] = 1; return b }), unix.EBADMSG},
		{"unknown op", mut(func(b []byte) []byte { b[6] = 0x7f; return b }), unix.ENOSYS},
		{"op zero", mut(func(b []byte) []byte { b[6] = 0; return b }), unix.ENOSYS},
		{"reserved body", mut(func(b []byte) []byte { b[HeaderSize+7] = 1; return b }), unix.EBADMSG},
		{"wrong body size for op", mut(func(b []byte) []byte {
			b = append(b, 0, 0, 0, 0, 0, 0, 0, 0)
			binary.LittleEndian.PutUint32(b[16:], 16)
			return b
		}), unix.EBADMSG},
	}
	for _, c := range cases {
		h, req, err := DecodeRequest(c.frame)
		var fe *FrameError
		if !errors.As(err, &fe) || fe.Errno != c.errno || req != nil {
			t.Errorf("%s: got %v (req %v), want %v", c.name, err, req, c.errno)
			continue
		}
		if len(c.frame) >= HeaderSize && h.Seq != 9 && c.name != "length lies long" {
			t.Errorf("%s: seq not recovered: %d", c.name, h.Seq)
		}
	}
}

func TestReplyRoundTrip(t *testing.T) {
	f := EncodeReply(OpMapPirq, 4, 0, &PirqReply{Pirq: 77})
	var r PirqReply
	h, st, err := DecodeReply(f, &r)
	if err != nil || st != 0 || r.Pirq != 77 || h.Seq != 4 || h.Op != OpMapPirq {
		t.Fatalf("got %+v %v %v %+v", h, st, err, r)
	}
	f = EncodeReply(OpMapPirq, 5, unix.EPERM, nil)
	if _, st, err = DecodeReply(f, &r); err != nil || st != unix.EPERM {
		t.Fatalf("got %v %v", st, err)
	}
}

func TestWireBDF(t *testing.T) {
	for _, v := range []uint32{0, 0x28, 0x00010328, 0xffffffff} {
		if got := WireBDF(BDFFromWire(v)); got != v {
			t.Errorf("%#x → %s → %#x", v, BDFFromWire(v), got)
		}
	}
}

// TestWriteSeedCorpus regenerates testdata/fuzz/FuzzDecodeRequest when
// DMSANDBOX_WRITE_CORPUS=1; the files are committed.
func TestWriteSeedCorpus(t *testing.T) {
	if os.Getenv("DMSANDBOX_WRITE_CORPUS") != "1" {
		t.Skip("set DMSANDBOX_WRITE_CORPUS=1 to regenerate the committed seed corpus")
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzDecodeRequest")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for i, r := range sampleRequests() {
		writeSeed(t, dir, "op-"+r.Op().String(), EncodeRequest(uint32(i+1), r))
	}
	good := EncodeRequest(1, &ConfigRead{Size: 4})
	writeSeed(t, dir, "truncated", good[:10])
	bad := append([]byte(nil), good...)
	bad[16] = 0xff
	writeSeed(t, dir, "lying-length", bad)
}

func writeSeed(t *testing.T, dir, name string, b []byte) {
	t.Helper()
	content := "go test fuzz v1\n[]byte(" + strconv.Quote(string(b)) + ")\n"
	if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestCHeaderAgrees: the op and file numbers of c/dmsb.h, which the shim
// is built from, are the Go ones, name for name.
func TestCHeaderAgrees(t *testing.T) {
	src, err := os.ReadFile(filepath.Join("c", "dmsb.h"))
	if err != nil {
		t.Fatal(err)
	}
	enum := regexp.MustCompile(`(?m)^\s*DMSB_([A-Z0-9_]+)\s*=\s*(\d+),`)
	ops, files := 0, 0
	for _, m := range enum.FindAllStringSubmatch(string(src), -1) {
		name, v := strings.ToLower(m[1]), m[2]
		n, _ := strconv.ParseUint(v, 10, 32)
		if f, ok := strings.CutPrefix(name, "file_"); ok {
			files++
			if FileName(uint32(n)) != f {
				t.Errorf("dmsb.h DMSB_%s = %d, Go calls %d %q", m[1], n, n, FileName(uint32(n)))
			}
			continue
		}
		ops++
		if Op(n).String() != name {
			t.Errorf("dmsb.h DMSB_%s = %d, Go calls %d %q", m[1], n, n, Op(n))
		}
	}
	if ops != int(opMax) || files != len(fileNames) {
		t.Errorf("dmsb.h has %d ops and %d files, Go %d and %d", ops, files, opMax, len(fileNames))
	}
	if !strings.Contains(string(src), "#define DMSB_BDF_ANY 0xffffffffu") || WireAnyBDF != 0xffffffff {
		t.Error("DMSB_BDF_ANY and WireAnyBDF differ")
	}
}
