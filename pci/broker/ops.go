package broker

import (
	"errors"
	"math"

	"github.com/dmsandbox/dmsandbox/pci/backend"
	"golang.org/x/sys/unix"
)

// One handler per op: check, journal, execute, record. Handlers run with
// s.mu held and return the reply's result (nil if none) or a refusal.

// backendErr turns a backend error into a refusal with its errno (EIO
// when the error carries none).
func backendErr(op string, err error) *refusal {
	var e unix.Errno
	switch {
	case errors.As(err, &e):
	case errors.Is(err, backend.ErrUnsupported):
		e = unix.EOPNOTSUPP
	default:
		e = unix.EIO
	}
	return &refusal{errno: e, why: op + ": " + err.Error(), backend: true}
}

func (s *Session) checkDomid(d uint32) *refusal {
	if d != s.Domid {
		return deny(unix.ESRCH, "domid %d is not this session's domain %d", d, s.Domid)
	}
	return nil
}

// addItem journals it (write-ahead), runs do, and records it live; on
// failure the journal entry is retracted.
func (s *Session) addItem(it Item, op string, do func() error) *refusal {
	if err := s.journal.add(it); err != nil {
		return &refusal{errno: unix.EIO, why: err.Error()}
	}
	if err := do(); err != nil {
		s.journal.del(it)
		return backendErr(op, err)
	}
	s.live.add(it)
	return nil
}

// delItem runs do and forgets it.
func (s *Session) delItem(it Item, op string, do func() error) *refusal {
	if err := do(); err != nil {
		return backendErr(op, err)
	}
	s.live.remove(it)
	if err := s.journal.del(it); err != nil {
		return &refusal{errno: unix.EIO, why: err.Error()}
	}
	return nil
}

func (s *Session) memoryMapping(r *MemoryMapping) (any, *refusal) {
	if f := s.checkDomid(r.Domid); f != nil {
		return nil, f
	}
	if r.Add > 1 || r.NrMfns == 0 || r.NrMfns > math.MaxUint64/pageSize ||
		r.FirstMfn > math.MaxUint64/pageSize-r.NrMfns || r.FirstGfn > math.MaxUint64/pageSize-r.NrMfns {
		return nil, deny(unix.EINVAL, "memory mapping add=%d gfn=%#x mfn=%#x nr=%#x", r.Add, r.FirstGfn, r.FirstMfn, r.NrMfns)
	}
	it := Item{Kind: KindMem, Guest: r.FirstGfn, Host: r.FirstMfn, Count: r.NrMfns}
	return nil, s.mapping(it, r.Add == 1, "memory_mapping", r.FirstMfn*pageSize, r.NrMfns*pageSize, func(add bool) error {
		return s.b.cfg.Backend.MemoryMapping(s.Domid, r.FirstGfn, r.FirstMfn, r.NrMfns, add)
	})
}

// mapping is the one path of both BAR mapping ops (MMIO pages, I/O
// ports): a removal must name a live mapping exactly; an addition must lie
// inside one BAR of one of the session's devices (host range hostStart,
// hostLen in bytes or ports) and overlap no live mapping. do runs the
// backend call with the add flag.
func (s *Session) mapping(it Item, add bool, op string, hostStart, hostLen uint64, do func(add bool) error) *refusal {
	if !add {
		live, ok := s.live.find(it.same)
		if !ok {
			return deny(unix.ENOENT, "no live %s", it)
		}
		return s.delItem(live, op, func() error { return do(false) })
	}
	bdf, f := s.checkRange(it.Kind == KindIO, hostStart, hostLen)
	if f != nil {
		return f
	}
	if f := s.checkLiveOverlap(it.Kind, it.Guest, it.Host, it.Count); f != nil {
		return f
	}
	it.BDF = bdf.String()
	return s.addItem(it, op, func() error { return do(true) })
}

func (s *Session) ioportMapping(r *IoportMapping) (any, *refusal) {
	if f := s.checkDomid(r.Domid); f != nil {
		return nil, f
	}
	if r.Add > 1 || r.NrPorts == 0 || uint64(r.FirstGport)+uint64(r.NrPorts) > 0x10000 || uint64(r.FirstMport)+uint64(r.NrPorts) > 0x10000 {
		return nil, deny(unix.EINVAL, "ioport mapping add=%d gport=%#x mport=%#x nr=%#x", r.Add, r.FirstGport, r.FirstMport, r.NrPorts)
	}
	it := Item{Kind: KindIO, Guest: uint64(r.FirstGport), Host: uint64(r.FirstMport), Count: uint64(r.NrPorts)}
	return nil, s.mapping(it, r.Add == 1, "ioport_mapping", it.Host, it.Count, func(add bool) error {
		return s.b.cfg.Backend.IoportMapping(s.Domid, r.FirstGport, r.FirstMport, r.NrPorts, add)
	})
}

