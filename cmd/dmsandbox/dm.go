package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/dmsandbox/dmsandbox/launcher"
	"github.com/dmsandbox/dmsandbox/launcher/dmargv"
	"github.com/dmsandbox/dmsandbox/launcher/qmpproxy"
	"github.com/dmsandbox/dmsandbox/pci/backend"
	"github.com/dmsandbox/dmsandbox/pci/broker"
)

func init() {
	register(command{Name: "dm", Summary: "DM mode: executed by libxl in place of QEMU (see docs/libxl.md)", Hidden: true, Run: dmCmd})
}

// DM mode takes its settings from the environment: libxl gives a device
// model nothing but argv and its own environment (which xl, libvirt or a
// service manager set).
const (
	envConfig = "DMSANDBOX_CONFIG"        // launcher config file (default /etc/dmsandbox/config.json if present)
	envQEMU   = "DMSANDBOX_DM_QEMU"       // the Xen QEMU binary
	envBroker = "DMSANDBOX_BROKER_SOCKET" // broker control socket (default broker.DefaultControlSocket)
)

const defaultConfigPath = "/etc/dmsandbox/config.json"

// xenQEMUPaths are where distributions install the Xen device model:
// Debian's qemu-system-xen, then Xen's own default QEMU_XEN_PATH.
var xenQEMUPaths = []string{"/usr/libexec/xen-qemu-system-i386", "/usr/lib/xen/bin/qemu-system-i386"}

// dmStopGrace is how long QEMU has to exit after a forwarded SIGHUP
// (xl destroy) before the whole cgroup is killed.
const dmStopGrace = 5 * time.Second

// saveFile opens the device state file of `xl save`/migration
// (xen-save-devices-state) and of COLO's restore (xen-load-devices-state)
// for the QMP proxy, which hands QEMU the fd. Only libxl's own name for
// this domain is accepted (libxl__device_model_savefile:
// /var/lib/xen/qemu-save.DOMID), never a link.
func saveFile(domid int) func(cmd, name string) (*os.File, error) {
	want := fmt.Sprintf("/var/lib/xen/qemu-save.%d", domid)
	return func(cmd, name string) (*os.File, error) {
		if name != want {
			return nil, fmt.Errorf("%q is not %s", name, want)
		}
		if cmd == "xen-load-devices-state" {
			return os.OpenFile(name, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
		}
		return os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|syscall.O_NOFOLLOW, 0o600)
	}
}

