// Package pcifake is a fake of the kernel's side of sysfs PCI writes, for
// tests of binding and reset on a writable copy of a tree captured by
// pci/testdata/capture.sh. It is a fake because this machine has no device
// that may be unbound or reset in a test: Kernel records every write and
// plays what Linux would do (unbind removes the driver link, drivers_probe
// honours driver_override, reset_method must name an offered method, and
// "bus" only for a device alone on its bus, as Linux probes it).
//
// It implements pci.Kernel without importing package pci, so both pci's
// own tests and other packages' tests can use it.
package pcifake

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// CopyTree copies a captured tree into a fresh temp dir, keeping symlinks
// (relative, so they resolve inside the copy) and making files writable.
func CopyTree(t testing.TB, src string) string {
	t.Helper()
	dst := t.TempDir()
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		out := filepath.Join(dst, rel)
		switch {
		case d.Type()&fs.ModeSymlink != 0:
			l, err := os.Readlink(p)
			if err != nil {
				return err
			}
			return os.Symlink(l, out)
		case d.IsDir():
			return os.MkdirAll(out, 0o755)
		default:
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			return os.WriteFile(out, data, 0o644)
		}
	})
	if err != nil {
		t.Fatalf("pcifake: copy %s: %v", src, err)
	}
	return dst
}

// Write is one recorded write. Path is relative to the root, with the
// device named through sys/bus/pci/devices/<bdf>.
type Write struct {
	Path string
	Data string
	Off  int64 // config writes only
}

func (w Write) String() string {
	if strings.HasSuffix(w.Path, "/config") {
		return fmt.Sprintf("%s@%#x=% x", w.Path, w.Off, []byte(w.Data))
	}
	return fmt.Sprintf("%s=%q", w.Path, w.Data)
}

// Kernel is the fake. The zero value is not usable; use New.
type Kernel struct {
	Root string
	// Match is the driver drivers_probe picks for a device with no
	// override (the id-table match), by BDF string.
	Match map[string]string
	// Block, if set, makes writes to paths ending in one of its keys
	// wait until the channel is closed (a hung probe or reset).
	Block map[string]chan struct{}
	// Fail makes writes to paths ending in a key return the error.
	Fail map[string]error

	mu      sync.Mutex
	offered map[string][]string
	writes  []Write
	resets  []string // "bdf:method" for each reset performed
}

// New returns a fake kernel over root.
func New(root string) *Kernel {
	return &Kernel{Root: root, offered: map[string][]string{}, Match: map[string]string{}, Block: map[string]chan struct{}{}, Fail: map[string]error{}}
}

// Writes returns the writes so far, in order.
func (k *Kernel) Writes() []Write {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([]Write(nil), k.writes...)
}

// Resets returns "bdf:method" for each reset done through sysfs `reset`.
func (k *Kernel) Resets() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([]string(nil), k.resets...)
}

func (k *Kernel) rel(path string) string {
	r, err := filepath.Rel(k.Root, path)
	if err != nil {
		return path
	}
	return filepath.ToSlash(r)
}

func (k *Kernel) gate(rel string) error {
	for suf, ch := range k.Block {
		if strings.HasSuffix(rel, suf) {
			<-ch
		}
	}
	for suf, err := range k.Fail {
		if strings.HasSuffix(rel, suf) {
			return err
		}
	}
	return nil
}

// WriteAttr implements pci.Kernel.
func (k *Kernel) WriteAttr(path string, data []byte) error {
	rel := k.rel(path)
	k.mu.Lock()
	k.writes = append(k.writes, Write{Path: rel, Data: string(data)})
	k.mu.Unlock()
	if err := k.gate(rel); err != nil {
		return err
	}
	// Like the kernel, a write to an attribute that does not exist fails.
	if _, err := os.Lstat(path); err != nil {
		return err
	}
	val := strings.TrimSpace(string(data))
	parts := strings.Split(rel, "/")
	switch {
	case rel == "sys/bus/pci/drivers_probe":
		return k.probe(val)
	case len(parts) == 6 && parts[3] == "drivers" && parts[5] == "unbind":
		return k.unbind(parts[4], val)
	case len(parts) == 6 && parts[3] == "drivers" && parts[5] == "bind":
		return k.bind(parts[4], val)
	case len(parts) == 6 && parts[3] == "devices":
		return k.deviceAttr(parts[4], parts[5], val)
	}
	return fmt.Errorf("pcifake: write to %s not modelled", rel)
}

func (k *Kernel) dev(bdf string) string { return filepath.Join(k.Root, "sys/bus/pci/devices", bdf) }

func (k *Kernel) driver(bdf string) string {
	l, err := os.Readlink(filepath.Join(k.dev(bdf), "driver"))
	if err != nil {
		return ""
	}
	return filepath.Base(l)
}

func (k *Kernel) override(bdf string) string {
	b, _ := os.ReadFile(filepath.Join(k.dev(bdf), "driver_override"))
	v := strings.TrimSpace(string(b))
	if v == "(null)" {
		return ""
	}
	return v
}

func (k *Kernel) link(bdf, drv string) error {
	real, err := filepath.EvalSymlinks(k.dev(bdf))
	if err != nil {
		return err
	}
	target, err := filepath.Rel(real, filepath.Join(k.Root, "sys/bus/pci/drivers", drv))
	if err != nil {
		return err
	}
	return os.Symlink(target, filepath.Join(real, "driver"))
}

func (k *Kernel) unbind(drv, bdf string) error {
	if k.driver(bdf) != drv {
		return syscall.ENODEV
	}
	return os.Remove(filepath.Join(k.dev(bdf), "driver"))
}