func (s *Session) mapPirq(r *MapPirq) (any, *refusal) {
	if f := s.checkDomid(r.Domid); f != nil {
		return nil, f
	}
	// The lowest address owns a shared GSI's pirq (deterministic, so a
	// detach undoes the same thing on every run).
	var owner *sessionDevice
	for _, sd := range s.sortedDevs() {
		if sd.dev.IRQ > 0 && int32(sd.dev.IRQ) == r.Index {
			owner = sd
			break
		}
	}
	if owner == nil {
		return nil, deny(unix.EACCES, "GSI %d is not the interrupt of any device of session %d", r.Index, s.ID)
	}
	if it, ok := s.live.find(func(it Item) bool { return it.Kind == KindPirq && !it.MSI && it.GSI == int(r.Index) }); ok {
		// Devices sharing a GSI share its pirq, as Xen does.
		return &PirqReply{Pirq: int32(it.Pirq)}, nil
	}
	if r.Pirq < -1 {
		return nil, deny(unix.EINVAL, "pirq %d", r.Pirq)
	}
	if _, ok := s.live.pirq(int(r.Pirq)); ok {
		return nil, deny(unix.EBUSY, "pirq %d already mapped", r.Pirq)
	}
	pirq, err := s.b.cfg.Backend.MapPirq(s.Domid, int(r.Index), int(r.Pirq))
	if err != nil {
		return nil, backendErr("map_pirq", err)
	}
	it := Item{Kind: KindPirq, BDF: owner.dev.BDF.String(), Pirq: pirq, GSI: int(r.Index)}
	s.live.add(it)
	if err := s.journal.add(it); err != nil {
		return nil, &refusal{errno: unix.EIO, why: err.Error()}
	}
	return &PirqReply{Pirq: int32(pirq)}, nil
}

func (s *Session) mapPirqMSI(r *MapPirqMSI) (any, *refusal) {
	if f := s.checkDomid(r.Domid); f != nil {
		return nil, f
	}
	if r.Index != -1 || r.Pirq < -1 || r.Devfn < 0 || r.Devfn > 0xff || r.Bus < 0 || r.Bus&0xff00 != 0 || r.EntryNr < 0 {
		return nil, deny(unix.EINVAL, "map_pirq_msi index=%d pirq=%d bus=%#x devfn=%#x entry=%d", r.Index, r.Pirq, r.Bus, r.Devfn, r.EntryNr)
	}
	wire := uint32(r.Bus>>16)<<16 | uint32(r.Bus&0xff)<<8 | uint32(r.Devfn)
	sd, f := s.device(wire)
	if f != nil {
		return nil, f
	}
	d := sd.dev
	if r.TableBase == 0 {
		if d.Caps.MSI == nil {
			return nil, deny(unix.ENXIO, "%s has no MSI capability", d.BDF)
		}
		if int(r.EntryNr) >= d.Caps.MSI.Vectors {
			return nil, deny(unix.EDOM, "MSI vector %d past the %d of %s", r.EntryNr, d.Caps.MSI.Vectors, d.BDF)
		}
	} else {
		x := d.Caps.MSIX
		if x == nil {
			return nil, deny(unix.ENXIO, "%s has no MSI-X capability", d.BDF)
		}
		if int(r.EntryNr) >= x.TableSize {
			return nil, deny(unix.EDOM, "MSI-X entry %d past the %d-entry table of %s", r.EntryNr, x.TableSize, d.BDF)
		}
		bar := d.BAR(x.TableBAR)
		if bar == nil || bar.Start != r.TableBase {
			return nil, deny(unix.EFAULT, "table base %#x is not the MSI-X BAR %d address of %s", r.TableBase, x.TableBAR, d.BDF)
		}
	}
	msix := r.TableBase != 0
	if _, ok := s.live.find(func(it Item) bool {
		return it.Kind == KindPirq && it.MSI && it.BDF == d.BDF.String() && it.Entry == int(r.EntryNr) && (it.TableBase != 0) == msix
	}); ok {
		return nil, deny(unix.EBUSY, "entry %d of %s already mapped", r.EntryNr, d.BDF)
	}
	if _, ok := s.live.pirq(int(r.Pirq)); ok {
		return nil, deny(unix.EBUSY, "pirq %d already mapped", r.Pirq)
	}
	pirq, err := s.b.cfg.Backend.MapPirqMSI(s.Domid, d, int(r.Pirq), int(r.EntryNr), r.TableBase)
	if err != nil {
		return nil, backendErr("map_pirq_msi", err)
	}
	it := Item{Kind: KindPirq, BDF: d.BDF.String(), Pirq: pirq, MSI: true, Entry: int(r.EntryNr), TableBase: r.TableBase}
	s.live.add(it)
	if err := s.journal.add(it); err != nil {
		return nil, &refusal{errno: unix.EIO, why: err.Error()}
	}
	return &PirqReply{Pirq: int32(pirq)}, nil
}

