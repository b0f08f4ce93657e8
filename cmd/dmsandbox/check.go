package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"golang.org/x/sys/unix"
)

func init() {
	register(command{Name: "check", Summary: "is this host ready for dmsandbox? (a table, each row with its fix)", Run: checkCmd})
}

const checkUsage = `usage: dmsandbox check [--json]

Checks what dmsandbox needs from this host and prints one row per
facility: status (ok, warn, fail, n/a), what was found, and the fix.
fail: dmsandbox cannot confine a device model here; warn: a deployment
(KVM, Xen, passthrough) will not work until fixed; n/a: not needed here.

exit codes: 0 no row failed; 1 a row failed; 2 bad usage.
`

// Check statuses.
const (
	checkOK   = "ok"
	checkWarn = "warn"
	checkFail = "fail"
	checkNA   = "n/a"
)

// checkRow is one line of the table (and one object of --json).
type checkRow struct {
	Name   string `json:"name"`
	Status string `json:"status"`
	Found  string `json:"found"`
	Fix    string `json:"fix,omitempty"`
}

// hostFS reads the host below root ("/" on a real host, a captured tree
// in tests): /proc, /sys, /dev, /usr, /lib, /run.
type hostFS struct{ root string }

func (h hostFS) path(p string) string { return filepath.Join(h.root, p) }

func (h hostFS) read(p string) (string, error) {
	b, err := os.ReadFile(h.path(p))
	return strings.TrimSpace(string(b)), err
}

func (h hostFS) exists(p string) bool { _, err := os.Stat(h.path(p)); return err == nil }

func (h hostFS) isCharDev(p string) bool {
	st, err := os.Stat(h.path(p))
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

func checkCmd(args []string) int {
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	asJSON := fs.Bool("json", false, "JSON output")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Print(checkUsage)
			return ExitOK
		}
		fmt.Fprintf(os.Stderr, "dmsandbox check: %v\n%s", err, checkUsage)
		return ExitUsage
	}
	if fs.NArg() != 0 {
		fmt.Fprintf(os.Stderr, "dmsandbox check: unexpected %q\n%s", fs.Arg(0), checkUsage)
		return ExitUsage
	}
	rows := runChecks(hostFS{root: "/"})
	if *asJSON {
		out, _ := json.MarshalIndent(map[string]any{"version": 1, "checks": rows}, "", "  ")
		fmt.Println(string(out))
	} else {
		tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "CHECK\tSTATUS\tFOUND\tFIX")
		for _, r := range rows {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.Name, r.Status, r.Found, r.Fix)
		}
		tw.Flush()
	}
	for _, r := range rows {
		if r.Status == checkFail {
			return ExitFailure
		}
	}
	return ExitOK
}

// runChecks returns every row, in the order a reader fixes them.
func runChecks(h hostFS) []checkRow {
	return []checkRow{
		checkSeccomp(h), checkUserNS(h), checkCgroups(h), checkQEMU(h), checkXenQEMU(h), checkKVM(h),
		checkXen(h), checkXenstore(h), checkTun(h), checkLoop(h), checkIOMMU(h), checkDriver(h, "vfio-pci", "vfio-pci", "vfio-pci"),
		checkDriver(h, "pciback", "pciback", "xen-pciback"),
	}
}

func checkSeccomp(h hostFS) checkRow {
	r := checkRow{Name: "seccomp"}
	acts, err := h.read("/proc/sys/kernel/seccomp/actions_avail")
	switch {
	case err != nil:
		r.Status, r.Found, r.Fix = checkFail, "no seccomp filter support", "a kernel with CONFIG_SECCOMP_FILTER=y"
	case !strings.Contains(" "+acts+" ", " kill_process "):
		r.Status, r.Found, r.Fix = checkFail, "actions: "+acts, "a kernel with SECCOMP_RET_KILL_PROCESS (4.14 or later)"
	default:
		r.Status, r.Found = checkOK, "actions: "+acts
	}
	return r
}

func checkUserNS(h hostFS) checkRow {
	r := checkRow{Name: "namespaces"}
	var missing []string
	for _, ns := range []string{"mnt", "pid", "ipc", "uts", "net", "cgroup", "user"} {
		if !h.exists("/proc/self/ns/" + ns) {
			missing = append(missing, ns)
		}
	}
	max, _ := h.read("/proc/sys/user/max_user_namespaces")
	switch {
	case len(missing) > 0 && !(len(missing) == 1 && missing[0] == "user"):
		r.Status, r.Found, r.Fix = checkFail, "missing: "+strings.Join(missing, " "), "a kernel with CONFIG_NAMESPACES and each namespace type"
	case len(missing) == 1 || max == "0":
		r.Status, r.Found, r.Fix = checkWarn, "no user namespaces (max_user_namespaces="+max+")", "sysctl user.max_user_namespaces=15000 (needed only for user_namespace: true)"
	default:
		r.Status, r.Found = checkOK, "mnt pid ipc uts net cgroup user (max_user_namespaces="+max+")"
	}
	return r
}

