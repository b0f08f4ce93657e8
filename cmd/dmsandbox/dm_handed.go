package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/dmsandbox/dmsandbox/launcher/dmargv"
	"golang.org/x/sys/unix"
)

// dmResources are the host objects DM mode made for QEMU and the
// launcher's side of them. close releases everything; it is safe to call
// once at any point.
type dmResources struct {
	files     []*os.File      // Handed, in order (QEMU gets dups; ours are closed after start)
	opened    []dmargv.Handed // what files holds, in the same order
	ptyHold   []*os.File      // slave ends kept open so the master never sees a hangup
	relays    []*ptyRelay
	ptys      map[string]string // chardev label -> host pty path, for the QMP proxy
	listeners []net.Listener    // libxl's QMP sockets, one per dmargv.Monitor
	paths     []string          // socket paths DM mode created, removed at the end
}

func (r *dmResources) closeFiles() {
	for _, f := range r.files {
		if f != nil {
			f.Close()
		}
	}
	r.files = nil
}

func (r *dmResources) close() {
	r.closeFiles()
	for _, f := range r.ptyHold {
		f.Close()
	}
	for _, rl := range r.relays {
		rl.close()
	}
	for _, l := range r.listeners {
		l.Close()
	}
	for _, p := range r.paths {
		os.Remove(p)
	}
}

// prepare makes every Handed entry and every monitor listener. On error
// what was made is released.
func prepare(dm *dmargv.DM) (_ *dmResources, err error) {
	r := &dmResources{ptys: map[string]string{}}
	defer func() {
		if err != nil {
			r.close()
		}
	}()
	for _, h := range dm.Handed {
		f, err := r.open(h)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", h.Name, err)
		}
		r.files = append(r.files, f)
		r.opened = append(r.opened, h)
	}
	for _, m := range dm.Monitors {
		l, err := r.listen(m)
		if err != nil {
			return nil, fmt.Errorf("qmp %s: %w", m.ID, err)
		}
		r.listeners = append(r.listeners, l)
	}
	return r, nil
}

// reopen opens f's file again with flag, through /proc/self/fd, and
// checks it is the same inode.
func reopen(f *os.File, flag int, name string) (*os.File, error) {
	g, err := os.OpenFile(fmt.Sprintf("/proc/self/fd/%d", f.Fd()), flag|unix.O_NOCTTY, 0)
	if err != nil {
		return nil, fmt.Errorf("reopen %s: %w", name, err)
	}
	a, aerr := f.Stat()
	b, berr := g.Stat()
	if aerr != nil || berr != nil || !os.SameFile(a, b) {
		g.Close()
		return nil, fmt.Errorf("reopen %s: not the same file", name)
	}
	return g, nil
}

func (r *dmResources) open(h dmargv.Handed) (*os.File, error) {
	switch h.Kind {
	case dmargv.HandInherited:
		return inherited(h.FD)
	case dmargv.HandFile:
		flag := os.O_RDWR
		if h.ReadOnly {
			flag = os.O_RDONLY
		}
		// A second fd of a path already opened (the read-only twin of a
		// read-write drive in one fd set) is a reopen of the first one
		// through /proc/self/fd: the same file whatever happened to the
		// path in between.
		for i, prev := range r.opened {
			if prev.Kind == dmargv.HandFile && prev.Path == h.Path && r.files[i] != nil {
				return reopen(r.files[i], flag, h.Path)
			}
		}
		f, err := os.OpenFile(h.Path, flag|unix.O_NOFOLLOW|unix.O_NOCTTY, 0)
		if err != nil {
			return nil, err
		}
		if st, err := f.Stat(); err != nil || !(st.Mode().IsRegular() || st.Mode()&os.ModeDevice != 0 && st.Mode()&os.ModeCharDevice == 0) {
			f.Close()
			return nil, fmt.Errorf("%s is neither a regular file nor a block device", h.Path)
		}
		return f, nil
	case dmargv.HandTap:
		return openTap(h.Ifname)
	case dmargv.HandPTY:
		rl, slave, path, qemu, err := newPTYRelay()
		if err != nil {
			return nil, err
		}
		r.relays = append(r.relays, rl)
		r.ptyHold = append(r.ptyHold, slave)
		r.ptys[h.Label] = path
		return qemu, nil
	}
	return nil, fmt.Errorf("unknown kind %q", h.Kind)
}

