package broker

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"

	"github.com/dmsandbox/dmsandbox/pci"
	"golang.org/x/sys/unix"
)

// open_file: Debian's Xen QEMU does not reach the device only through
// libxenctrl. hw/xen/xen-host-pci-device.c opens the device's sysfs files
// (config, resource, vendor, device, irq, class, ...) and reads config
// with pread; hw/xen/xen_pt_msi.c maps the MSI-X table through /dev/mem.
// A confined QEMU (unprivileged, no /sys) can do neither, so the shim
// asks the broker, which opens the file itself and passes the fd back.
//
// The fd is always read-only (O_RDONLY): config writes go through
// config_write and its filter, never through this fd. Opened by root, it
// reads all of config space, as an unconfined QEMU running as root does.
//
// Nothing is journaled or undone: an fd changes no host or hypervisor
// state, and the broker keeps no copy (it is closed once sent). The fd
// outlives a detach, though: a device model that keeps it can still read
// the device's files and its MSI-X BAR after the device left the session.
// So a device once handed stays reserved for the session (Detach keeps it
// in the owner table) until the session ends, when the device model is
// gone: it cannot reach another domain while the first can still read it.

// fileResult is a handler result that carries an fd besides the reply
// struct; handleFrame sends the fd with the reply and closes it.
type fileResult struct {
	reply OpenFileReply
	f     *os.File
	note  string // for the audit record: what was opened
}

func (s *Session) openFile(r *OpenFile) (any, *refusal) {
	if r.File == FileMSIXBar {
		return s.openMSIXBar(r)
	}
	name, ok := fileNames[r.File]
	if !ok {
		return nil, deny(unix.EINVAL, "unknown file %d", r.File)
	}
	if r.Addr != 0 {
		return nil, deny(unix.EINVAL, "addr %#x given for %s (only msix_bar takes one)", r.Addr, name)
	}
	if r.BDF == WireAnyBDF {
		return nil, deny(unix.ENODEV, "any device named for %s (only msix_bar may)", name)
	}
	sd, f := s.device(r.BDF)
	if f != nil {
		return nil, f
	}
	file, f := s.openDeviceFile(sd.dev.BDF, name)
	if f != nil {
		return nil, f
	}
	s.markHanded(sd.dev.BDF)
	return &fileResult{f: file, note: "opened " + name}, nil
}

// openMSIXBar finds the memory BAR whose MSI-X table or PBA holds
// r.Addr, on the named session device or (WireAnyBDF) on any of them in
// address order, and opens its resourceN.
//
// Why the whole BAR: sysfs has no file for less, and the shim maps the fd
// at r.Addr - Base where QEMU would map /dev/mem at r.Addr. Read-only, it
// lets the device model read what memory_mapping lets it give the guest
// (the BAR but the MSI-X pages) plus the MSI-X pages, which is the point.
func (s *Session) openMSIXBar(r *OpenFile) (any, *refusal) {
	devs := s.sortedDevs()
	if r.BDF != WireAnyBDF {
		sd, f := s.device(r.BDF)
		if f != nil {
			return nil, f
		}
		devs = []*sessionDevice{sd}
	}
	capable := false
	for _, sd := range devs {
		ws := msixWindows(sd.dev)
		capable = capable || len(ws) > 0
		for _, w := range ws {
			if r.Addr < w.start || r.Addr > w.last {
				continue
			}
			name := "resource" + strconv.Itoa(w.bar.Index)
			file, f := s.openDeviceFile(sd.dev.BDF, name)
			if f != nil {
				return nil, f
			}
			s.markHanded(sd.dev.BDF)
			return &fileResult{reply: OpenFileReply{Base: w.bar.Start, Size: w.bar.Size}, f: file,
				note: "opened " + sd.dev.BDF.String() + " " + name + " (" + w.what + ")"}, nil
		}
	}
	if !capable {
		return nil, deny(unix.ENXIO, "no MSI-X table in a memory BAR on %s", describeDevs(devs))
	}
	return nil, deny(unix.ERANGE, "addr %#x is in no MSI-X table or PBA page of %s", r.Addr, describeDevs(devs))
}

// markHanded records that the client now holds an fd of bdf's files
// (called with s.mu held, before the reply is sent).
func (s *Session) markHanded(bdf pci.BDF) {
	if s.handed == nil {
		s.handed = map[pci.BDF]bool{}
	}
	s.handed[bdf] = true
}

// msixWindow is the page-rounded host range of an MSI-X table or PBA,
// [start, last], inside its BAR. QEMU maps the table from the start of
// its first page (xen_pt_msix_init's table_offset_adjust).
type msixWindow struct {
	bar         pci.BAR
	start, last uint64
	what        string // "table" or "pba"
}

// msixWindows lists dev's MSI-X table and PBA windows. A structure whose
// BAR is missing, an I/O BAR, or too small to hold it yields none.
func msixWindows(dev *pci.Device) []msixWindow {
	x := dev.Caps.MSIX
	if x == nil {
		return nil
	}
	var out []msixWindow
	add := func(what string, bir int, off uint32, n uint64) {
		b := dev.BAR(bir)
		if b == nil || b.IO || b.Size == 0 || n == 0 || uint64(off) >= b.Size || n > b.Size-uint64(off) {
			return
		}
		first := b.Start + uint64(off)
		last := first + n - 1 // ≤ b.End(): no overflow
		out = append(out, msixWindow{bar: *b, start: first &^ (pageSize - 1), last: last | (pageSize - 1), what: what})
	}
	add("table", x.TableBAR, x.TableOffset, x.TableBytes())
	add("pba", x.PBABAR, x.PBAOffset, x.PBABytes())
	return out
}

func describeDevs(devs []*sessionDevice) string {
	switch len(devs) {
	case 0:
		return "no device"
	case 1:
		return devs[0].dev.BDF.String()
	}
	return strconv.Itoa(len(devs)) + " devices"
}

// openDeviceFile opens <sysfs>/bus/pci/devices/<bdf>/<name> read-only.
// O_NOFOLLOW: a sysfs attribute is a regular file, never a link, so a
// link (or anything but a regular file) means the tree is not what pci
// read, and is refused. A failure is the backend kind ("failed", with the
// open's errno: ENOENT for a file the device lacks).
func (s *Session) openDeviceFile(bdf pci.BDF, name string) (*os.File, *refusal) {
	path := filepath.Join(s.b.cfg.Sysfs.DevicePath(bdf), name)
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	if err != nil {
		var e unix.Errno
		if !errors.As(err, &e) {
			e = unix.EIO
		}
		return nil, &refusal{errno: e, why: "open " + path + ": " + err.Error(), backend: true}
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, &refusal{errno: unix.EIO, why: "stat " + path + ": " + err.Error(), backend: true}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		unix.Close(fd)
		return nil, &refusal{errno: unix.EINVAL, why: path + " is not a regular file", backend: true}
	}
	return os.NewFile(uintptr(fd), path), nil
}
