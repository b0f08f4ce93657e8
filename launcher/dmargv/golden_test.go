package dmargv

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/golden from the current output")

// readArgv reads testdata/argv/NAME.argv: one argument per line, '#'
// lines are comments (attribution).
func readArgv(t testing.TB, path string) []string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range strings.Split(strings.TrimRight(string(data), "\n"), "\n") {
		if strings.HasPrefix(l, "#") {
			continue
		}
		out = append(out, l)
	}
	return out
}

// golden is what a test pins per argv: the parsed DM (with QEMU's argv)
// and the environment QEMU gets from libxl's.
type golden struct {
	DM  *DM      `json:"dm"`
	Env []string `json:"env"`
}

// TestGolden parses every argv under testdata/argv (the rig's captures
// and variants built from libxl_dm.c) and compares with testdata/golden.
func TestGolden(t *testing.T) {
	files, _ := filepath.Glob("testdata/argv/*.argv")
	if len(files) < 8 {
		t.Fatalf("only %d argv files", len(files))
	}
	libxlEnv := []string{"HOME=/", "PATH=/usr/lib/xen-4.17/bin:/usr/bin", "XEN_QEMU_CONSOLE_LIMIT=1048576", "SHLVL=3"}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".argv")
		t.Run(name, func(t *testing.T) {
			dm, err := Parse(readArgv(t, f))
			if err != nil {
				t.Fatal(err)
			}
			env := libxlEnv
			if dm.Machine != "xenpv" {
				env = append(env[:len(env):len(env)], "XEN_DOMAIN_ID="+itoa(dm.Domid))
			}
			qenv, err := dm.Env(env)
			if err != nil {
				t.Fatal(err)
			}
			got, _ := json.MarshalIndent(golden{DM: dm, Env: qenv}, "", "  ")
			got = append(got, '\n')
			gp := filepath.Join("testdata/golden", name+".json")
			if *update {
				os.MkdirAll("testdata/golden", 0o755)
				if err := os.WriteFile(gp, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(gp)
			if err != nil {
				t.Fatalf("%v (run go test -update)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("%s differs from the output:\n%s", gp, got)
			}
			checkInvariants(t, dm)
		})
	}
}

func itoa(n int) string { b, _ := json.Marshal(n); return string(b) }

// checkInvariants holds for every parsed argv, golden or fuzzed: nothing
// the sandbox supersedes reaches QEMU, libxl's monitors are proxied, and
// every fd the argv names is one the launcher hands over.
func checkInvariants(t testing.TB, dm *DM) {
	t.Helper()
	maxFD := FirstFD + len(dm.Handed) - 1
	for i, a := range dm.Args {
		switch a {
		case "-chroot", "-runas", "-daemonize", "-pidfile", "-plugin", "-readconfig", "--chroot", "--runas", "--daemonize":
			t.Errorf("QEMU argv keeps %s", a)
		}
		if i > 0 && dm.Args[i-1] == "-run-with" && (strings.Contains(a, "chroot=") || strings.Contains(a, "user=")) {
			t.Errorf("QEMU argv keeps -run-with %s", a)
		}
		for _, m := range dm.Monitors {
			if strings.Contains(a, "id="+m.ID+",") || strings.HasSuffix(a, "id="+m.ID) || strings.Contains(a, "chardev="+m.ID) {
				t.Errorf("proxied monitor %s still in QEMU argv: %q", m.ID, a)
			}
		}
	}
	for _, fd := range fdRefs(dm.Args) {
		if fd < FirstFD || fd > maxFD {
			t.Errorf("QEMU argv names fd %d, handed are %d..%d: %q", fd, FirstFD, maxFD, dm.Args)
		}
	}
}

// fdRefs returns the fd numbers the values of known options name (fd=N,
// fd:N). An option this package does not know passes through as it is,
// fd numbers included: inside the sandbox they can only name a handed fd
// or none.
func fdRefs(args []string) []int {
	var out []int
	for i, a := range args {
		if i == 0 || !argOptions[strings.TrimLeft(args[i-1], "-")] {
			continue
		}
		for _, part := range splitOpts(a) {
			var s string
			switch {
			case strings.HasPrefix(part, "fd="):
				s = part[3:]
			case strings.HasPrefix(part, "fd:"):
				s = part[3:]
			default:
				continue
			}
			n := 0
			for _, c := range s {
				if c < '0' || c > '9' {
					n = -1
					break
				}
				n = n*10 + int(c-'0')
				if n > 1<<24 {
					break
				}
			}
			out = append(out, n)
		}
	}
	return out
}