// inherited adopts fd, which libxl left open for QEMU.
func inherited(fd int) (*os.File, error) {
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != nil {
		return nil, fmt.Errorf("fd %d named in the argv is not open: %w", fd, err)
	}
	unix.CloseOnExec(fd) // the launcher hands it on explicitly
	return os.NewFile(uintptr(fd), fmt.Sprintf("fd%d", fd)), nil
}

// listen returns the listener the proxy serves libxl on: the socket
// libxl pre-opened (dm_restrict), or a new one at the path libxl will
// connect to, created now, before QEMU can write "running".
func (r *dmResources) listen(m dmargv.Monitor) (net.Listener, error) {
	if m.Path == "" {
		f, err := inherited(m.FD)
		if err != nil {
			return nil, err
		}
		defer f.Close() // FileListener dups it
		acc, err := unix.GetsockoptInt(int(f.Fd()), unix.SOL_SOCKET, unix.SO_ACCEPTCONN)
		if err != nil || acc != 1 {
			return nil, fmt.Errorf("fd %d is not a listening socket", m.FD)
		}
		return net.FileListener(f)
	}
	if err := os.MkdirAll(filepath.Dir(m.Path), 0o755); err != nil {
		return nil, err
	}
	// A stale socket of an earlier QEMU of this domid: replace it, but
	// never a live one (another device model answering there).
	if c, err := net.Dial("unix", m.Path); err == nil {
		c.Close()
		return nil, fmt.Errorf("%s: another process is listening", m.Path)
	}
	if err := os.Remove(m.Path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: m.Path, Net: "unix"})
	if err != nil {
		return nil, err
	}
	l.SetUnlinkOnClose(false)
	r.paths = append(r.paths, m.Path)
	if err := os.Chmod(m.Path, 0o600); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}

// openPTY makes a pty pair in the host's devpts, raw like QEMU's own
// pty chardev makes it, the master non-blocking (see ptyRelay). The slave's path is what libxl writes to
// xenstore for `xl console`.
func openPTY() (master, slave *os.File, path string, err error) {
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, nil, "", err
	}
	fail := func(err error) (*os.File, *os.File, string, error) {
		m.Close()
		return nil, nil, "", fmt.Errorf("pty: %w", err)
	}
	// Through SyscallConn: Fd() would put the master in blocking mode,
	// and the relay relies on it not blocking.
	rc, err := m.SyscallConn()
	if err != nil {
		return fail(err)
	}
	var n uint32
	var ierr error
	if err := rc.Control(func(fd uintptr) {
		if ierr = unix.IoctlSetPointerInt(int(fd), unix.TIOCSPTLCK, 0); ierr == nil {
			n, ierr = unix.IoctlGetUint32(int(fd), unix.TIOCGPTN)
		}
	}); err != nil {
		return fail(err)
	}
	if ierr != nil {
		return fail(ierr)
	}
	path = fmt.Sprintf("/dev/pts/%d", n)
	s, err := os.OpenFile(path, os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		return fail(err)
	}
	if t, err := unix.IoctlGetTermios(int(s.Fd()), unix.TCGETS); err == nil {
		makeRaw(t)
		unix.IoctlSetTermios(int(s.Fd()), unix.TCSETS, t)
	}
	return m, s, path, nil
}

// makeRaw is cfmakeraw(3).
func makeRaw(t *unix.Termios) {
	t.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON
	t.Oflag &^= unix.OPOST
	t.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
	t.Cflag &^= unix.CSIZE | unix.PARENB
	t.Cflag |= unix.CS8
	t.Cc[unix.VMIN], t.Cc[unix.VTIME] = 1, 0
}

// openTap creates (or attaches to) tap ifname in the host's network
// namespace; libxl's vif hotplug script finds it there and bridges it.
func openTap(ifname string) (*os.File, error) {
	if ifname == "" || len(ifname) >= unix.IFNAMSIZ || strings.ContainsAny(ifname, "/ ") {
		return nil, fmt.Errorf("tap: bad interface name %q", ifname)
	}
	f, err := os.OpenFile("/dev/net/tun", os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("tap %s: %w", ifname, err)
	}
	ifr, err := unix.NewIfreq(ifname)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("tap %s: %w", ifname, err)
	}
	ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
	if err := unix.IoctlIfreq(int(f.Fd()), unix.TUNSETIFF, ifr); err != nil {
		f.Close()
		return nil, fmt.Errorf("tap %s: TUNSETIFF: %w", ifname, err)
	}
	return f, nil
}
