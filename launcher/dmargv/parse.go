package dmargv

import (
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
)

// maxDomid is the largest guest domid (DOMID_FIRST_RESERVED-1).
const maxDomid = 0x7FEF

// dataDirs are the firmware directories -L may name: the ones the
// launcher copies into the sandbox root for a QEMU binary.
var dataDirs = []string{"/usr/share/qemu", "/usr/share/seabios", "/usr/lib/ipxe/qemu", "/usr/share/qemu-xen", "/usr/lib/xen/boot"}

// option is one word of argv and, when it takes one, its argument.
type option struct {
	Name   string // without leading dashes
	Word   string // as written ("-chardev", "--chardev")
	Value  string
	HasArg bool
}

// split cuts argv into options. A word that does not start with '-' where
// an option is expected is QEMU's positional disk image: refused, since
// it names a host path QEMU cannot open in the sandbox.
func split(argv []string) ([]option, error) {
	var out []option
	for i := 0; i < len(argv); i++ {
		w := argv[i]
		if len(w) < 2 || w[0] != '-' {
			return nil, fmt.Errorf("%w: positional argument %q (QEMU reads it as a disk image path; use -drive)", ErrRefused, w)
		}
		name := strings.TrimPrefix(w[1:], "-")
		next := ""
		if i+1 < len(argv) {
			next = argv[i+1]
		}
		o := option{Name: name, Word: w}
		if takesArg(name, next) {
			if i+1 >= len(argv) {
				return nil, fmt.Errorf("%w: %s needs an argument", ErrNotDM, w)
			}
			o.Value, o.HasArg = argv[i+1], true
			i++
		}
		out = append(out, o)
	}
	return out, nil
}

// parser carries the state of one Parse.
type parser struct {
	dm        DM
	inherited map[int]int // libxl fd -> index in Handed
	serials   int
}

// Parse parses a device model argv (without argv[0]).
func Parse(argv []string) (*DM, error) {
	opts, err := split(argv)
	if err != nil {
		return nil, err
	}
	p := &parser{inherited: map[int]int{}}
	p.dm.Domid = -1
	// QMP monitors are the chardevs a "-mon ...,mode=control" names;
	// collect them first since -mon follows its -chardev.
	control := map[string]bool{}
	for _, o := range opts {
		if o.Name == "mon" {
			mo := parseOpts(o.Value, "chardev")
			if m, _ := mo.get("mode"); m == "control" {
				cd, _ := mo.get("chardev")
				control[cd] = true
			}
		}
	}
	proxied := map[string]bool{}
	for _, o := range opts {
		if err := p.option(o, control, proxied); err != nil {
			return nil, err
		}
	}
	if p.dm.Domid < 0 {
		return nil, fmt.Errorf("%w: no -xen-domid", ErrNotDM)
	}
	if p.dm.Monitors == nil {
		p.dm.Monitors = []Monitor{}
	}
	if p.dm.Handed == nil {
		p.dm.Handed = []Handed{}
	}
	return &p.dm, nil
}

func (p *parser) keep(o option) {
	p.dm.Args = append(p.dm.Args, o.Word)
	if o.HasArg {
		p.dm.Args = append(p.dm.Args, o.Value)
	}
}

func (p *parser) note(o option, action, why string) {
	p.dm.Notes = append(p.dm.Notes, Note{Option: o.Word, Value: o.Value, Action: action, Why: why})
}

func refuse(o option, why string) error {
	if o.HasArg {
		return fmt.Errorf("%w: %s %s: %s", ErrRefused, o.Word, o.Value, why)
	}
	return fmt.Errorf("%w: %s: %s", ErrRefused, o.Word, why)
}

// hand appends h and returns the fd number QEMU sees it as. An fd
// inherited from libxl is handed once however often the argv names it.
func (p *parser) hand(h Handed) int {
	if h.Kind == HandInherited {
		if i, ok := p.inherited[h.FD]; ok {
			return FirstFD + i
		}
		p.inherited[h.FD] = len(p.dm.Handed)
	}
	p.dm.Handed = append(p.dm.Handed, h)
	return FirstFD + len(p.dm.Handed) - 1
}

