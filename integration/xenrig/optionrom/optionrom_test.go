package optionrom

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestLayout(t *testing.T) {
	b := ROM(0x1234, 0x11e8, 0x00ff00)
	if len(b) != Size || b[0] != 0x55 || b[1] != 0xaa || b[2] != 8 || b[3] != 0xcb {
		t.Fatalf("header % x", b[:4])
	}
	var sum byte
	for _, c := range b {
		sum += c
	}
	if sum != 0 {
		t.Fatalf("checksum: bytes sum to %#x", sum)
	}
	if string(b[0x1c:0x20]) != "PCIR" || b[0x20] != 0x34 || b[0x21] != 0x12 || b[0x22] != 0xe8 || b[0x23] != 0x11 {
		t.Fatalf("PCI data structure % x", b[0x1c:0x34])
	}
}

// romsRun boots plain QEMU (TCG, SeaBIOS, no disk) with an edu device
// (given romfile rom, if any) and counts the option ROMs SeaBIOS runs,
// from its debug port, until it goes on to boot.
func romsRun(t *testing.T, rom []byte) int {
	t.Helper()
	dir := t.TempDir()
	dev := "edu"
	if rom != nil {
		p := filepath.Join(dir, "edu.rom")
		if err := os.WriteFile(p, rom, 0o644); err != nil {
			t.Fatal(err)
		}
		dev += ",romfile=" + p
	}
	logPath := filepath.Join(dir, "seabios.log")
	// A bound, not a timing assertion: SeaBIOS is through its ROMs in
	// well under a second; the loop below stops as soon as it boots.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "qemu-system-x86_64", "-machine", "q35", "-accel", "tcg", "-m", "64",
		"-display", "none", "-nodefaults", "-no-reboot", "-device", dev,
		"-chardev", "file,id=dbg,path="+logPath, "-device", "isa-debugcon,iobase=0x402,chardev=dbg")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	for ctx.Err() == nil {
		b, _ := os.ReadFile(logPath)
		if s := string(b); strings.Contains(s, "Booting from") || strings.Contains(s, "No bootable device") {
			return strings.Count(s, "Running option rom at")
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatal("SeaBIOS never got to booting")
	return 0
}

// TestSeaBIOSRunsIt: SeaBIOS runs the ROM on the device it names (one
// more ROM run than the same machine without it, whatever QEMU adds of
// its own), and not on a device of other IDs (the control).
func TestSeaBIOSRunsIt(t *testing.T) {
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		t.Skip("qemu-system-x86_64 not installed (make deps installs qemu-system-x86)")
	}
	base := romsRun(t, nil)
	if n := romsRun(t, ROM(0x1234, 0x11e8, 0x00ff00)); n != base+1 {
		t.Errorf("with the edu's ROM: %d ROMs run, want %d", n, base+1)
	}
	if n := romsRun(t, ROM(0x1234, 0x11e9, 0x00ff00)); n != base {
		t.Errorf("a ROM naming another device: %d ROMs run, want %d", n, base)
	}
}
