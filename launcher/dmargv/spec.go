package dmargv

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/dmsandbox/dmsandbox/launcher"
)

// Profile is the seccomp profile of a Xen device model.
const Profile = "qemu-xen"

// SandboxName is the launcher's name for domid's device model: its run
// directory, cgroup and lock. Guest names may hold any character, the
// domid is unique while the domain lives.
func SandboxName(domid int) string { return fmt.Sprintf("xen-dm-%d", domid) }

// envKeys are the variables libxl sets for QEMU (libxl_dm.c) that QEMU
// reads: XEN_DOMAIN_ID (HVM only) and XEN_QEMU_CONSOLE_LIMIT (xen
// console backend rate limit). Nothing else of libxl's or dmsandbox's
// environment reaches the sandbox.
var envKeys = []string{"XEN_DOMAIN_ID", "XEN_QEMU_CONSOLE_LIMIT"}

// Env returns QEMU's environment from dmsandbox's own. A value libxl
// sets must be a number, and XEN_DOMAIN_ID must be the argv's domid.
func (d *DM) Env(environ []string) ([]string, error) {
	var out []string
	for _, kv := range environ {
		k, v, _ := strings.Cut(kv, "=")
		for _, want := range envKeys {
			if k != want {
				continue
			}
			n, err := strconv.ParseUint(v, 10, 63)
			if err != nil {
				return nil, fmt.Errorf("%w: environment %s=%q is not a number", ErrNotDM, k, v)
			}
			if k == "XEN_DOMAIN_ID" && n != uint64(d.Domid) {
				return nil, fmt.Errorf("%w: XEN_DOMAIN_ID=%d but -xen-domid %d", ErrNotDM, n, d.Domid)
			}
			out = append(out, k+"="+v)
		}
	}
	return out, nil
}

// Spec is the launcher.Spec that runs program (the Xen QEMU) for d.
// files are the opened Handed entries, in order; the caller owns them.
func (d *DM) Spec(program string, files []*os.File, env []string) (launcher.Spec, error) {
	if len(files) != len(d.Handed) {
		return launcher.Spec{}, fmt.Errorf("dmargv: %d files for %d handed fds", len(files), len(d.Handed))
	}
	s := launcher.Spec{Name: SandboxName(d.Domid), Index: d.Domid, Program: program,
		Args: append([]string(nil), d.Args...), Env: env, Profile: Profile}
	for i, h := range d.Handed {
		s.Files = append(s.Files, launcher.HandedFile{Name: h.Name, File: files[i]})
	}
	return s, nil
}
