package container_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dmsandbox/dmsandbox/launcher"
)

// TestUserNamespace: with user_namespace on, QEMU (with KVM when
// available, through a node owned by the sandbox uid) runs with the same
// confinement plus its own user namespace, and no id of the sandbox maps
// to host root.
func TestUserNamespace(t *testing.T) {
	e := setup(t)
	cfg := e.cfg
	cfg.UserNamespace = true
	path := filepath.Join(filepath.Dir(e.cfgPath), "userns.json")
	writeConfig(t, path, cfg)

	r := e.start(t, path, "it-userns", e.qemuArgs()...)
	st := r.waitReady(t, e, cfg.RunDir)
	res := e.dmsandbox(t, "inspect", "it-userns", "--json", "--config", path)
	var in launcher.Inspection
	if err := json.Unmarshal([]byte(res.stdout), &in); err != nil {
		t.Fatalf("inspect: %v (%s)", err, res.stderr)
	}
	checkConfinement(t, e, &in, st.UID)
	if n := in.Namespaces["user"]; n.Shared {
		t.Fatal("user namespace shared with the host")
	}
	uidMap, err := os.ReadFile(fmt.Sprintf("/proc/%d/uid_map", st.Pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(uidMap)), "\n") {
		f := strings.Fields(line)
		if len(f) == 3 && f[1] == "0" {
			t.Fatalf("host root mapped into the sandbox: %q", uidMap)
		}
	}
	r.cmd.Process.Signal(syscall.SIGTERM)
	r.wait(t, 20*time.Second)
	assertGone(t, e, cfg.RunDir, "it-userns", st.Pid)

	for _, a := range []string{"setuid0", "unshare-user", "mount", "open-shadow"} {
		res := e.dmsandbox(t, "run", "--config", path, "--name", "it-userns", "--", e.probe, a)
		if !(res.code == 0 && strings.Contains(res.stdout, "BLOCKED")) && res.code != 128+31 {
			t.Errorf("%s under a user namespace: exit %d, %q %q", a, res.code, res.stdout, res.stderr)
		}
	}
}