// fdset hands h (and more, in the same set) and returns the -add-fd words
// and the /dev/fdset path QEMU opens it by (qemu_open resolves
// /dev/fdset/N to a dup of the set's fd whose access mode matches the
// open's, EACCES if none does).
func (p *parser) fdset(h Handed, more ...Handed) (addFd []string, path string) {
	fd := p.hand(h)
	set := fdsetBase + len(p.dm.Handed) - 1
	addFd = []string{"-add-fd", fmt.Sprintf("fd=%d,set=%d,opaque=%s", fd, set, h.Name)}
	for _, m := range more {
		addFd = append(addFd, "-add-fd", fmt.Sprintf("fd=%d,set=%d,opaque=%s", p.hand(m), set, m.Name))
	}
	return addFd, fmt.Sprintf("/dev/fdset/%d", set)
}

// inheritedFD validates an fd number libxl put in the argv.
func inheritedFD(o option, s string) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil || n < 3 || n > 1<<20 {
		return 0, fmt.Errorf("%w: %s %s: fd %q is not an inherited descriptor (3 or above)", ErrNotDM, o.Word, o.Value, s)
	}
	return n, nil
}

func (p *parser) option(o option, control, proxied map[string]bool) error {
	switch o.Name {
	case "xen-domid":
		n, err := strconv.Atoi(o.Value)
		if err != nil || n < 1 || n > maxDomid {
			return fmt.Errorf("%w: -xen-domid %q: want a guest domid 1..%d", ErrNotDM, o.Value, maxDomid)
		}
		if p.dm.Domid >= 0 && p.dm.Domid != n {
			return fmt.Errorf("%w: -xen-domid given twice (%d, %d)", ErrNotDM, p.dm.Domid, n)
		}
		p.dm.Domid = n
		p.keep(o)
	case "name":
		g, _ := parseOpts(o.Value, "guest").get("guest")
		p.dm.Name = g
		p.keep(o)
	case "S":
		p.dm.Paused = true
		p.keep(o)
	case "xen-attach":
		p.dm.Attach = true
		p.keep(o)
	case "xen-domid-restrict":
		p.dm.Restrict = true
		p.keep(o)
	case "machine", "M":
		t, _ := parseOpts(o.Value, "type").get("type")
		p.dm.Machine = t
		p.keep(o)
	case "chardev":
		return p.chardev(o, control, proxied)
	case "mon":
		cd, _ := parseOpts(o.Value, "chardev").get("chardev")
		if proxied[cd] {
			return nil // its chardev is served by the launcher
		}
		p.keep(o)
	case "serial":
		return p.serial(o)
	case "incoming":
		return p.incoming(o)
	case "drive":
		return p.drive(o)
	case "netdev", "net":
		return p.netdev(o)
	case "add-fd":
		ao := parseOpts(o.Value, "")
		s, ok := ao.get("fd")
		if !ok {
			p.keep(o)
			return nil
		}
		n, err := inheritedFD(o, s)
		if err != nil {
			return err
		}
		fd := p.hand(Handed{Kind: HandInherited, Name: fmt.Sprintf("add-fd%d", n), FD: n})
		p.dm.Args = append(p.dm.Args, o.Word, ao.set("fd", strconv.Itoa(fd)).String())
	case "device":
		drv, _ := parseOpts(o.Value, "driver").get("driver")
		switch drv {
		case "xen-pci-passthrough", "vfio-pci", "pci-assign", "vfio-platform", "vhost-user-fs-pci":
			return refuse(o, "host devices are never on the argv: libxl hot-adds PCI devices over QMP, where the broker grants them")
		}
		p.keep(o)
	case "vnc":
		return p.vnc(o)
	case "display":
		d, _ := parseOpts(o.Value, "type").get("type")
		switch d {
		case "sdl", "gtk", "curses", "cocoa", "spice-app", "dbus":
			return refuse(o, "a display backend needs the host's display or terminal, which the sandbox does not have")
		}
		p.keep(o)
	case "chroot":
		p.note(o, "dropped", "superseded: the sandbox pivots into its own minimal read-only root")
	case "runas":
		p.note(o, "dropped", "superseded: the sandbox runs QEMU as its own per-domain uid")
	case "run-with":
		ro := parseOpts(o.Value, "")
		rest := ro.del("chroot").del("user")
		if len(rest) != len(ro) {
			p.note(o, "dropped", "chroot= and user= are superseded by the sandbox's root and uid")
		}
		if len(rest) > 0 {
			p.dm.Args = append(p.dm.Args, o.Word, rest.String())
		}
	case "pidfile":
		p.note(o, "dropped", "the pid libxl records is dmsandbox's; QEMU cannot write host files")
	case "D":
		p.note(o, "dropped", "QEMU's log goes to stderr, which is the log libxl opened")
	case "daemonize":
		return refuse(o, "QEMU must stay the sandbox's supervised child (libxl already detaches dmsandbox)")
	case "plugin":
		return refuse(o, "TCG plugins load host shared objects into QEMU")
	case "readconfig":
		return refuse(o, "a config file can declare any chardev, drive or netdev behind this package's back")
	case "L":
		clean := filepath.Clean(o.Value)
		for _, d := range dataDirs {
			if clean == d {
				p.keep(o)
				return nil
			}
		}
		return refuse(o, "firmware directories are limited to "+strings.Join(dataDirs, ", "))
	default:
		p.keep(o)
	}
	return nil
}

