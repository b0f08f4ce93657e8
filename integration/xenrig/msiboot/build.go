package msiboot

import (
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

//go:embed msiboot.S
var source []byte

const (
	// Vector is the MSI vector the boot sector programs and handles
	// (VECTOR in msiboot.S).
	Vector = 0x60
	// RaiseStatus is the value it writes to edu's raise register, which
	// the handler reads back as edu's interrupt status (RAISE).
	RaiseStatus = 0x5a
	// ImageSize is the size of the raw disk image: the boot sector, then
	// zeros. A disk of a single sector is legal but unusual enough for
	// geometry guesses and loop devices that a round 1 MiB is used.
	ImageSize = 1 << 20
	// ImageName is the image's file name in Build's directory.
	ImageName = "msiboot.img"
)

// Tools are the binutils programs Build runs.
var Tools = []string{"as", "ld", "objcopy"}

// MissingTool returns the first of Tools not on PATH, or "".
func MissingTool() string {
	for _, t := range Tools {
		if _, err := exec.LookPath(t); err != nil {
			return t
		}
	}
	return ""
}

// Build assembles the boot sector with binutils and writes the raw disk
// image dir/msiboot.img (ImageSize bytes, mode 0644), returning its path.
// The intermediate files go to a temporary directory under dir, removed
// afterwards.
func Build(dir string) (string, error) {
	return build(dir)
}

// build is Build with extra `as --defsym` symbols (the tests' controls).
func build(dir string, defsyms ...string) (string, error) {
	work, err := os.MkdirTemp(dir, ".msiboot-build-")
	if err != nil {
		return "", fmt.Errorf("msiboot: %w", err)
	}
	defer os.RemoveAll(work)
	src := filepath.Join(work, "msiboot.S")
	if err := os.WriteFile(src, source, 0o644); err != nil {
		return "", fmt.Errorf("msiboot: %w", err)
	}
	obj := filepath.Join(work, "msiboot.o")
	elf := filepath.Join(work, "msiboot.elf")
	bin := filepath.Join(work, "msiboot.bin")
	asArgs := []string{"--32"}
	for _, d := range defsyms {
		asArgs = append(asArgs, "--defsym", d)
	}
	steps := [][]string{
		append(append([]string{"as"}, asArgs...), "-o", obj, src),
		// -Ttext 0x7c00: SeaBIOS loads the sector there and the code uses
		// absolute addresses (the GDT, the handler, the strings).
		{"ld", "-m", "elf_i386", "-Ttext", "0x7c00", "-e", "start", "-o", elf, obj},
		{"objcopy", "-O", "binary", "-j", ".text", elf, bin},
	}
	for _, s := range steps {
		var out bytes.Buffer
		cmd := exec.Command(s[0], s[1:]...)
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			return "", fmt.Errorf("msiboot: %s: %w: %s", s[0], err, bytes.TrimSpace(out.Bytes()))
		}
	}
	sector, err := os.ReadFile(bin)
	if err != nil {
		return "", fmt.Errorf("msiboot: %w", err)
	}
	if err := checkSector(sector); err != nil {
		return "", fmt.Errorf("msiboot: %s: %w", bin, err)
	}
	img := filepath.Join(dir, ImageName)
	if err := writeImage(img, sector); err != nil {
		return "", fmt.Errorf("msiboot: %s: %w", img, err)
	}
	return img, nil
}

// checkSector checks what BIOSes check, and that objcopy kept nothing
// but the sector.
func checkSector(b []byte) error {
	if len(b) != 512 {
		return fmt.Errorf("boot sector is %d bytes, want 512", len(b))
	}
	if b[510] != 0x55 || b[511] != 0xaa {
		return errors.New("boot sector has no 55AAh signature")
	}
	return nil
}

// writeImage writes the sector and extends the file to ImageSize (a
// sparse tail), through a temporary file renamed into place so a reader
// never sees half an image.
func writeImage(path string, sector []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".msiboot-img-")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	if _, err := f.Write(sector); err != nil {
		f.Close()
		return err
	}
	if err := f.Truncate(ImageSize); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
