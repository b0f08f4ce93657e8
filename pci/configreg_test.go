package pci

import (
	"errors"
	"os"
	"testing"
)

func TestConfigRegReadWriteFake(t *testing.T) {
	s, k := q35Fake(t)
	e1000e := mustBDF(t, "0000:00:04.0")
	for _, c := range []struct {
		off, size int
		want      uint32
	}{{0, 2, 0x8086}, {2, 2, 0x10d3}, {0, 4, 0x10d38086}, {0, 1, 0x86}, {1, 1, 0x80}} {
		v, err := s.ReadConfigReg(e1000e, c.off, c.size)
		if err != nil || v != c.want {
			t.Errorf("read %d@%#x = %#x, %v; want %#x", c.size, c.off, v, err, c.want)
		}
	}
	cmd, err := s.ReadConfigReg(e1000e, cfgCommand, 2)
	must(t, err)
	must(t, s.WriteConfigReg(e1000e, cfgCommand, 2, cmd|0x4))
	ws := k.Writes()
	if len(ws) != 1 || ws[0].Path != "sys/bus/pci/devices/0000:00:04.0/config" || ws[0].Off != cfgCommand ||
		ws[0].Data != string([]byte{byte(cmd | 0x4), byte(cmd >> 8)}) {
		t.Fatalf("writes %v", ws)
	}
	if v, err := s.ReadConfigReg(e1000e, cfgCommand, 2); err != nil || v != cmd|0x4 {
		t.Fatalf("read back %#x, %v", v, err)
	}
	// The last dword of the PCIe extended space is inside; past it is not.
	size := 0
	if fi, err := os.Stat(s.DevicePath(e1000e) + "/config"); err == nil {
		size = int(fi.Size())
	}
	if _, err := s.ReadConfigReg(e1000e, size-4, 4); err != nil {
		t.Fatalf("last dword of %d: %v", size, err)
	}
}

func TestConfigRegRefusals(t *testing.T) {
	s, k := q35Fake(t)
	edu := mustBDF(t, "0000:00:03.0")
	fi, err := os.Stat(s.DevicePath(edu) + "/config")
	must(t, err)
	end := int(fi.Size())
	for _, c := range []struct {
		name      string
		off, size int
		val       uint32
	}{
		{"size 3", 0, 3, 0},
		{"size 8", 0, 8, 0},
		{"size 0", 0, 0, 0},
		{"unaligned word", 1, 2, 0},
		{"unaligned dword", 2, 4, 0},
		{"negative", -4, 4, 0},
		{"past the end", end, 4, 0},
		{"straddles the end", end - 2, 4, 0},
		{"value wider than a byte", 4, 1, 0x100},
		{"value wider than a word", 4, 2, 0x10000},
	} {
		werr := s.WriteConfigReg(edu, c.off, c.size, c.val)
		if !errors.Is(werr, ErrBadAccess) {
			t.Errorf("%s: write: %v", c.name, werr)
		}
		if c.val != 0 {
			continue
		}
		if _, rerr := s.ReadConfigReg(edu, c.off, c.size); !errors.Is(rerr, ErrBadAccess) {
			t.Errorf("%s: read: %v", c.name, rerr)
		}
	}
	if len(k.Writes()) != 0 {
		t.Fatalf("refused accesses wrote:\n%s", writesOf(k))
	}
	if _, err := s.ReadConfigReg(mustBDF(t, "0000:00:1e.0"), 0, 2); err == nil {
		t.Fatal("read of a missing device")
	}
}