// chardev: libxl's QMP monitors are served by the launcher; a socket
// chardev on an inherited fd is handed over; a pty becomes a host pty
// whose master QEMU gets (the sandbox has no devpts the host can see).
func (p *parser) chardev(o option, control, proxied map[string]bool) error {
	co := parseOpts(o.Value, "backend")
	backend, _ := co.get("backend")
	id, _ := co.get("id")
	switch backend {
	case "socket":
		path, hasPath := co.get("path")
		fdStr, hasFD := co.get("fd")
		server, _ := co.get("server")
		isServer := server == "on" || server == "yes"
		if _, flag := co.get("server"); flag && server == "" {
			isServer = true
		}
		if control[id] && isServer && (hasPath || hasFD) {
			m := Monitor{ID: id}
			if hasFD {
				n, err := inheritedFD(o, fdStr)
				if err != nil {
					return err
				}
				m.FD = n
			} else {
				if !filepath.IsAbs(path) {
					return fmt.Errorf("%w: %s %s: QMP socket path must be absolute", ErrNotDM, o.Word, o.Value)
				}
				m.Path = filepath.Clean(path)
			}
			p.dm.Monitors = append(p.dm.Monitors, m)
			proxied[id] = true
			p.note(o, "translated", "libxl's QMP socket is served by dmsandbox's proxy in front of QEMU's monitor")
			return nil
		}
		if hasFD {
			n, err := inheritedFD(o, fdStr)
			if err != nil {
				return err
			}
			fd := p.hand(Handed{Kind: HandInherited, Name: "chardev-" + id, FD: n})
			p.dm.Args = append(p.dm.Args, o.Word, co.set("fd", strconv.Itoa(fd)).String())
			return nil
		}
		if hasPath {
			p.note(o, "warning", "a socket path resolves inside the sandbox's root, not on the host")
		}
	case "pty":
		fd := p.hand(Handed{Kind: HandPTY, Name: "pty-" + id, Label: id})
		p.dm.Args = append(p.dm.Args, o.Word, ptyChardev(id, fd))
		p.note(o, "translated", ptyWhy)
		return nil
	case "file", "pipe", "serial", "tty", "parallel", "parport":
		return refuse(o, "a chardev on a host file or device cannot be opened in the sandbox")
	}
	if _, ok := co.get("fd"); ok {
		return refuse(o, "fd= is handed over only for socket chardevs")
	}
	p.keep(o)
	return nil
}

// ptyWhy explains the pty translation in the log.
const ptyWhy = "dmsandbox makes a pty in the host's devpts and relays it to QEMU over a socket"

// ptyChardev is the chardev QEMU gets for a pty: its end of a connected
// socket pair, whose other end dmsandbox relays to a host pty. QEMU then
// needs neither /dev/ptmx nor a single tty ioctl (its "serial" backend on
// a pty master would issue termios ioctls the qemu-xen seccomp profile
// does not allow), and the label libxl looks for is unchanged.
func ptyChardev(id string, fd int) string {
	return opts{{Key: "backend", Value: "socket", Implied: true}, {Key: "id", Value: id}, {Key: "fd", Value: strconv.Itoa(fd)}}.String()
}

