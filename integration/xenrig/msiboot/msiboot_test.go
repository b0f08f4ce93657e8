package msiboot

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

const qemuBin = "qemu-system-x86_64"

func needTools(t *testing.T) {
	t.Helper()
	if tool := MissingTool(); tool != "" {
		t.Skipf("binutils' %s not on PATH", tool)
	}
}

// The Go constants are the assembler's.
func TestConstantsMatchSource(t *testing.T) {
	for name, want := range map[string]int{"VECTOR": Vector, "RAISE": RaiseStatus} {
		m := regexp.MustCompile(`(?m)^\s*\.set ` + name + `, (0x[0-9a-f]+)`).FindSubmatch(source)
		if m == nil {
			t.Fatalf(".set %s not in msiboot.S", name)
		}
		got, err := strconv.ParseInt(string(m[1]), 0, 32)
		if err != nil || int(got) != want {
			t.Errorf("msiboot.S: %s = %s, Go has %#x", name, m[1], want)
		}
	}
}

func TestBuild(t *testing.T) {
	checkBuild(t, Build, msiGuest, "NO_MSI_ENABLE=1")
}

// checkBuild builds a guest with mk into a directory of its own and
// checks the image: its size, the boot signature, zeros past the sector,
// nothing else left in the directory, a rebuild byte-identical, and the
// control (assembled with defsym) a different image. It returns the
// image's path and bytes.
func checkBuild(t *testing.T, mk func(string) (string, error), g guest, defsym string) (string, []byte) {
	t.Helper()
	needTools(t)
	dir := t.TempDir()
	img, err := mk(dir)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) != ImageSize || b[510] != 0x55 || b[511] != 0xaa {
		t.Fatalf("%s: %d bytes, signature %x", img, len(b), b[510:512])
	}
	if !bytes.Equal(b[512:], make([]byte, ImageSize-512)) {
		t.Error("image not zero past the boot sector")
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Errorf("%d entries in %s, want the image alone", len(ents), dir)
	}
	img2, err := mk(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if b2, _ := os.ReadFile(img2); !bytes.Equal(b, b2) {
		t.Error("two builds differ")
	}
	// The control differs from the image in the enable write only.
	ctl, err := build(g, t.TempDir(), defsym)
	if err != nil {
		t.Fatal(err)
	}
	if b3, _ := os.ReadFile(ctl); bytes.Equal(b, b3) {
		t.Errorf("%s build is the same image", defsym)
	}
	return img, b
}

func TestCheckSector(t *testing.T) {
	ok := make([]byte, 512)
	ok[510], ok[511] = 0x55, 0xaa
	if err := checkSector(ok); err != nil {
		t.Error(err)
	}
	if checkSector(ok[:511]) == nil || checkSector(make([]byte, 512)) == nil || checkSector(append(ok, 0)) == nil {
		t.Error("bad sector accepted")
	}
}

// accels are the accelerators to boot with: TCG always, KVM as well when
// /dev/kvm opens.
func accels() []string {
	a := []string{"tcg"}
	if f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0); err == nil {
		f.Close()
		a = append(a, "kvm")
	}
	return a
}

// boot runs QEMU on img with the debug port on its stdout, and edu if
// asked, until the guest says "done" (then QEMU is killed: the guest
// halts forever) or QEMU ends; it returns the debug port's output.
func boot(t *testing.T, img, machine, accel string, edu bool) string {
	t.Helper()
	var devices []string
	if edu {
		devices = append(devices, "edu")
	}
	return bootQEMU(t, img, machine, accel, Prefix+"done", devices...)
}

// bootQEMU is boot for either guest: done is the line that ends a run,
// devices the -device arguments to add.
func bootQEMU(t *testing.T, img, machine, accel, done string, devices ...string) string {
	t.Helper()
	if testing.Short() {
		t.Skip("runs QEMU")
	}
	if _, err := exec.LookPath(qemuBin); err != nil {
		t.Skipf("%s not on PATH", qemuBin)
	}
	args := []string{
		"-machine", machine, "-accel", accel, "-m", "64", "-smp", "1",
		"-nodefaults", "-display", "none", "-no-reboot",
		"-drive", "file=" + img + ",format=raw,if=ide",
		"-chardev", "stdio,id=dbg,signal=off",
		"-device", "isa-debugcon,iobase=0xe9,chardev=dbg",
	}
	for _, d := range devices {
		args = append(args, "-device", d)
	}
	// A bound for a hang (a triple fault ends QEMU: -no-reboot), not a
	// timing assertion: a run takes seconds.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, qemuBin, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var log strings.Builder
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		log.WriteString(sc.Text() + "\n")
		if strings.HasSuffix(sc.Text(), done) {
			cancel()
			break
		}
	}
	_ = cmd.Wait() // killed on purpose
	if ctx.Err() == context.DeadlineExceeded {
		t.Errorf("%s %s: no %q in time", machine, accel, done)
	}
	t.Logf("%s -machine %s -accel %s %q: %.1f s\n%s%s", qemuBin, machine, accel, devices, time.Since(start).Seconds(), log.String(), stderr.String())
	return log.String()
}

// The boot sector does its job in plain QEMU: edu's MSI reaches the
// vector's handler through the local APIC. pc is the chipset Xen's HVM
// guests have (i440FX), q35 the other.
func TestQEMU(t *testing.T) {
	needTools(t)
	img, err := Build(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, machine := range []string{"pc", "q35"} {
		for _, accel := range accels() {
			t.Run(machine+"/"+accel, func(t *testing.T) {
				r := Parse(boot(t, img, machine, accel, true))
				if err := r.Check(); err != nil {
					t.Fatal(err)
				}
			})
		}
	}
}

// Controls: without edu the scan says so; with MSI left disabled no
// interrupt arrives (edu then asserts INTx, which is masked), so "got
// interrupt" above is the MSI's doing.
func TestQEMUControls(t *testing.T) {
	needTools(t)
	img, err := Build(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctl, err := build(msiGuest, t.TempDir(), "NO_MSI_ENABLE=1")
	if err != nil {
		t.Fatal(err)
	}
	t.Run("no-edu", func(t *testing.T) {
		r := Parse(boot(t, img, "pc", "tcg", false))
		if !equal(r.Lines, []string{"no edu", "done"}) {
			t.Fatalf("lines %q, want no edu, done", r.Lines)
		}
		if r.Check() == nil {
			t.Fatal("Check passed a run without edu")
		}
	})
	t.Run("msi-disabled", func(t *testing.T) {
		r := Parse(boot(t, ctl, "pc", "tcg", true))
		if r.Device == "" || !equal(r.Lines[1:], []string{"msi enabled, vector 0x60", "no interrupt", "done"}) {
			t.Fatalf("lines %q, want edu, msi (not really), no interrupt, done", r.Lines)
		}
		if r.Interrupt || r.Check() == nil {
			t.Fatal("an interrupt with MSI disabled")
		}
	})
}

func equal(a, b []string) bool {
	return strings.Join(a, "\n") == strings.Join(b, "\n")
}
