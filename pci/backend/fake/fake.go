// Package fake is a recording backend for tests: it executes nothing on
// the host, keeps the state a hypervisor would keep (mappings, pirqs,
// bindings, assigned devices), and appends every call to a journal file
// when one is given, so a test can observe what a broker process did
// after that process was killed. A production broker refuses it.
//
// Config space reads come from the device's sysfs `config` file under
// the given root; writes stay in memory and never touch the tree.
package fake

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"sync"

	"github.com/dmsandbox/dmsandbox/pci"
	"github.com/dmsandbox/dmsandbox/pci/backend"
	"golang.org/x/sys/unix"
)

// Call is one recorded backend call.
type Call struct {
	Op   string `json:"op"`
	Dom  uint32 `json:"dom"`
	BDF  string `json:"bdf,omitempty"`
	A    uint64 `json:"a,omitempty"` // op-specific arguments, see each method
	B    uint64 `json:"b,omitempty"`
	C    uint64 `json:"c,omitempty"`
	D    uint64 `json:"d,omitempty"`
	Add  bool   `json:"add,omitempty"`
	Pirq int    `json:"pirq,omitempty"`
	// Domain is the owner a reset was asked for (ResetOptions.Domain).
	Domain string `json:"domain,omitempty"`
	Errno  int    `json:"errno,omitempty"` // non-zero: the call was failed by injection
}

// Backend is the fake. The zero value is not usable; use New.
type Backend struct {
	mu     sync.Mutex
	sysfs  *pci.Sysfs
	path   string
	f      *os.File
	calls  []Call
	st     State
	config map[string][]byte // bdf → config space copy
	fail   map[string]unix.Errno
}

// State is what the fake hypervisor holds live. Keys are printable so a
// test can compare states.
type State struct {
	Assigned map[string]uint32 // bdf → dom
	Mem      map[string]bool   // "dom gfn mfn nr"
	IO       map[string]bool   // "dom gport mport nr"
	Pirqs    map[string]bool   // "dom pirq"
	Intx     map[string]bool   // "dom pirq bus dev intx"
	MSI      map[string]bool   // "dom pirq"
	NextPirq int
}

func newState() State {
	return State{Assigned: map[string]uint32{}, Mem: map[string]bool{}, IO: map[string]bool{},
		Pirqs: map[string]bool{}, Intx: map[string]bool{}, MSI: map[string]bool{}, NextPirq: 100}
}

// Empty reports whether nothing is live.
func (s State) Empty() bool {
	return len(s.Assigned)+len(s.Mem)+len(s.IO)+len(s.Pirqs)+len(s.Intx)+len(s.MSI) == 0
}

// Summary lists what is live, sorted, for test messages.
func (s State) Summary() []string {
	var out []string
	for k, d := range s.Assigned {
		out = append(out, fmt.Sprintf("assigned %s dom%d", k, d))
	}
	for name, m := range map[string]map[string]bool{"mem": s.Mem, "io": s.IO, "pirq": s.Pirqs, "intx": s.Intx, "msi": s.MSI} {
		for k := range m {
			out = append(out, name+" "+k)
		}
	}
	sort.Strings(out)
	return out
}

// New returns a fake reading config space under sysfsRoot. If path is
// not empty, calls are appended (and fsync'd) to it, and the state
// recorded there by an earlier process is loaded first.
func New(sysfsRoot, path string) (*Backend, error) {
	b := &Backend{sysfs: pci.NewSysfs(sysfsRoot), path: path, st: newState(), config: map[string][]byte{}, fail: map[string]unix.Errno{}}
	if path == "" {
		return b, nil
	}
	calls, err := ReadCalls(path)
	if err != nil && !os.IsNotExist(err) {
		return nil, err
	}
	for _, c := range calls {
		b.st.apply(c)
	}
	b.calls = calls
	b.f, err = os.OpenFile(path, os.O_RDWR|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("fake backend: %w", err)
	}
	// Cut a torn last line (a process killed mid-write) so new calls do
	// not glue onto it.
	if data, err := os.ReadFile(path); err == nil && len(data) > 0 && data[len(data)-1] != '\n' {
		if err := b.f.Truncate(int64(bytes.LastIndexByte(data, '\n') + 1)); err != nil {
			return nil, fmt.Errorf("fake backend: %w", err)
		}
	}
	return b, nil
}

