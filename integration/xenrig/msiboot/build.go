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

// A guest is one boot sector: its name (the source is name.S, the image
// name.img) and its source.
type guest struct {
	name   string
	source []byte
}

var (
	//go:embed msiboot.S
	source []byte
	//go:embed msixboot.S
	msixSource []byte

	msiGuest  = guest{"msiboot", source}
	msixGuest = guest{"msixboot", msixSource}
)

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

	// MSIXVector is the vector msixboot programs into MSI-X table entry
	// MSIXEntry and handles (VECTOR in msixboot.S). It is not Vector, so
	// that the two guests' interrupts cannot be mistaken for each other.
	MSIXVector = 0x61
	// MSIXEntry is the MSI-X table entry msixboot programs, and the one
	// e1000e's "other" cause is routed to (through IVAR).
	MSIXEntry = 0
	// ICROther is e1000e's "other" interrupt cause (ICR bit 24), the one
	// msixboot sets, which its handler must find in ICR (OTHER).
	ICROther = 1 << 24
	// MSIXImageName is the image's file name in BuildMSIX's directory.
	MSIXImageName = "msixboot.img"
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
	return build(msiGuest, dir)
}

// BuildMSIX is Build for msixboot, the MSI-X guest for QEMU's e1000e
// (msixboot.S): it writes dir/msixboot.img (MSIXImageName) and returns its
// path.
func BuildMSIX(dir string) (string, error) {
	return build(msixGuest, dir)
}

// build assembles g with extra `as --defsym` symbols (the tests'
// controls) and writes dir/<g.name>.img.
func build(g guest, dir string, defsyms ...string) (string, error) {
	work, err := os.MkdirTemp(dir, "."+g.name+"-build-")
	if err != nil {
		return "", fmt.Errorf("%s: %w", g.name, err)
	}
	defer os.RemoveAll(work)
	src := filepath.Join(work, g.name+".S")
	if err := os.WriteFile(src, g.source, 0o644); err != nil {
		return "", fmt.Errorf("%s: %w", g.name, err)
	}
	obj := filepath.Join(work, g.name+".o")
	elf := filepath.Join(work, g.name+".elf")
	bin := filepath.Join(work, g.name+".bin")
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
			return "", fmt.Errorf("%s: %s: %w: %s", g.name, s[0], err, bytes.TrimSpace(out.Bytes()))
		}
	}
	sector, err := os.ReadFile(bin)
	if err != nil {
		return "", fmt.Errorf("%s: %w", g.name, err)
	}
	if err := checkSector(sector); err != nil {
		return "", fmt.Errorf("%s: %s: %w", g.name, bin, err)
	}
	img := filepath.Join(dir, g.name+".img")
	if err := writeImage(img, sector); err != nil {
		return "", fmt.Errorf("%s: %s: %w", g.name, img, err)
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
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+"-")
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