func xenQEMU() (string, error) {
	if p := os.Getenv(envQEMU); p != "" {
		return p, nil
	}
	for _, p := range xenQEMUPaths {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("no Xen device model at %v (apt-get install qemu-system-xen, or set %s)", xenQEMUPaths, envQEMU)
}

func dmConfig() (launcher.Config, error) {
	path := os.Getenv(envConfig)
	if path == "" {
		if _, err := os.Stat(defaultConfigPath); err == nil {
			path = defaultConfigPath
		}
	}
	return launcher.LoadConfig(path)
}

// dmCmd runs one device model: the process contract with libxl is that
// this process is the pid libxl records, stdout/stderr are libxl's
// qemu-dm-NAME.log, SIGHUP ends the domain's device model, and the exit
// status is QEMU's.
func dmCmd(args []string) int {
	logf := func(format string, a ...any) { fmt.Fprintf(os.Stderr, "dmsandbox: "+format+"\n", a...) }
	// 1. The argv, before touching anything.
	dm, err := dmargv.Parse(args)
	if err != nil {
		logf("%v", err)
		return ExitUsage
	}
	logf("domain %d: device model %q (machine %s)", dm.Domid, dm.Name, dm.Machine)
	for _, n := range dm.Notes {
		logf("domain %d: %s %s %s: %s", dm.Domid, n.Action, n.Option, n.Value, n.Why)
	}
	env, err := dm.Env(os.Environ())
	if err != nil {
		logf("domain %d: %v", dm.Domid, err)
		return ExitUsage
	}
	cfg, err := dmConfig()
	if err != nil {
		logf("domain %d: %v", dm.Domid, err)
		return ExitConfig
	}
	program, err := xenQEMU()
	if err != nil {
		logf("domain %d: %v", dm.Domid, err)
		return ExitConfig
	}
	// 2. What QEMU gets instead of host paths, and libxl's QMP sockets:
	// listening before QEMU starts, since libxl connects once, right
	// after QEMU reports "running".
	res, err := prepare(dm)
	if err != nil {
		logf("domain %d: %v", dm.Domid, err)
		return ExitSetup
	}
	defer res.close()
	// VNC viewers connect to dmsandbox, in the host's network namespace.
	var vncLn net.Listener
	var vncSrv *qmpproxy.VNCServer
	if dm.VNCListen != nil {
		if vncLn, vncSrv, err = listenVNC(dm.VNCListen); err != nil {
			logf("domain %d: %v", dm.Domid, err)
			return ExitSetup
		}
		defer vncLn.Close()
	}
	spec, err := dm.Spec(program, res.files, env)
	if err != nil {
		logf("domain %d: %v", dm.Domid, err)
		return ExitSetup
	}
	if spec.Images, err = dmImages(dm.Domid, logf); err != nil { // PV disks (dm_disks.go)
		logf("domain %d: %v", dm.Domid, err)
		return ExitSetup
	}
	// The broker session, before QEMU starts: QEMU inherits it for the
	// shim (dm_broker.go). Closed, undoing what it holds, when DM mode ends.
	socket := os.Getenv(envBroker)
	if socket == "" {
		socket = broker.DefaultControlSocket
	}
	hook := &brokerHook{socket: socket, embed: embeddedBroker, name: dmDomainName(dm.Domid, dm.Name, logf)}
	defer func() {
		if err := hook.close(); err != nil {
			logf("domain %d: broker session: %v", dm.Domid, err)
		}
	}()
	if err := hook.handTo(&spec, uint32(dm.Domid)); err != nil {
		logf("domain %d: PCI passthrough unavailable: %v", dm.Domid, err)
	} else {
		logf("domain %d: broker session handed to QEMU (libxenctrl shim preloaded)", dm.Domid)
	}
	// (/dev/xen/hypercall, where libxencall takes its hypercall buffers
	// instead of mlocking memory under dm_restrict's RLIMIT_MEMLOCK 0, is
	// in the qemu-xen profile's device list: launcher/devices.go.)
	// 3. The sandbox. QEMU's stdio is ours: libxl's log. Signals are
	// caught from here on: an `xl destroy` (SIGHUP) while QEMU is still
	// starting tears the sandbox down instead of killing this process.
	sigs := launcher.NotifySignals()
	defer signal.Stop(sigs)
	l := &launcher.Launcher{Config: cfg, Stdout: os.Stdout, Stderr: os.Stderr, Log: os.Stderr, Signals: sigs}
	sb, err := l.Start(spec)
	res.closeFiles() // QEMU has its copies (or never will)
	if err != nil {
		logf("domain %d: %v", dm.Domid, err)
		return exitCodeFor(err)
	}
	// 4. The proxy, in front of the launcher's management monitor.
	hook.setGrant(backend.Grant{UID: int(sb.State.UID), GID: int(sb.State.UID), QEMUPid: sb.State.Pid})
	proxy := qmpproxy.New(qmpproxy.Config{
		Domid: uint32(dm.Domid),
		Dial:  func() (net.Conn, error) { return net.Dial("unix", sb.State.QMPSocket) },
		Hook:  hook, PTYs: res.ptys, Log: logf, Files: saveFile(dm.Domid), VNC: vncSrv,
	})
	var serving sync.WaitGroup
	for _, ln := range res.listeners {
		serving.Add(1)
		go func() {
			defer serving.Done()
			if err := proxy.Serve(ln); err != nil && !errors.Is(err, net.ErrClosed) {
				logf("domain %d: %v", dm.Domid, err)
			}
		}()
	}
	if vncLn != nil {
		go serveVNC(vncLn, proxy, logf)
	}
	// 5. Until QEMU exits: SIGHUP (xl destroy), SIGTERM, SIGINT are
	// forwarded; after dmStopGrace the cgroup is killed.
	status := sb.SuperviseSignals(sigs, dmStopGrace)
	for _, ln := range res.listeners {
		ln.Close()
	}
	if vncLn != nil {
		vncLn.Close()
	}
	serving.Wait()
	if err := hook.close(); err != nil {
		logf("domain %d: broker session: %v", dm.Domid, err)
	}
	if err := sb.Close(); err != nil {
		logf("domain %d: cleanup: %v", dm.Domid, err)
	}
	logf("domain %d: device model exited with status %d", dm.Domid, status)
	return status
}