// ReadCalls reads a journal written by a fake backend.
func ReadCalls(path string) ([]Call, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []Call
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var c Call
		if err := json.Unmarshal(sc.Bytes(), &c); err != nil {
			break // a torn last line from a killed process
		}
		out = append(out, c)
	}
	return out, nil
}

// Replay computes the live state a journal leaves behind.
func Replay(calls []Call) State {
	st := newState()
	for _, c := range calls {
		st.apply(c)
	}
	return st
}

func key(v ...any) string { return fmt.Sprint(v...) }

// apply updates the state for a successful call.
func (s *State) apply(c Call) {
	if c.Errno != 0 {
		return
	}
	switch c.Op {
	case "assign":
		s.Assigned[c.BDF] = c.Dom
	case "release":
		delete(s.Assigned, c.BDF)
	case "memory_mapping":
		k := key(c.Dom, " ", c.A, " ", c.B, " ", c.C)
		if c.Add {
			s.Mem[k] = true
		} else {
			delete(s.Mem, k)
		}
	case "ioport_mapping":
		k := key(c.Dom, " ", c.A, " ", c.B, " ", c.C)
		if c.Add {
			s.IO[k] = true
		} else {
			delete(s.IO, k)
		}
	case "map_pirq", "map_pirq_msi":
		s.Pirqs[key(c.Dom, " ", c.Pirq)] = true
		if c.Pirq >= s.NextPirq {
			s.NextPirq = c.Pirq + 1
		}
	case "unmap_pirq":
		delete(s.Pirqs, key(c.Dom, " ", c.Pirq))
	case "bind_pt_pci_irq":
		s.Intx[key(c.Dom, " ", c.Pirq, " ", c.A, " ", c.B, " ", c.C)] = true
	case "unbind_pt_irq":
		delete(s.Intx, key(c.Dom, " ", c.Pirq, " ", c.A, " ", c.B, " ", c.C))
	case "update_msi_irq":
		s.MSI[key(c.Dom, " ", c.Pirq)] = true
	case "unbind_msi_irq":
		delete(s.MSI, key(c.Dom, " ", c.Pirq))
	}
}

// FailNext makes the next call of op fail with errno (fault injection).
func (b *Backend) FailNext(op string, errno unix.Errno) {
	b.mu.Lock()
	b.fail[op] = errno
	b.mu.Unlock()
}

// Calls returns a copy of every call so far (including those loaded).
func (b *Backend) Calls() []Call {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]Call(nil), b.calls...)
}

// State returns a copy of the live state.
func (b *Backend) State() State {
	b.mu.Lock()
	defer b.mu.Unlock()
	return Replay(b.calls)
}

// record logs c, applies it and returns the injected error if any.
func (b *Backend) record(c Call) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if e, ok := b.fail[c.Op]; ok {
		delete(b.fail, c.Op)
		c.Errno = int(e)
	}
	if c.Errno == 0 && (c.Op == "map_pirq" || c.Op == "map_pirq_msi") && c.Pirq < 0 {
		c.Pirq = b.st.NextPirq
	}
	b.calls = append(b.calls, c)
	b.st.apply(c)
	if b.f != nil {
		line, _ := json.Marshal(c)
		if _, err := b.f.Write(append(line, '\n')); err != nil {
			return fmt.Errorf("fake backend: %w", err)
		}
		if err := b.f.Sync(); err != nil {
			return fmt.Errorf("fake backend: %w", err)
		}
	}
	if c.Errno != 0 {
		return unix.Errno(c.Errno)
	}
	return nil
}

func (b *Backend) lastPirq() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.calls[len(b.calls)-1].Pirq
}

// Name implements backend.Backend.
func (b *Backend) Name() string { return "fake" }

// Assign implements backend.Backend.
func (b *Backend) Assign(dom uint32, dev *pci.Device, g backend.Grant) error {
	return b.record(Call{Op: "assign", Dom: dom, BDF: dev.BDF.String(), A: uint64(g.UID), B: uint64(g.QEMUPid)})
}

// Release implements backend.Backend.
func (b *Backend) Release(dom uint32, dev *pci.Device) error {
	return b.record(Call{Op: "release", Dom: dom, BDF: dev.BDF.String()})
}

// Reset implements backend.Backend: drops the in-memory config writes.
func (b *Backend) Reset(dev *pci.Device, opt pci.ResetOptions) error {
	b.mu.Lock()
	delete(b.config, dev.BDF.String())
	b.mu.Unlock()
	return b.record(Call{Op: "reset", BDF: dev.BDF.String(), Domain: opt.Domain})
}