// vnc: libxl writes "-vnc HOST:DISPLAY[,password=on][,to=99]" (or
// "none"). QEMU's own listener would be in the sandbox's network
// namespace, unreachable, and its socket(AF_INET) is not in the seccomp
// profile; so QEMU runs "-vnc none,..." (a VNC server without listener,
// password and other options intact) and dmsandbox listens instead.
func (p *parser) vnc(o option) error {
	p.dm.VNC = o.Value
	vo := parseOpts(o.Value, "vnc")
	display, _ := vo.get("vnc")
	if display == "none" {
		p.keep(o)
		return nil
	}
	for _, e := range vo {
		switch e.Key {
		case "websocket", "tls-creds", "tls-authz", "sasl", "sasl-authz", "x509", "x509verify", "acl", "reverse", "connections":
			return refuse(o, e.Key+" is not supported for VNC in the sandbox yet")
		}
	}
	i := strings.LastIndex(display, ":")
	if i < 0 || strings.HasPrefix(display, "unix:") {
		return refuse(o, "VNC needs HOST:DISPLAY (a unix socket would be inside the sandbox)")
	}
	host := strings.TrimSuffix(strings.TrimPrefix(display[:i], "["), "]")
	n, err := strconv.Atoi(display[i+1:])
	if err != nil || n < 0 || n > 65535-5900 {
		return fmt.Errorf("%w: -vnc %s: bad display number", ErrNotDM, o.Value)
	}
	l := &VNCListen{Host: host, Port: 5900 + n, LastPort: 5900 + n}
	if to, ok := vo.get("to"); ok {
		m, err := strconv.Atoi(to)
		if err != nil || m < n || m > 65535-5900 {
			return fmt.Errorf("%w: -vnc %s: bad to=", ErrNotDM, o.Value)
		}
		l.LastPort = 5900 + m
	}
	p.dm.VNCListen = l
	rest := opts{{Key: "vnc", Value: "none", Implied: true}}
	for _, e := range vo[1:] {
		if e.Key != "to" {
			rest = append(rest, e)
		}
	}
	p.dm.Args = append(p.dm.Args, o.Word, rest.String())
	p.note(o, "translated", "dmsandbox listens for VNC viewers in the host's network namespace and hands each connection to QEMU")
	return nil
}

// serial: "pty" is what xl's serial="pty" gives; libxl learns the pty's
// name from query-chardev (label serialN, filename "pty:/dev/pts/M"),
// which the proxy answers with the host pty's name.
func (p *parser) serial(o option) error {
	idx := p.serials
	p.serials++
	p.dm.Serials = append(p.dm.Serials, o.Value)
	switch {
	case o.Value == "pty":
		label := fmt.Sprintf("serial%d", idx)
		fd := p.hand(Handed{Kind: HandPTY, Name: "pty-" + label, Label: label})
		p.dm.Args = append(p.dm.Args, "-chardev", ptyChardev(label, fd), o.Word, "chardev:"+label)
		p.note(o, "translated", ptyWhy)
		return nil
	case strings.HasPrefix(o.Value, "file:"), strings.HasPrefix(o.Value, "pipe:"), strings.HasPrefix(o.Value, "/dev/"),
		strings.HasPrefix(o.Value, "unix:"), strings.HasPrefix(o.Value, "tcp:"), strings.HasPrefix(o.Value, "udp:"):
		return refuse(o, "a serial port on a host file, device or network socket cannot be reached from the sandbox")
	}
	p.keep(o)
	return nil
}

// incoming: libxl restores a domain with "-incoming fd:N" on the saved
// state file it opened.
func (p *parser) incoming(o option) error {
	p.dm.Incoming = o.Value
	switch {
	case strings.HasPrefix(o.Value, "fd:"):
		n, err := inheritedFD(o, strings.TrimPrefix(o.Value, "fd:"))
		if err != nil {
			return err
		}
		fd := p.hand(Handed{Kind: HandInherited, Name: "incoming", FD: n})
		p.dm.Args = append(p.dm.Args, o.Word, fmt.Sprintf("fd:%d", fd))
		return nil
	case o.Value == "defer":
		p.keep(o)
		return nil
	}
	return refuse(o, "only fd:N (libxl's restore) and defer: the sandbox has no network and no shell")
}

