package main

import (
	"errors"
	"flag"
	"fmt"
	"github.com/dmsandbox/dmsandbox/seccomp"
	"os"
	"os/signal"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"

	"github.com/dmsandbox/dmsandbox/pci"
	"github.com/dmsandbox/dmsandbox/pci/audit"
	"github.com/dmsandbox/dmsandbox/pci/backend"
	"github.com/dmsandbox/dmsandbox/pci/backend/fake"
	"github.com/dmsandbox/dmsandbox/pci/backend/vfio"
	"github.com/dmsandbox/dmsandbox/pci/backend/xen"
	"github.com/dmsandbox/dmsandbox/pci/broker"
	"golang.org/x/sys/unix"
)

// The broker command: the privileged passthrough service (docs/broker.md).
func init() {
	register(command{Name: "broker", Summary: "run the PCI passthrough broker daemon; try a policy; list sessions", Run: brokerCmd})
}

const brokerUsage = `usage: dmsandbox broker [run] [FLAGS]        run the daemon (control socket, root only)
       dmsandbox broker ls [--socket PATH]     list the daemon's sessions
       dmsandbox broker bench [--sysfs-root DIR] [-n N] [--duration D]   benchmark (make bench-broker)
       dmsandbox broker try [FLAGS] -- OP [FIELD=VALUE...] [-- OP ...]
                                               open a throwaway session, print each verdict
run flags: --socket PATH (` + broker.DefaultControlSocket + `) --backend xen|vfio (xen)
  --sysfs-root DIR (/) --audit-dir DIR (` + defaultAuditDir + `) --state-dir DIR (` + defaultBrokerState + `)
  --pci-state-dir DIR (` + pci.DefaultStateDir + `, vfio binding records) --syslog --buffered-audit
  --require-authorization (attach only devices pre-authorised for the domain: dmsandbox attach)
try flags: --backend fake|xen|vfio (fake) --sysfs-root DIR --device BDF (repeatable) --domid N --permissive
  OP is a protocol op (hello memory_mapping ioport_mapping map_pirq map_pirq_msi unmap_pirq
  bind_pt_pci_irq unbind_pt_irq update_msi_irq unbind_msi_irq config_read config_write reset
  open_file: file=config|resource|vendor|device|irq|class|subsystem_vendor|subsystem_device|msix_bar,
  bdf=any with msix_bar and addr=HOST_ADDRESS);
  FIELD is a request field in snake case (first_gfn=0xe0000); domid and bdf default to the session's;
  pirq=last means the pirq the previous op returned.
exit codes: 0 ok (try: every op allowed); 1 failed (try: an op was refused); 2 usage; 3 config invalid;
  4 another broker listens on the socket`

const (
	defaultAuditDir    = "/var/log/dmsandbox/audit"
	defaultBrokerState = "/var/lib/dmsandbox/broker"
)

func brokerCmd(args []string) int {
	sub := "run"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		sub, args = args[0], args[1:]
	}
	switch sub {
	case "run":
		return brokerRun(args)
	case "try":
		return brokerTry(args)
	case "ls":
		return brokerLs(args)
	case "bench":
		return brokerBench(args)
	case "help":
		fmt.Println(brokerUsage)
		return ExitOK
	}
	fmt.Fprintln(os.Stderr, brokerUsage)
	return ExitUsage
}

// openBackend builds a backend by name.
func openBackend(name, sysfsRoot, pciState string) (backend.Backend, error) {
	sys := pci.NewSysfs(sysfsRoot)
	switch name {
	case "xen":
		return xen.New(sys)
	case "vfio":
		return vfio.New(vfio.Options{Sysfs: sys, StateDir: pciState})
	case "fake":
		return fake.New(sysfsRoot, "")
	}
	return nil, fmt.Errorf("unknown backend %q (xen, vfio)", name)
}