func (k *Kernel) bind(drv, bdf string) error {
	if _, err := os.Stat(k.dev(bdf)); err != nil {
		return syscall.ENODEV
	}
	if k.driver(bdf) != "" {
		return syscall.EBUSY
	}
	// The kernel matches a bind through the id table and the override.
	if ov := k.override(bdf); ov != "" && ov != drv {
		return syscall.ENODEV
	}
	return k.link(bdf, drv)
}

func (k *Kernel) probe(bdf string) error {
	if _, err := os.Stat(k.dev(bdf)); err != nil {
		return syscall.ENODEV
	}
	if k.driver(bdf) != "" {
		return nil
	}
	drv := k.override(bdf)
	if drv == "" {
		drv = k.Match[bdf]
	}
	if drv == "" {
		return nil
	}
	if _, err := os.Stat(filepath.Join(k.Root, "sys/bus/pci/drivers", drv)); err != nil {
		return nil // no such driver loaded: nothing binds, as in Linux
	}
	return k.link(bdf, drv)
}

func (k *Kernel) deviceAttr(bdf, attr, val string) error {
	p := filepath.Join(k.dev(bdf), attr)
	switch attr {
	case "driver_override":
		if val == "" {
			val = "(null)"
		}
		return os.WriteFile(p, []byte(val+"\n"), 0o644)
	case "reset_method":
		return k.resetMethod(bdf, p, val)
	case "reset":
		if val != "1" {
			return syscall.EINVAL
		}
		m, _ := os.ReadFile(filepath.Join(k.dev(bdf), "reset_method"))
		method := strings.Fields(string(m))
		first := "kernel-default"
		if len(method) > 0 {
			first = method[0]
		}
		k.mu.Lock()
		k.resets = append(k.resets, bdf+":"+first)
		k.mu.Unlock()
		return nil
	}
	return fmt.Errorf("pcifake: device attribute %s not modelled", attr)
}

func (k *Kernel) resetMethod(bdf, p, val string) error {
	k.mu.Lock()
	can, ok := k.offered[bdf]
	if !ok {
		// The methods the kernel offered at capture time: the first
		// content of reset_method, before any write changed it.
		cur, _ := os.ReadFile(p)
		can = strings.Fields(string(cur))
		k.offered[bdf] = can
	}
	k.mu.Unlock()
	if val == "default" {
		// Linux recomputes the list, probing each method again.
		var now []string
		for _, c := range can {
			if c != "bus" || k.aloneOnBus(bdf) {
				now = append(now, c)
			}
		}
		return os.WriteFile(p, []byte(strings.Join(now, " ")+"\n"), 0o644)
	}
	for _, m := range strings.Fields(val) {
		ok := false
		for _, c := range can {
			ok = ok || c == m
		}
		// Like Linux (reset_method_store probes each method): a bus
		// reset is refused unless the device is alone on its bus, even
		// when the list computed at enumeration named it — the quirk of
		// the rig-q35 capture, where the edu scanned first behind the
		// PCIe-to-PCI bridge lists "bus" beside an e1000.
		if !ok || m == "bus" && !k.aloneOnBus(bdf) {
			return syscall.EINVAL
		}
	}
	return os.WriteFile(p, []byte(val+"\n"), 0o644)
}

// aloneOnBus: no other function sits beside the device in the directory
// of its parent bridge (pci_parent_bus_reset's check).
func (k *Kernel) aloneOnBus(bdf string) bool {
	real, err := filepath.EvalSymlinks(k.dev(bdf))
	if err != nil {
		return false
	}
	ents, err := os.ReadDir(filepath.Dir(real))
	if err != nil {
		return false
	}
	for _, e := range ents {
		if n := e.Name(); n != bdf && e.IsDir() && isBDF(n) {
			return false
		}
	}
	return true
}

// isBDF matches "dddd:bb:dd.f" in hex, the names of device directories.
func isBDF(n string) bool {
	if len(n) != 12 || n[4] != ':' || n[7] != ':' || n[10] != '.' {
		return false
	}
	for i, c := range n {
		if i == 4 || i == 7 || i == 10 {
			continue
		}
		if !strings.ContainsRune("0123456789abcdef", c) {
			return false
		}
	}
	return true
}

// WriteConfig implements pci.Kernel: the bytes land in the copy's config
// file, which stays readable like the real one.
func (k *Kernel) WriteConfig(path string, off int64, data []byte) error {
	rel := k.rel(path)
	k.mu.Lock()
	k.writes = append(k.writes, Write{Path: rel, Data: string(data), Off: off})
	k.mu.Unlock()
	if err := k.gate(rel); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if off < 0 || off+int64(len(data)) > st.Size() {
		return errors.New("pcifake: config write beyond config space")
	}
	_, err = f.WriteAt(data, off)
	return err
}

// LoadDriver makes a driver appear in the copy, as modprobe would:
// sys/bus/pci/drivers/<name>/ with its control files.
func (k *Kernel) LoadDriver(t testing.TB, name string) {
	t.Helper()
	dir := filepath.Join(k.Root, "sys/bus/pci/drivers", name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"bind", "unbind", "new_id", "remove_id"} {
		if err := os.WriteFile(filepath.Join(dir, f), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// BindHost puts a device on a (host) driver, loading the driver first, as
// if the host had bound it at boot. It does not count as a write.
func (k *Kernel) BindHost(t testing.TB, bdf, drv string) {
	t.Helper()
	k.LoadDriver(t, drv)
	if cur := k.driver(bdf); cur != "" {
		if err := os.Remove(filepath.Join(k.dev(bdf), "driver")); err != nil {
			t.Fatal(err)
		}
	}
	if err := k.link(bdf, drv); err != nil {
		t.Fatal(err)
	}
	k.Match[bdf] = drv
}