// drive: a disk image QEMU would open by host path is opened by the
// launcher and handed as an fd set.
func (p *parser) drive(o option) error {
	do := parseOpts(o.Value, "")
	for _, e := range do {
		if strings.Contains(e.Key, ".filename") || strings.HasSuffix(e.Key, ".file") || e.Key == "driver" && e.Value != "" && e.Value != "raw" && e.Value != "qcow2" && e.Value != "file" {
			return refuse(o, "only plain file= drives (raw/qcow2) are handed to the sandbox; "+e.Key+"="+e.Value+" is not")
		}
	}
	file, ok := do.get("file")
	if !ok || file == "" || strings.HasPrefix(file, "/dev/fdset/") {
		p.keep(o)
		return nil
	}
	if !filepath.IsAbs(file) || strings.Contains(file, ":") {
		return refuse(o, "a drive must be an absolute host path (no protocol or json: prefix)")
	}
	ro, _ := do.get("readonly")
	media, _ := do.get("media")
	readOnly := ro == "on" || media == "cdrom"
	p.dm.Disks = append(p.dm.Disks, file)
	id, _ := do.get("id")
	if id == "" {
		id = fmt.Sprintf("disk%d", len(p.dm.Disks)-1)
	}
	h := Handed{Kind: HandFile, Name: "drive-" + id, Path: filepath.Clean(file), ReadOnly: readOnly}
	var more []Handed
	if !readOnly {
		// QEMU 7.2 opens a read-write drive read-only first: with a
		// read-write fd alone the set has no match ("Could not dup FD
		// for /dev/fdset/N flags 0: Permission denied", seen in the Xen
		// rig with an HVM guest's disk). So the set also holds a
		// read-only fd of the same file, as libvirt hands QEMU.
		more = append(more, Handed{Kind: HandFile, Name: "drive-" + id + "-ro", Path: h.Path, ReadOnly: true})
	}
	add, path := p.fdset(h, more...)
	p.dm.Args = append(p.dm.Args, add...)
	p.dm.Args = append(p.dm.Args, o.Word, do.set("file", path).String())
	p.note(o, "translated", "dmsandbox opens "+file+" and hands QEMU the fd")
	return nil
}

// netdev: libxl's HVM nic is "type=tap,id=netN,ifname=vifD.N-emu,
// br=BRIDGE,script=no,downscript=no". The sandbox has its own network
// namespace and no CAP_NET_ADMIN, so the launcher creates the tap in the
// host's namespace (where libxl's hotplug script finds it) and hands QEMU
// the fd.
func (p *parser) netdev(o option) error {
	no := parseOpts(o.Value, "type")
	typ, _ := no.get("type")
	switch typ {
	case "tap":
	case "bridge", "vhost-user", "vde", "l2tpv3", "socket", "stream", "dgram", "netmap", "vhost-vdpa", "af-xdp":
		return refuse(o, "netdev type "+typ+" needs host resources the sandbox does not have; use tap")
	default:
		p.keep(o) // none, user, nic, hubport: nothing of the host's
		return nil
	}
	if o.Name == "net" {
		return refuse(o, "-net tap: use -netdev (libxl does)")
	}
	for _, k := range []string{"script", "downscript"} {
		if v, ok := no.get(k); ok && v != "no" && v != "" {
			return refuse(o, k+"= runs a host script as root from QEMU; libxl's hotplug scripts do this job")
		}
	}
	for _, k := range []string{"helper", "vhost", "vhostfd", "vhostfds", "fds"} {
		if _, ok := no.get(k); ok {
			return refuse(o, k+"= is not supported in the sandbox")
		}
	}
	id, _ := no.get("id")
	var fd int
	if s, ok := no.get("fd"); ok {
		n, err := inheritedFD(o, s)
		if err != nil {
			return err
		}
		fd = p.hand(Handed{Kind: HandInherited, Name: "tap-" + id, FD: n})
	} else {
		ifname, _ := no.get("ifname")
		if ifname == "" || len(ifname) > 15 || strings.ContainsAny(ifname, "/ \t\n") {
			return refuse(o, "a tap needs ifname= (a valid interface name) so the launcher can create it")
		}
		fd = p.hand(Handed{Kind: HandTap, Name: "tap-" + id, Ifname: ifname})
		p.note(o, "translated", "dmsandbox creates tap "+ifname+" in the host's network namespace and hands QEMU the fd")
	}
	out := opts{{Key: "type", Value: "tap", Implied: no[0].Implied}}
	for _, e := range no {
		switch e.Key {
		case "type", "ifname", "br", "script", "downscript", "fd":
			continue
		}
		out = append(out, e)
	}
	out = out.set("fd", strconv.Itoa(fd))
	if !out[0].Implied {
		out[0].Key = "type"
	}
	p.dm.Args = append(p.dm.Args, o.Word, out.String())
	return nil
}