func (b *Backend) cfg(dev *pci.Device) ([]byte, error) {
	k := dev.BDF.String()
	if c, ok := b.config[k]; ok {
		return c, nil
	}
	c, err := b.sysfs.ReadConfig(dev.BDF)
	if err != nil {
		return nil, err
	}
	b.config[k] = c
	return c, nil
}

// ConfigRead implements backend.Backend (not recorded: reads change
// nothing).
func (b *Backend) ConfigRead(dev *pci.Device, off, size int) (uint32, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	c, err := b.cfg(dev)
	if err != nil {
		return 0, err
	}
	if off < 0 || off+size > len(c) {
		return 0xffffffff, nil // what the kernel returns past a short config
	}
	var v [4]byte
	copy(v[:], c[off:off+size])
	return binary.LittleEndian.Uint32(v[:]), nil
}

// ConfigWrite implements backend.Backend.
func (b *Backend) ConfigWrite(dev *pci.Device, off, size int, val uint32) error {
	if err := b.record(Call{Op: "config_write", BDF: dev.BDF.String(), A: uint64(off), B: uint64(size), C: uint64(val)}); err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	c, err := b.cfg(dev)
	if err != nil {
		return err
	}
	if off+size <= len(c) {
		var v [4]byte
		binary.LittleEndian.PutUint32(v[:], val)
		copy(c[off:off+size], v[:size])
	}
	return nil
}

// MemoryMapping implements backend.Backend.
func (b *Backend) MemoryMapping(dom uint32, gfn, mfn, nr uint64, add bool) error {
	return b.record(Call{Op: "memory_mapping", Dom: dom, A: gfn, B: mfn, C: nr, Add: add})
}

// IoportMapping implements backend.Backend.
func (b *Backend) IoportMapping(dom uint32, gport, mport, nr uint32, add bool) error {
	return b.record(Call{Op: "ioport_mapping", Dom: dom, A: uint64(gport), B: uint64(mport), C: uint64(nr), Add: add})
}

// MapPirq implements backend.Backend.
func (b *Backend) MapPirq(dom uint32, gsi, pirq int) (int, error) {
	if err := b.record(Call{Op: "map_pirq", Dom: dom, A: uint64(gsi), Pirq: pirq}); err != nil {
		return -1, err
	}
	return b.lastPirq(), nil
}

// MapPirqMSI implements backend.Backend.
func (b *Backend) MapPirqMSI(dom uint32, dev *pci.Device, pirq, entry int, tableBase uint64) (int, error) {
	if err := b.record(Call{Op: "map_pirq_msi", Dom: dom, BDF: dev.BDF.String(), A: uint64(entry), B: tableBase, Pirq: pirq}); err != nil {
		return -1, err
	}
	return b.lastPirq(), nil
}

// UnmapPirq implements backend.Backend.
func (b *Backend) UnmapPirq(dom uint32, pirq int) error {
	return b.record(Call{Op: "unmap_pirq", Dom: dom, Pirq: pirq})
}

// BindPtPciIrq implements backend.Backend.
func (b *Backend) BindPtPciIrq(dom uint32, pirq int, bus, device, intx uint8) error {
	return b.record(Call{Op: "bind_pt_pci_irq", Dom: dom, Pirq: pirq, A: uint64(bus), B: uint64(device), C: uint64(intx)})
}

// UnbindPtIrq implements backend.Backend.
func (b *Backend) UnbindPtIrq(dom uint32, pirq int, bus, device, intx uint8) error {
	return b.record(Call{Op: "unbind_pt_irq", Dom: dom, Pirq: pirq, A: uint64(bus), B: uint64(device), C: uint64(intx)})
}

// UpdateMsiIrq implements backend.Backend.
func (b *Backend) UpdateMsiIrq(dom uint32, gvec uint32, pirq int, gflags uint32, gtable uint64) error {
	return b.record(Call{Op: "update_msi_irq", Dom: dom, Pirq: pirq, A: uint64(gvec), B: uint64(gflags), C: gtable})
}

// UnbindMsiIrq implements backend.Backend.
func (b *Backend) UnbindMsiIrq(dom uint32, gvec uint32, pirq int, gflags uint32) error {
	return b.record(Call{Op: "unbind_msi_irq", Dom: dom, Pirq: pirq, A: uint64(gvec), B: uint64(gflags)})
}

// Close implements backend.Backend.
func (b *Backend) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.f != nil {
		return b.f.Close()
	}
	return nil
}

var _ backend.Backend = (*Backend)(nil)