func brokerRun(args []string) int {
	fs := flag.NewFlagSet("broker run", flag.ContinueOnError)
	socket := fs.String("socket", broker.DefaultControlSocket, "control socket")
	beName := fs.String("backend", "xen", "xen or vfio")
	root := fs.String("sysfs-root", "/", "root of /sys")
	auditDir := fs.String("audit-dir", defaultAuditDir, "audit log directory")
	stateDir := fs.String("state-dir", defaultBrokerState, "session state journals")
	pciState := fs.String("pci-state-dir", pci.DefaultStateDir, "pci binding records (vfio creates them; owners marked while a domain holds a device)")
	syslogCopy := fs.Bool("syslog", false, "copy audit records to syslog")
	buffered := fs.Bool("buffered-audit", false, "do not fsync each audit record before replying (unsafe)")
	requireAuthz := fs.Bool("require-authorization", false, "refuse to attach a device not pre-authorised for the domain (dmsandbox attach)")
	lockDir := fs.String("lock-dir", broker.DefaultLockDir, "device locks shared with DM mode's embedded brokers (one device, one session, across processes)")
	seccompLog := fs.Bool("seccomp-log", false, "log instead of kill on calls the broker profile does not allow (discovery only)")
	if err := fs.Parse(args); err != nil {
		return ExitUsage
	}
	// DM mode's embedded brokers use the defaults: elsewhere, they and
	// this daemon do not share device locks or the policy file.
	if *lockDir != broker.DefaultLockDir {
		fmt.Fprintf(os.Stderr, "dmsandbox broker: warning: --lock-dir %s: DM mode's embedded brokers lock devices in %s; this daemon and they do not exclude each other\n", *lockDir, broker.DefaultLockDir)
	}
	if *stateDir != defaultBrokerState {
		fmt.Fprintf(os.Stderr, "dmsandbox broker: warning: --state-dir %s: DM mode's embedded brokers read authorisations and policy from %s\n", *stateDir, defaultBrokerState)
	}
	be, err := openBackend(*beName, *root, *pciState)
	if err != nil {
		fmt.Fprintln(os.Stderr, "dmsandbox broker:", err)
		return ExitConfig
	}
	defer be.Close()
	opts := audit.Options{Dir: *auditDir, Durable: !*buffered}
	if *syslogCopy {
		if opts.Copy, err = audit.Syslog(); err != nil {
			fmt.Fprintln(os.Stderr, "dmsandbox broker:", err)
			return ExitConfig
		}
	}
	al, err := audit.Open(opts)
	if err != nil {
		fmt.Fprintln(os.Stderr, "dmsandbox broker:", err)
		return ExitFailure
	}
	defer al.Close()
	b, err := broker.New(broker.Config{Backend: be, Sysfs: pci.NewSysfs(*root), Audit: al, StateDir: *stateDir,
		Records: &pci.State{Dir: *pciState}, RequireAuthorization: *requireAuthz, LockDir: *lockDir})
	if err != nil {
		fmt.Fprintln(os.Stderr, "dmsandbox broker:", err)
		return ExitConfig
	}
	l, err := broker.ListenControl(*socket)
	if err != nil {
		fmt.Fprintln(os.Stderr, "dmsandbox broker:", err)
		if errors.Is(err, broker.ErrConflict) {
			return ExitConflict
		}
		return ExitFailure
	}
	// Setup is done (backend, audit log, control socket): from here on
	// the broker runs under its own seccomp allowlist, fail closed.
	var sopts []seccomp.Option
	if *seccompLog {
		sopts = append(sopts, seccomp.LogMode())
	}
	prof, err := seccomp.Load("broker", sopts...)
	if err == nil {
		err = prof.Install()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "dmsandbox broker: seccomp:", err)
		l.Close()
		return ExitFailure
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	go func() { <-sig; l.Close() }()
	fmt.Fprintf(os.Stderr, "dmsandbox broker: %s backend, listening on %s, audit in %s\n", be.Name(), *socket, *auditDir)
	err = b.ServeControl(l)
	b.Close() // undo every session: their device models lose the broker anyway
	os.Remove(*socket)
	if err != nil {
		fmt.Fprintln(os.Stderr, "dmsandbox broker:", err)
		return ExitFailure
	}
	return ExitOK
}

func brokerLs(args []string) int {
	fs := flag.NewFlagSet("broker ls", flag.ContinueOnError)
	socket := fs.String("socket", broker.DefaultControlSocket, "control socket")
	if err := fs.Parse(args); err != nil {
		return ExitUsage
	}
	c, err := broker.DialControl(*socket)
	if err != nil {
		fmt.Fprintln(os.Stderr, "dmsandbox broker:", err)
		return ExitFailure
	}
	defer c.Shutdown()
	list, err := c.List()
	if err != nil {
		fmt.Fprintln(os.Stderr, "dmsandbox broker:", err)
		return ExitFailure
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "SESSION\tDOMID\tPID\tDEVICES\tLIVE")
	for _, s := range list {
		fmt.Fprintf(w, "%d\t%d\t%d\t%s\t%d\n", s.ID, s.Domid, s.Peer.PID, strings.Join(s.Devices, ","), len(s.Live))
	}
	w.Flush()
	return ExitOK
}

type bdfList []pci.BDF

