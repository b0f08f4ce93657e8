package pci

import (
	"errors"
	"strings"
	"testing"
)

func TestParseResource(t *testing.T) {
	zero := "0x0000000000000000 0x0000000000000000 0x0000000000000000\n"
	in := "0x00000000fe800000 0x00000000fe81ffff 0x0000000000040200\n" + // 32-bit mem
		zero +
		"0x000000000000c040 0x000000000000c05f 0x0000000000040101\n" + // io
		"0x000000fe00000000 0x000000fe00003fff 0x000000000014220c\n" + // 64-bit prefetch
		"0x0000000000001000 0x0000000000001fff 0x0000000020000200\n" + // unset: omitted
		zero +
		"0x00000000fe600000 0x00000000fe63ffff 0x0000000000046200\n" + // rom
		zero
	bars, rom, err := ParseResource([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	want := []BAR{
		{Index: 0, Start: 0xfe800000, Size: 0x20000},
		{Index: 2, Start: 0xc040, Size: 0x20, IO: true},
		{Index: 3, Start: 0xfe00000000, Size: 0x4000, Prefetch: true, Mem64: true},
	}
	if len(bars) != len(want) {
		t.Fatalf("bars %+v", bars)
	}
	for i := range want {
		if bars[i] != want[i] {
			t.Errorf("bar %d = %+v, want %+v", i, bars[i], want[i])
		}
	}
	if rom == nil || rom.Start != 0xfe600000 || rom.Size != 0x40000 || !rom.Prefetch {
		t.Errorf("rom %+v", rom)
	}
}

func TestParseResourceGarbage(t *testing.T) {
	zero := "0x0000000000000000 0x0000000000000000 0x0000000000000000\n"
	six := strings.Repeat(zero, 6)
	cases := map[string]string{
		"empty":          "",
		"too few lines":  strings.Repeat(zero, 3),
		"two fields":     "0x0 0x0\n" + six,
		"four fields":    "0x0 0x0 0x0 0x0\n" + six,
		"no 0x":          "00 0x0 0x0\n" + six,
		"not hex":        "0xzz 0x0 0x0\n" + six,
		"negative":       "-0x1 0x0 0x0\n" + six,
		"overflow":       "0x10000000000000000 0x0 0x200\n" + six,
		"end below":      "0x2000 0x1000 0x200\n" + six,
		"whole space":    "0x0 0xffffffffffffffff 0x200\n" + six,
		"too many lines": strings.Repeat(zero, 100),
		"binary":         "\x00\xff\x10" + six,
	}
	for name, in := range cases {
		_, _, err := ParseResource([]byte(in))
		if err == nil || !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: err = %v, want ErrMalformed", name, err)
		}
	}
}