// ownedPirq returns the session's pirq item or EPERM.
func (s *Session) ownedPirq(p int) (Item, *refusal) {
	it, ok := s.live.pirq(p)
	if !ok {
		return it, deny(unix.EPERM, "pirq %d is not owned by session %d", p, s.ID)
	}
	return it, nil
}

func (s *Session) unmapPirq(r *UnmapPirq) (any, *refusal) {
	if f := s.checkDomid(r.Domid); f != nil {
		return nil, f
	}
	it, f := s.ownedPirq(int(r.Pirq))
	if f != nil {
		return nil, f
	}
	if b, ok := s.live.find(func(b Item) bool { return (b.Kind == KindIntx || b.Kind == KindMSI) && b.Pirq == it.Pirq }); ok {
		return nil, deny(unix.EBUSY, "pirq %d is still bound (%s)", it.Pirq, b)
	}
	return nil, s.delItem(it, "unmap_pirq", func() error { return s.b.cfg.Backend.UnmapPirq(s.Domid, it.Pirq) })
}

func (s *Session) bindPtPciIrq(r *BindPtPciIrq) (any, *refusal) {
	if f := s.checkDomid(r.Domid); f != nil {
		return nil, f
	}
	p, f := s.ownedPirq(int(r.MachineIrq))
	if f != nil {
		return nil, f
	}
	if p.MSI || r.Device > 31 || r.Intx > 3 {
		return nil, deny(unix.EINVAL, "bind pirq %d (msi=%v) to device %d INT%d", p.Pirq, p.MSI, r.Device, r.Intx)
	}
	it := Item{Kind: KindIntx, BDF: p.BDF, Pirq: p.Pirq, Slot: [3]uint8{r.Bus, r.Device, r.Intx}}
	if _, ok := s.live.find(it.same); ok {
		return nil, deny(unix.EBUSY, "%s already bound", it)
	}
	return nil, s.addItem(it, "bind_pt_pci_irq", func() error {
		return s.b.cfg.Backend.BindPtPciIrq(s.Domid, p.Pirq, r.Bus, r.Device, r.Intx)
	})
}

func (s *Session) unbindPtIrq(r *UnbindPtIrq) (any, *refusal) {
	if f := s.checkDomid(r.Domid); f != nil {
		return nil, f
	}
	if r.IrqType != 0 || r.IsaIrq != 0 {
		return nil, deny(unix.EINVAL, "unbind irq type %d isa %d (only PT_IRQ_TYPE_PCI)", r.IrqType, r.IsaIrq)
	}
	p, f := s.ownedPirq(int(r.MachineIrq))
	if f != nil {
		return nil, f
	}
	it, ok := s.live.find(Item{Kind: KindIntx, Pirq: p.Pirq, Slot: [3]uint8{r.Bus, r.Device, r.Intx}}.same)
	if !ok {
		return nil, deny(unix.ENOENT, "pirq %d is not bound to bus %d device %d INT%d", p.Pirq, r.Bus, r.Device, r.Intx)
	}
	return nil, s.delItem(it, "unbind_pt_irq", func() error {
		return s.b.cfg.Backend.UnbindPtIrq(s.Domid, p.Pirq, r.Bus, r.Device, r.Intx)
	})
}

func (s *Session) updateMsiIrq(r *UpdateMsiIrq) (any, *refusal) {
	if f := s.checkDomid(r.Domid); f != nil {
		return nil, f
	}
	if r.Pirq > math.MaxInt32 {
		return nil, deny(unix.EPERM, "pirq %d is not owned by session %d", r.Pirq, s.ID)
	}
	p, f := s.ownedPirq(int(r.Pirq))
	if f != nil {
		return nil, f
	}
	if !p.MSI {
		return nil, deny(unix.EINVAL, "pirq %d maps a GSI, not MSI", p.Pirq)
	}
	it := Item{Kind: KindMSI, BDF: p.BDF, Pirq: p.Pirq, Gvec: r.Gvec, Gflags: r.Gflags, Gtable: r.Gtable}
	if old, ok := s.live.find(it.same); ok {
		// Rebinding (the guest reprogrammed the vector) replaces the
		// binding in Xen; the journal follows.
		if err := s.b.cfg.Backend.UpdateMsiIrq(s.Domid, r.Gvec, p.Pirq, r.Gflags, r.Gtable); err != nil {
			return nil, backendErr("update_msi_irq", err)
		}
		s.live.remove(old)
		s.live.add(it)
		s.journal.del(old)
		if err := s.journal.add(it); err != nil {
			return nil, &refusal{errno: unix.EIO, why: err.Error()}
		}
		return nil, nil
	}
	return nil, s.addItem(it, "update_msi_irq", func() error {
		return s.b.cfg.Backend.UpdateMsiIrq(s.Domid, r.Gvec, p.Pirq, r.Gflags, r.Gtable)
	})
}

