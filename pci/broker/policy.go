package broker

import (
	"fmt"

	"github.com/dmsandbox/dmsandbox/pci"
	"golang.org/x/sys/unix"
)

// Policy: every request is checked against what sysfs says about the
// session's own devices before the backend sees it. Each refusal has its
// own errno so a client (and a test) can tell them apart:
//
//	ESRCH     domid in the request is not the session's domain
//	ENODEV    device is not attached to this session
//	ERANGE    range starts outside every BAR of the session's devices;
//	          open_file msix_bar addr in no MSI-X table or PBA page
//	EXDEV     range starts in one BAR and runs into another
//	EINVAL    malformed argument; a BAR page shared with other registers
//	          (BAR not page aligned); a config access not naturally
//	          aligned; open_file of an unknown file, or addr ≠ 0 for a
//	          plain file
//	EBUSY     overlaps a live mapping; already mapped or bound
//	ENOENT    remove/unbind of something that is not live
//	EACCES    GSI is not the device's
//	ENXIO     device lacks the capability (no MSI / MSI-X / INTx; open_file
//	          msix_bar on devices without an MSI-X table in a memory BAR)
//	EDOM      MSI vector or MSI-X entry past the table
//	EFAULT    MSI-X table base is not the device's MSI-X BAR address
//	EPERM     pirq is not owned by this session
//	EROFS     config write touches bits the filter keeps read-only
//	ENOTCONN  request before hello
//	EALREADY  seq not above the previous request's
//	ESHUTDOWN session was closed
//
// Frames that do not decode get the decoder's errnos (proto_codec.go). An
// open_file the policy allows but whose open fails carries the open's
// errno (ENOENT: the device has no such file; ELOOP: it is a link).

// refusal is a policy or backend outcome other than success.
type refusal struct {
	errno   unix.Errno
	why     string
	backend bool // the backend failed (audited "failed", not "deny")
}

func deny(e unix.Errno, format string, a ...any) *refusal {
	return &refusal{errno: e, why: fmt.Sprintf(format, a...)}
}

const pageSize = 4096

// window is an address range one BAR covers, [start, end).
type window struct {
	bdf        pci.BDF
	bar        int
	start, end uint64
	// MMIO: a partial first/last page is shared with whatever else lives
	// in that page, so it must never be mapped.
	headShared, tailShared bool
}

// windows lists the BAR windows of the session's devices: I/O BARs for
// io, memory BARs and the ROM otherwise, memory ones page-rounded the way
// QEMU's xen_pt_region_update rounds (XEN_PFN(addr + XC_PAGE_SIZE - 1)).
func (s *Session) windows(io bool) []window {
	var out []window
	for _, sd := range s.devs {
		bars := append([]pci.BAR(nil), sd.dev.BARs...)
		if sd.dev.ROM != nil && !io {
			bars = append(bars, *sd.dev.ROM)
		}
		for _, b := range bars {
			if b.IO != io || b.Size == 0 {
				continue
			}
			w := window{bdf: sd.dev.BDF, bar: b.Index, start: b.Start, end: b.Start + b.Size}
			if !io {
				w.start = b.Start &^ (pageSize - 1)
				w.end = (b.Start + b.Size + pageSize - 1) &^ (pageSize - 1)
				w.headShared = b.Start%pageSize != 0
				w.tailShared = (b.Start+b.Size)%pageSize != 0
			}
			out = append(out, w)
		}
	}
	return out
}

// checkRange decides whether [start, start+n) may be mapped: it must lie
// inside one BAR window of one of the session's devices.
func (s *Session) checkRange(io bool, start, n uint64) (pci.BDF, *refusal) {
	kind := "memory"
	if io {
		kind = "I/O"
	}
	end := start + n
	ws := s.windows(io)
	for _, w := range ws {
		if start < w.start || start >= w.end {
			continue
		}
		if end > w.end {
			for _, o := range ws {
				if o != w && end-1 >= o.start && end-1 < o.end {
					return w.bdf, deny(unix.EXDEV, "%s range %#x+%#x straddles BAR %d of %s and BAR %d of %s", kind, start, n, w.bar, w.bdf, o.bar, o.bdf)
				}
			}
			return w.bdf, deny(unix.ERANGE, "%s range %#x+%#x runs past BAR %d of %s (ends %#x)", kind, start, n, w.bar, w.bdf, w.end)
		}
		if w.headShared && start == w.start {
			return w.bdf, deny(unix.EINVAL, "BAR %d of %s is not page aligned: its first page %#x is shared with other registers", w.bar, w.bdf, start)
		}
		if w.tailShared && end == w.end {
			return w.bdf, deny(unix.EINVAL, "BAR %d of %s does not end on a page: its last page %#x is shared with other registers", w.bar, w.bdf, end-pageSize)
		}
		return w.bdf, nil
	}
	return pci.BDF{}, deny(unix.ERANGE, "%s range %#x+%#x is outside every BAR of the session's devices", kind, start, n)
}

// overlap reports whether [a, a+n) and [b, b+m) intersect.
func overlap(a, n, b, m uint64) bool { return a < b+m && b < a+n }

// checkLiveOverlap refuses a mapping that overlaps, on the guest or the
// host side, a mapping the session already holds.
func (s *Session) checkLiveOverlap(kind Kind, guest, host, n uint64) *refusal {
	for _, it := range s.live.items {
		if it.Kind != kind {
			continue
		}
		if overlap(guest, n, it.Guest, it.Count) || overlap(host, n, it.Host, it.Count) {
			return deny(unix.EBUSY, "overlaps live %s", it)
		}
	}
	return nil
}

// device returns the session device at the wire address, or ENODEV.
func (s *Session) device(wire uint32) (*sessionDevice, *refusal) {
	bdf := BDFFromWire(wire)
	if sd, ok := s.devs[bdf]; ok {
		return sd, nil
	}
	return nil, deny(unix.ENODEV, "%s is not attached to session %d", bdf, s.ID)
}

// checkConfigAccess validates size and alignment the way QEMU's
// xen_pt_pci_config_access_check does, and the bound of config space.
func checkConfigAccess(sd *sessionDevice, off, size int) *refusal {
	if size != 1 && size != 2 && size != 4 {
		return deny(unix.EINVAL, "config access size %d", size)
	}
	if off%size != 0 {
		return deny(unix.EINVAL, "config access at %#x of size %d is not aligned", off, size)
	}
	if off+size > len(sd.writable) {
		return deny(unix.ERANGE, "config access at %#x past the %d-byte config space of %s", off, len(sd.writable), sd.dev.BDF)
	}
	return nil
}
