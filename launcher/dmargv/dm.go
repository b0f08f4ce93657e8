package dmargv

import "errors"

// ErrRefused marks an argv dmsandbox will not run: an option that would
// weaken the sandbox or cannot work in it. Nothing was started.
var ErrRefused = errors.New("refused device model option")

// ErrNotDM marks an argv that is not a libxl device model's (no
// -xen-domid, a bad value, a missing argument).
var ErrNotDM = errors.New("not a device model argv")

// FirstFD is the fd QEMU gets Handed[0] as: the launcher hands its
// management QMP socket as fd 3 and Spec.Files from fd 4 on
// (launcher/fds.go).
const FirstFD = 4

// fdsetBase numbers the QEMU fd sets this package creates (-add-fd),
// far above any set an argv of libxl's uses (it uses none).
const fdsetBase = 1000

// DM is a parsed device model argv.
type DM struct {
	Domid    int    `json:"domid"`
	Name     string `json:"name"`    // guest name (-name), "" if absent
	Machine  string `json:"machine"` // xenfv, xenpv, pc (from -machine)
	Attach   bool   `json:"xen_attach,omitempty"`
	Restrict bool   `json:"xen_domid_restrict,omitempty"`
	Paused   bool   `json:"paused,omitempty"` // -S
	// Monitors are libxl's QMP chardevs, taken out of QEMU's argv: the
	// launcher listens on them and proxies to QEMU's management monitor.
	Monitors []Monitor `json:"monitors"`
	// Handed are what QEMU gets as fds FirstFD, FirstFD+1, ... in order.
	Handed  []Handed `json:"handed"`
	Disks   []string `json:"disks,omitempty"`   // host paths of -drive file=
	Serials []string `json:"serials,omitempty"` // -serial values as libxl gave them
	VNC     string   `json:"vnc,omitempty"`     // as libxl gave it
	// VNCListen is where dmsandbox listens for VNC viewers on QEMU's
	// behalf (nil: no VNC server, -vnc none).
	VNCListen *VNCListen `json:"vnc_listen,omitempty"`
	Incoming  string     `json:"incoming,omitempty"` // as libxl gave it
	// Notes record every option dropped or changed, for the log.
	Notes []Note `json:"notes,omitempty"`
	// Args is QEMU's argv after translation (without argv[0]).
	Args []string `json:"qemu_args"`
}

// VNCListen is a VNC listening address in the host's network namespace:
// the first free port of Port..LastPort on Host. dmsandbox accepts there
// and hands each viewer's connection to QEMU (QMP getfd + add_client),
// whose VNC server runs with no listener of its own (-vnc none).
type VNCListen struct {
	Host     string `json:"host"`
	Port     int    `json:"port"`
	LastPort int    `json:"last_port"`
}

// Monitor is one QMP chardev of libxl's.
type Monitor struct {
	ID   string `json:"id"`             // chardev id: libxl-cmd, libxenstat-cmd
	Path string `json:"path,omitempty"` // socket path libxl connects to, or
	FD   int    `json:"fd,omitempty"`   // the listening socket libxl pre-opened (dm_restrict)
}

// HandKind says what the launcher must produce for one Handed entry.
type HandKind string

const (
	HandInherited HandKind = "inherited" // an fd libxl gave dmsandbox (FD)
	HandFile      HandKind = "file"      // Path, opened by the launcher (ReadOnly)
	HandTap       HandKind = "tap"       // tap interface Ifname, created by the launcher in the host's netns
	HandPTY       HandKind = "pty"       // a host pty relayed to QEMU over a socket pair; libxl is told the pty's name (Label)
)

// Handed is one fd QEMU gets.
type Handed struct {
	Kind     HandKind `json:"kind"`
	Name     string   `json:"name"`
	FD       int      `json:"fd,omitempty"`
	Path     string   `json:"path,omitempty"`
	ReadOnly bool     `json:"readonly,omitempty"`
	Ifname   string   `json:"ifname,omitempty"`
	Label    string   `json:"label,omitempty"` // pty: the chardev label query-chardev reports
}

// Note records what happened to one option.
type Note struct {
	Option string `json:"option"`
	Value  string `json:"value,omitempty"`
	Action string `json:"action"` // dropped, translated, warning
	Why    string `json:"why"`
}