func (s *Session) unbindMsiIrq(r *UnbindMsiIrq) (any, *refusal) {
	if f := s.checkDomid(r.Domid); f != nil {
		return nil, f
	}
	if r.Pirq > math.MaxInt32 {
		return nil, deny(unix.EPERM, "pirq %d is not owned by session %d", r.Pirq, s.ID)
	}
	p, f := s.ownedPirq(int(r.Pirq))
	if f != nil {
		return nil, f
	}
	it, ok := s.live.find(Item{Kind: KindMSI, Pirq: p.Pirq}.same)
	if !ok {
		return nil, deny(unix.ENOENT, "pirq %d has no MSI binding", p.Pirq)
	}
	return nil, s.delItem(it, "unbind_msi_irq", func() error {
		return s.b.cfg.Backend.UnbindMsiIrq(s.Domid, r.Gvec, p.Pirq, r.Gflags)
	})
}

func (s *Session) configRead(r *ConfigRead) (any, *refusal) {
	sd, f := s.device(r.BDF)
	if f != nil {
		return nil, f
	}
	if f := checkConfigAccess(sd, int(r.Offset), int(r.Size)); f != nil {
		return nil, f
	}
	v, err := s.b.cfg.Backend.ConfigRead(sd.dev, int(r.Offset), int(r.Size))
	if err != nil {
		return nil, backendErr("config_read", err)
	}
	return &ConfigReadReply{Value: v}, nil
}

func (s *Session) configWrite(r *ConfigWrite) (any, *refusal) {
	sd, f := s.device(r.BDF)
	if f != nil {
		return nil, f
	}
	off, size := int(r.Offset), int(r.Size)
	if f := checkConfigAccess(sd, off, size); f != nil {
		return nil, f
	}
	if size < 4 && r.Value>>(8*size) != 0 {
		return nil, deny(unix.EINVAL, "value %#x wider than %d bytes", r.Value, size)
	}
	cur, err := s.b.cfg.Backend.ConfigRead(sd.dev, off, size)
	if err != nil {
		return nil, backendErr("config_read", err)
	}
	if !filterWrite(sd.writable, off, size, cur, r.Value) {
		return nil, deny(unix.EROFS, "write %#x over %#x at %#x of %s changes read-only bits", r.Value, cur, off, sd.dev.BDF)
	}
	if f := s.checkROMEnable(sd, off, size, cur, r.Value); f != nil {
		return nil, f
	}
	if err := s.b.cfg.Backend.ConfigWrite(sd.dev, off, size, r.Value); err != nil {
		return nil, backendErr("config_write", err)
	}
	return nil, nil
}

// checkROMEnable refuses to enable the ROM BAR's decode unless the
// register holds the address the kernel assigned the ROM: after a
// rebalance the register may hold a stale address overlapping another
// device's window, and the guest must not make the ROM decode there.
func (s *Session) checkROMEnable(sd *sessionDevice, off, size int, cur, val uint32) *refusal {
	if sd.dev.ROM == nil || off > cfgROM || cfgROM >= off+size {
		return nil
	}
	shift := 8 * uint(cfgROM-off)
	if (val>>shift)&1 == 0 || (cur>>shift)&1 == 1 {
		return nil // not turning decode on
	}
	reg, err := s.b.cfg.Backend.ConfigRead(sd.dev, cfgROM, 4)
	if err != nil {
		return backendErr("config_read", err)
	}
	if uint64(reg&^0x7ff) != sd.dev.ROM.Start {
		return deny(unix.EROFS, "ROM BAR of %s holds %#x, not the kernel's %#x: decode not enabled", sd.dev.BDF, reg&^0x7ff, sd.dev.ROM.Start)
	}
	return nil
}

func (s *Session) reset(r *Reset) (any, *refusal) {
	sd, f := s.device(r.BDF)
	if f != nil {
		return nil, f
	}
	if err := s.b.cfg.Backend.Reset(sd.dev, s.b.resetOptions(s.Domid)); err != nil {
		return nil, backendErr("reset", err)
	}
	return nil, nil
}