func checkCgroups(h hostFS) checkRow {
	r := checkRow{Name: "cgroups"}
	need := []string{"memory", "pids", "cpu", "devices"}
	var have map[string]bool
	var mode string
	if ctl, err := h.read("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		mode = "v2"
		have = map[string]bool{"devices": true} // v2 device control is a BPF program, always there
		for _, c := range strings.Fields(ctl) {
			have[c] = true
		}
	} else {
		mode = "v1"
		have = map[string]bool{}
		tbl, err := h.read("/proc/cgroups")
		if err != nil {
			r.Status, r.Found, r.Fix = checkFail, "no cgroups", "mount cgroup2 on /sys/fs/cgroup (or the v1 hierarchies)"
			return r
		}
		for _, l := range strings.Split(tbl, "\n") {
			f := strings.Fields(l)
			if len(f) == 4 && f[3] == "1" && h.exists("/sys/fs/cgroup/"+f[0]) {
				have[f[0]] = true
			}
		}
	}
	var missing []string
	for _, c := range need {
		if !have[c] {
			missing = append(missing, c)
		}
	}
	if len(missing) > 0 {
		r.Status, r.Found = checkFail, mode+", missing "+strings.Join(missing, " ")
		r.Fix = "enable the controllers (v2: echo +memory +pids +cpu > cgroup.subtree_control of the parent; v1: mount each hierarchy)"
		return r
	}
	r.Status, r.Found = checkOK, mode+": "+strings.Join(need, " ")
	return r
}

func checkQEMU(h hostFS) checkRow {
	r := checkRow{Name: "qemu (kvm)"}
	if p := "/usr/bin/qemu-system-x86_64"; h.exists(p) {
		r.Status, r.Found = checkOK, p
	} else {
		r.Status, r.Found, r.Fix = checkWarn, "no qemu-system-x86_64", "apt-get install qemu-system-x86 (KVM/VFIO deployments)"
	}
	return r
}

func checkXenQEMU(h hostFS) checkRow {
	r := checkRow{Name: "qemu (xen)"}
	paths := xenQEMUPaths
	if p := os.Getenv(envQEMU); p != "" && h.root == "/" {
		paths = []string{p}
	}
	for _, p := range paths {
		if h.exists(p) {
			r.Status, r.Found = checkOK, p
			return r
		}
	}
	r.Status, r.Found, r.Fix = checkWarn, "none of "+strings.Join(paths, " "), "apt-get install qemu-system-xen (Xen deployments), or set "+envQEMU
	return r
}

func checkKVM(h hostFS) checkRow {
	r := checkRow{Name: "kvm"}
	if !h.isCharDev("/dev/kvm") {
		r.Status, r.Found, r.Fix = checkWarn, "no /dev/kvm (QEMU falls back to TCG)", "enable virtualisation in firmware; modprobe kvm_intel or kvm_amd"
		return r
	}
	f, err := os.OpenFile(h.path("/dev/kvm"), os.O_RDWR, 0)
	if err != nil {
		r.Status, r.Found, r.Fix = checkWarn, "/dev/kvm: "+err.Error(), "run as root, or give the launcher access to /dev/kvm"
		return r
	}
	defer f.Close()
	v, err := unix.IoctlRetInt(int(f.Fd()), 0xAE00) // KVM_GET_API_VERSION
	if err != nil || v != 12 {
		r.Status, r.Found, r.Fix = checkWarn, fmt.Sprintf("/dev/kvm: API version %d (%v)", v, err), "a kernel whose KVM speaks API 12"
		return r
	}
	r.Status, r.Found = checkOK, "/dev/kvm, API 12"
	return r
}