func (l *bdfList) String() string { return fmt.Sprint(*l) }
func (l *bdfList) Set(s string) error {
	b, err := pci.ParseBDF(s)
	if err == nil {
		*l = append(*l, b)
	}
	return err
}

// brokerTry runs an embedded broker with a throwaway state and audit
// directory, opens one session and plays the ops given after "--".
func brokerTry(args []string) int {
	fs := flag.NewFlagSet("broker try", flag.ContinueOnError)
	beName := fs.String("backend", "fake", "fake, xen or vfio")
	root := fs.String("sysfs-root", "/", "root of /sys")
	domid := fs.Uint("domid", 1, "domain id of the session")
	permissive := fs.Bool("permissive", false, "attach permissive (config writes unfiltered but BARs)")
	var devs bdfList
	fs.Var(&devs, "device", "device to attach (repeatable)")
	if err := fs.Parse(args); err != nil {
		return ExitUsage
	}
	ops := splitOps(fs.Args())
	if len(devs) == 0 || len(ops) == 0 {
		fmt.Fprintln(os.Stderr, brokerUsage)
		return ExitUsage
	}
	tmp, err := os.MkdirTemp("", "dmsandbox-broker-try")
	if err != nil {
		fmt.Fprintln(os.Stderr, "dmsandbox broker try:", err)
		return ExitFailure
	}
	defer os.RemoveAll(tmp)
	be, err := openBackend(*beName, *root, filepath.Join(tmp, "pci"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "dmsandbox broker try:", err)
		return ExitConfig
	}
	auditDir := filepath.Join(tmp, "audit")
	e, err := broker.NewEmbedded(broker.EmbeddedConfig{Backend: be, SysfsRoot: *root, AuditDir: auditDir,
		StateDir: filepath.Join(tmp, "state"), PCIStateDir: filepath.Join(tmp, "pci"), AllowFake: true})
	if err != nil {
		fmt.Fprintln(os.Stderr, "dmsandbox broker try:", err)
		return ExitConfig
	}
	defer e.Shutdown()
	id, f, err := e.Open(uint32(*domid), "")
	if err != nil {
		fmt.Fprintln(os.Stderr, "dmsandbox broker try:", err)
		return ExitFailure
	}
	for _, d := range devs {
		if err := e.Attach(id, d, broker.AttachOptions{Permissive: *permissive, Grant: backend.Grant{UID: 65534, GID: 65534}}); err != nil {
			fmt.Fprintln(os.Stderr, "dmsandbox broker try:", err)
			return ExitFailure
		}
	}
	c, err := broker.NewClient(f)
	if err != nil {
		fmt.Fprintln(os.Stderr, "dmsandbox broker try:", err)
		return ExitFailure
	}
	defer c.Close()
	rc := ExitOK
	hello := false
	lastPirq := int32(-1)
	for _, op := range ops {
		req, err := buildRequest(op, uint32(*domid), devs[0], lastPirq)
		if err != nil {
			fmt.Fprintln(os.Stderr, "dmsandbox broker try:", err)
			return ExitUsage
		}
		if !hello && req.Op() != broker.OpHello {
			c.Do(&broker.Hello{Version: uint32(broker.Version)}, nil)
		}
		hello = true
		res := resultFor(req.Op())
		line := strings.Join(op, " ")
		if of, ok := req.(*broker.OpenFile); ok {
			res, err = tryOpenFile(c, of)
		} else {
			err = c.Do(req, res)
		}
		if err != nil {
			rc = ExitFailure
			errno := broker.Errno(err)
			fmt.Printf("%s → deny %s (%d): %s\n", line, unix.ErrnoName(errno), int(errno), lastWhy(e, auditDir))
			continue
		}
		if p, ok := res.(*broker.PirqReply); ok {
			lastPirq = p.Pirq
		}
		fmt.Printf("%s → allow%s\n", line, describeResult(res))
	}
	return rc
}

func splitOps(args []string) [][]string {
	var out [][]string
	var cur []string
	for _, a := range args {
		if a == "--" {
			if len(cur) > 0 {
				out = append(out, cur)
			}
			cur = nil
			continue
		}
		cur = append(cur, a)
	}
	if len(cur) > 0 {
		out = append(out, cur)
	}
	return out
}

