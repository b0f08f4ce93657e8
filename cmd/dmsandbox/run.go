package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"time"

	"github.com/dmsandbox/dmsandbox/launcher"
)

func init() {
	register(command{Name: "run", Summary: "run a program (normally QEMU) confined, in the foreground", Run: runCmd})
	register(command{Name: launcher.ReaperCommand, Hidden: true, Run: launcher.RunReaper})
}

// stringList is a repeatable string flag.
type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

const runUsage = `usage: dmsandbox run --name NAME [--config FILE] [--profile P] [--index N]
                     [--device /dev/X]... [--vfio BDF]... [--env K=V]... [--no-qmp]
                     -- PROGRAM [ARGS...]

Runs PROGRAM confined in the foreground and exits with its exit status
(128+N when it died of signal N). A qemu-system-* PROGRAM also gets a
management QMP socket at RUN_DIR/NAME/qmp.sock (default /run/dmsandbox).
--vfio BDF (with --profile qemu-vfio) hands in a device bound to vfio-pci:
its group node and a synthetic /sys holding only its iommu_group link.

exit codes: PROGRAM's status (also when it exits before it is ready; a
program's own 2..5 cannot be told from these but for the "dmsandbox run:"
line the launcher prints on stderr for its own failures); 2 bad usage; 3 bad config; 4 NAME or index
in use; 5 the sandbox could not be built (nothing is left behind).
`

func runCmd(args []string) int {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	name := fs.String("name", "", "sandbox name")
	cfgPath := fs.String("config", "", "config file (JSON)")
	profile := fs.String("profile", "", "seccomp profile")
	index := fs.Int("index", -1, "uid index (default: lowest free)")
	noQMP := fs.Bool("no-qmp", false, "no management QMP socket")
	var devices, env, vfio stringList
	fs.Var(&devices, "device", "extra device node")
	fs.Var(&vfio, "vfio", "PCI device (BDF) bound to vfio-pci to pass through")
	fs.Var(&env, "env", "environment variable for PROGRAM")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Print(runUsage)
			return ExitOK
		}
		fmt.Fprintf(os.Stderr, "dmsandbox run: %v\n%s", err, runUsage)
		return ExitUsage
	}
	rest := fs.Args()
	if *name == "" {
		fmt.Fprintf(os.Stderr, "dmsandbox run: --name is required\n%s", runUsage)
		return ExitUsage
	}
	if len(rest) == 0 {
		fmt.Fprintf(os.Stderr, "dmsandbox run: missing PROGRAM after --\n%s", runUsage)
		return ExitUsage
	}
	cfg, err := launcher.LoadConfig(*cfgPath)
	if err != nil {
		fmt.Fprintf(os.Stderr, "dmsandbox run: %v\n", err)
		return ExitConfig
	}
	sigs := launcher.NotifySignals()
	defer signal.Stop(sigs)
	l := &launcher.Launcher{Config: cfg, Log: os.Stderr, Signals: sigs}
	sb, err := l.Start(launcher.Spec{Name: *name, Index: *index, Program: rest[0], Args: rest[1:],
		Env: env, Profile: *profile, ExtraDevices: devices, NoQMP: *noQMP, VFIO: vfio})
	if err != nil {
		fmt.Fprintf(os.Stderr, "dmsandbox run: %v\n", err)
		return exitCodeFor(err)
	}
	status := sb.SuperviseSignals(sigs, 10*time.Second)
	if err := sb.Close(); err != nil {
		fmt.Fprintf(os.Stderr, "dmsandbox run: cleanup: %v\n", err)
	}
	return status
}

// exitCodeFor maps the launcher's sentinel errors to documented codes.
func exitCodeFor(err error) int {
	var early *launcher.EarlyExitError
	switch {
	case errors.As(err, &early):
		return early.Status
	case errors.Is(err, launcher.ErrUsage):
		return ExitUsage
	case errors.Is(err, launcher.ErrConfig):
		return ExitConfig
	case errors.Is(err, launcher.ErrConflict):
		return ExitConflict
	default:
		return ExitSetup
	}
}