func checkXen(h hostFS) checkRow {
	r := checkRow{Name: "xen dom0"}
	caps, err := h.read("/proc/xen/capabilities")
	switch {
	case err != nil:
		r.Status, r.Found, r.Fix = checkNA, "not running on Xen (no /proc/xen/capabilities)", "only Xen deployments: boot Xen, mount -t xenfs xenfs /proc/xen"
	case !strings.Contains(caps, "control_d"):
		r.Status, r.Found, r.Fix = checkWarn, "a Xen guest, not dom0", "run dmsandbox in dom0 (or a driver domain)"
	case !h.isCharDev("/dev/xen/privcmd") || !h.isCharDev("/dev/xen/evtchn") || !h.isCharDev("/dev/xen/gntdev"):
		r.Status, r.Found, r.Fix = checkWarn, "dom0 without /dev/xen/{privcmd,evtchn,gntdev}", "modprobe xen-privcmd xen-evtchn xen-gntdev xen-gntalloc"
	default:
		r.Status, r.Found = checkOK, "dom0, /dev/xen/privcmd evtchn gntdev"
	}
	return r
}

func checkXenstore(h hostFS) checkRow {
	r := checkRow{Name: "xenstore"}
	if !h.exists("/proc/xen/capabilities") {
		r.Status, r.Found = checkNA, "not running on Xen"
		return r
	}
	switch {
	case h.isCharDev("/dev/xen/xenbus"):
		r.Status, r.Found = checkOK, "/dev/xen/xenbus (QEMU reaches xenstored through it from the sandbox)"
	case h.exists("/run/xenstored/socket"):
		r.Status, r.Found, r.Fix = checkWarn, "only /run/xenstored/socket", "modprobe xen-xenbus-frontend or give the sandbox /dev/xen/xenbus"
	default:
		r.Status, r.Found, r.Fix = checkWarn, "no xenstored", "start xenstored (xencommons)"
	}
	return r
}

func checkTun(h hostFS) checkRow {
	return charDevRow(h, "tun", "/dev/net/tun", "emulated NICs: the launcher creates the tap", "modprobe tun (needed for HVM guests with emulated NICs)")
}

// checkLoop: DM mode gives QEMU a qdisk image (PV disks, and the PV path
// of HVM disks) as a loop device over its own open of the file.
func checkLoop(h hostFS) checkRow {
	return charDevRow(h, "loop", "/dev/loop-control", "qdisk images reach QEMU as loop devices", "modprobe loop (needed for Xen guests with qdisk disks)")
}

// charDevRow is ok when the device node dev exists (use says what for),
// warn with fix when it does not.
func charDevRow(h hostFS, name, dev, use, fix string) checkRow {
	r := checkRow{Name: name}
	if h.isCharDev(dev) {
		r.Status, r.Found = checkOK, dev+" ("+use+")"
	} else {
		r.Status, r.Found, r.Fix = checkWarn, "no "+dev, fix
	}
	return r
}

func checkIOMMU(h hostFS) checkRow {
	r := checkRow{Name: "iommu"}
	groups, _ := os.ReadDir(h.path("/sys/kernel/iommu_groups"))
	units, _ := os.ReadDir(h.path("/sys/class/iommu"))
	if len(groups) == 0 {
		r.Status, r.Found, r.Fix = checkWarn, "no IOMMU groups", "enable VT-d/AMD-Vi in firmware; boot with intel_iommu=on (KVM) or let Xen own it (iommu=on)"
		return r
	}
	r.Status, r.Found = checkOK, fmt.Sprintf("%d groups, %d units", len(groups), len(units))
	return r
}

// checkDriver: a passthrough driver bound in sysfs, or available as a
// module of the running kernel.
func checkDriver(h hostFS, name, sysfsName, module string) checkRow {
	r := checkRow{Name: name}
	if h.exists("/sys/bus/pci/drivers/" + sysfsName) {
		r.Status, r.Found = checkOK, "driver loaded"
		return r
	}
	rel, _ := h.read("/proc/sys/kernel/osrelease")
	for _, f := range []string{"modules.dep", "modules.builtin"} {
		dep, _ := h.read("/lib/modules/" + rel + "/" + f)
		for _, l := range strings.Split(dep, "\n") {
			mod, _, _ := strings.Cut(l, ":")
			// Module files use '-' or '_' as they please (vfio-pci.ko
			// for module vfio_pci).
			base := strings.ReplaceAll(filepath.Base(mod), "-", "_")
			if strings.HasPrefix(base, strings.ReplaceAll(module, "-", "_")+".ko") {
				r.Status, r.Found, r.Fix = checkWarn, "module available, not loaded", "modprobe "+module
				return r
			}
		}
	}
	r.Status, r.Found, r.Fix = checkWarn, "not available in kernel "+rel, "a kernel with "+module+" (needed only for passthrough)"
	return r
}