// buildRequest fills a request struct from FIELD=VALUE words by field
// name (snake case of the Go field).
func buildRequest(op []string, domid uint32, dev pci.BDF, lastPirq int32) (broker.Request, error) {
	o, ok := broker.OpByName(op[0])
	if !ok {
		return nil, fmt.Errorf("unknown op %q", op[0])
	}
	req := broker.NewRequest(o)
	v := reflect.ValueOf(req).Elem()
	set := map[string]string{}
	if o == broker.OpHello {
		set["version"] = strconv.Itoa(int(broker.Version))
	}
	if f := v.FieldByName("Domid"); f.IsValid() {
		set["domid"] = strconv.Itoa(int(domid))
	}
	if f := v.FieldByName("BDF"); f.IsValid() {
		set["bdf"] = dev.String()
	}
	for _, kv := range op[1:] {
		k, val, ok := strings.Cut(kv, "=")
		if !ok {
			return nil, fmt.Errorf("%s: want FIELD=VALUE, got %q", op[0], kv)
		}
		set[k] = val
	}
	for k, val := range set {
		f := v.FieldByNameFunc(func(n string) bool { return strings.EqualFold(n, strings.ReplaceAll(k, "_", "")) })
		if !f.IsValid() || strings.HasPrefix(k, "reserved") {
			return nil, fmt.Errorf("%s has no field %q", op[0], k)
		}
		if val == "last" {
			val = strconv.Itoa(int(lastPirq))
		}
		if k == "bdf" && val == "any" {
			f.SetUint(uint64(broker.WireAnyBDF))
			continue
		}
		if k == "file" {
			if n, ok := fileByName(val); ok {
				f.SetUint(uint64(n))
				continue
			}
		}
		if k == "bdf" {
			b, err := pci.ParseBDF(val)
			if err != nil {
				return nil, err
			}
			f.SetUint(uint64(broker.WireBDF(b)))
			continue
		}
		n, err := strconv.ParseInt(val, 0, 64)
		if err != nil {
			u, uerr := strconv.ParseUint(val, 0, 64)
			if uerr != nil {
				return nil, fmt.Errorf("%s: %s=%q: %v", op[0], k, val, err)
			}
			n = int64(u)
		}
		switch f.Kind() {
		case reflect.Int32:
			f.SetInt(n)
		default:
			f.SetUint(uint64(n))
		}
	}
	return req, nil
}

// fileByName maps open_file's file names (config, msix_bar, ...) to
// their numbers.
func fileByName(name string) (uint32, bool) {
	for f := uint32(1); f <= broker.FileMSIXBar; f++ {
		if broker.FileName(f) == name {
			return f, true
		}
	}
	return 0, false
}

// openFileResult is what `broker try` shows of an open_file: the reply
// and what the handed fd holds (it is closed at once).
type openFileResult struct {
	broker.OpenFileReply
	size  int64
	first string
}

// tryOpenFile does an open_file and looks at the fd it hands back.
func tryOpenFile(c *broker.Client, r *broker.OpenFile) (any, error) {
	f, rep, err := c.OpenFile(broker.BDFFromWire(r.BDF), r.File, r.Addr)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	res := &openFileResult{OpenFileReply: rep}
	if st, err := f.Stat(); err == nil {
		res.size = st.Size()
	}
	if r.File != broker.FileMSIXBar && r.File != broker.FileConfig {
		buf := make([]byte, 80)
		n, _ := f.Read(buf)
		res.first, _, _ = strings.Cut(string(buf[:n]), "\n")
	}
	return res, nil
}

func resultFor(o broker.Op) any {
	switch o {
	case broker.OpHello:
		return &broker.HelloReply{}
	case broker.OpMapPirq, broker.OpMapPirqMSI:
		return &broker.PirqReply{}
	case broker.OpConfigRead:
		return &broker.ConfigReadReply{}
	}
	return nil
}

func describeResult(res any) string {
	switch r := res.(type) {
	case *openFileResult:
		out := fmt.Sprintf(" fd (read-only, %d bytes)", r.size)
		if r.Size != 0 {
			out += fmt.Sprintf(" bar=%#x+%#x", r.Base, r.Size)
		}
		if r.first != "" {
			out += fmt.Sprintf(" %q", r.first)
		}
		return out
	case *broker.HelloReply:
		return fmt.Sprintf(" domid=%d devices=%d", r.Domid, r.NDevices)
	case *broker.PirqReply:
		return fmt.Sprintf(" pirq=%d", r.Pirq)
	case *broker.ConfigReadReply:
		return fmt.Sprintf(" value=%#x", r.Value)
	}
	return ""
}

// lastWhy returns the reason of the newest audit record.
func lastWhy(e *broker.Embedded, dir string) string {
	e.Audit().Sync()
	files, err := audit.Files(dir)
	if err != nil || len(files) == 0 {
		return "?"
	}
	recs, err := audit.ReadFile(files[len(files)-1])
	if err != nil || len(recs) == 0 {
		return "?"
	}
	return recs[len(recs)-1].Err
}
