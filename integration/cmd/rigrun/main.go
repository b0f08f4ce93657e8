// Command rigrun runs a shell script in the rig's L1 guest and prints what
// it printed, for trying things by hand before they become a test:
//
//	go run ./integration/cmd/rigrun -device pcie-root-port,id=rp1,chassis=1,slot=1 \
//	    -device edu,bus=rp1 -c 'lspci -nn; ls -l /dev/vfio'
//	go run ./integration/cmd/rigrun -device e1000e -e BIN=$PWD/bin/dmsandbox script.sh
//
// The exit status is the script's; 125 means the rig itself failed (the
// error and the console's tail go to stderr).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/dmsandbox/dmsandbox/integration/rig"
)

// list is a repeatable string flag.
type list []string

func (l *list) String() string     { return strings.Join(*l, " ") }
func (l *list) Set(s string) error { *l = append(*l, s); return nil }

func main() {
	var r rig.Rig
	var devices, qemuArgs, env list
	flag.Var(&devices, "device", "a QEMU -device value (repeatable)")
	flag.Var(&qemuArgs, "qemu-arg", "an extra L0 QEMU argument (repeatable)")
	flag.Var(&env, "e", "KEY=VALUE exported to the script (repeatable)")
	cmd := flag.String("c", "", "the script text (instead of a script file argument)")
	flag.StringVar(&r.Append, "append", "", "extra L1 kernel command line")
	flag.StringVar(&r.Cgroup, "cgroup", "v1", "cgroup layout in L1: v1 or v2")
	flag.DurationVar(&r.Timeout, "timeout", 3*time.Minute, "per attempt")
	flag.IntVar(&r.Retries, "retries", 0, "attempts after a timeout (0: one, -1: none)")
	flag.IntVar(&r.MemoryMiB, "m", 1024, "L1 memory, MiB")
	flag.IntVar(&r.CPUs, "smp", 2, "L1 CPUs")
	flag.StringVar(&r.WorkDir, "workdir", "", "keep consoles and shares here (default: a new temporary directory)")
	flag.Parse()

	switch {
	case *cmd != "" && flag.NArg() == 0:
		r.Script = *cmd
	case *cmd == "" && flag.NArg() == 1:
		b, err := os.ReadFile(flag.Arg(0))
		if err != nil {
			fmt.Fprintln(os.Stderr, "rigrun:", err)
			os.Exit(2)
		}
		r.Script = string(b)
	default:
		fmt.Fprintln(os.Stderr, "usage: rigrun [flags] (-c SCRIPT | SCRIPT-FILE)")
		flag.PrintDefaults()
		os.Exit(2)
	}
	r.Devices, r.QEMUArgs = devices, qemuArgs
	r.Env = map[string]string{}
	for _, kv := range env {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			fmt.Fprintf(os.Stderr, "rigrun: -e %q: want KEY=VALUE\n", kv)
			os.Exit(2)
		}
		r.Env[k] = v
	}
	r.Logf = func(f string, a ...any) { fmt.Fprintf(os.Stderr, f+"\n", a...) }

	res, err := r.Run(context.Background())
	if res != nil {
		fmt.Print(res.Log)
		fmt.Fprintf(os.Stderr, "rigrun: share %s; boot %.1fs, total %.1fs, attempts %d\n", res.OutDir, res.Boot.Seconds(), res.Duration.Seconds(), res.Attempts)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "rigrun:", err)
		os.Exit(125)
	}
	os.Exit(res.ExitCode)
}
