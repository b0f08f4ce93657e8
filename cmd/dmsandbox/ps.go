package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/dmsandbox/dmsandbox/launcher"
)

func init() {
	register(command{Name: "ps", Summary: "list running sandboxes", Run: psCmd})
	register(command{Name: "inspect", Summary: "show the confinement of a sandbox, read from outside", Run: inspectCmd})
}

// runDirFlag adds --config and returns a function yielding the run dir.
func runDirFlag(fs *flag.FlagSet) func() (string, error) {
	cfgPath := fs.String("config", "", "config file (JSON)")
	return func() (string, error) {
		cfg, err := launcher.LoadConfig(*cfgPath)
		return cfg.RunDir, err
	}
}

func psCmd(args []string) int {
	fs := flag.NewFlagSet("ps", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	asJSON := fs.Bool("json", false, "JSON output")
	runDir := runDirFlag(fs)
	if err := fs.Parse(args); err != nil || fs.NArg() != 0 {
		fmt.Fprintln(os.Stderr, "usage: dmsandbox ps [--json] [--config FILE]")
		return ExitUsage
	}
	dir, err := runDir()
	if err != nil {
		fmt.Fprintf(os.Stderr, "dmsandbox ps: %v\n", err)
		return ExitConfig
	}
	states, err := launcher.List(dir)
	if err != nil {
		fmt.Fprintf(os.Stderr, "dmsandbox ps: %v\n", err)
		return ExitFailure
	}
	if *asJSON {
		if states == nil {
			states = []*launcher.State{}
		}
		return printJSON(states)
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "NAME\tPID\tUID\tPROFILE\tCGROUP\tSTARTED\tPROGRAM")
	for _, s := range states {
		fmt.Fprintf(w, "%s\t%d\t%d\t%s\t%s\t%s\t%s\n", s.Name, s.Pid, s.UID, s.Profile,
			s.CgroupMode, s.Started.Format("15:04:05"), s.Program)
	}
	w.Flush()
	return ExitOK
}

func inspectCmd(args []string) int {
	fs := flag.NewFlagSet("inspect", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	asJSON := fs.Bool("json", false, "JSON output")
	runDir := runDirFlag(fs)
	// Accept NAME before or after the flags.
	var name string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		name, args = args[0], args[1:]
	}
	if err := fs.Parse(args); err != nil {
		fmt.Fprintln(os.Stderr, "usage: dmsandbox inspect NAME [--json] [--config FILE]")
		return ExitUsage
	}
	if name == "" && fs.NArg() == 1 {
		name = fs.Arg(0)
	} else if fs.NArg() != 0 || name == "" {
		fmt.Fprintln(os.Stderr, "usage: dmsandbox inspect NAME [--json] [--config FILE]")
		return ExitUsage
	}
	dir, err := runDir()
	if err != nil {
		fmt.Fprintf(os.Stderr, "dmsandbox inspect: %v\n", err)
		return ExitConfig
	}
	in, err := launcher.Inspect(dir, name)
	if err != nil {
		fmt.Fprintf(os.Stderr, "dmsandbox inspect: %v\n", err)
		return ExitFailure
	}
	if *asJSON {
		return printJSON(in)
	}
	printInspection(os.Stdout, in)
	return ExitOK
}

func printInspection(out io.Writer, in *launcher.Inspection) {
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintf(w, "sandbox\t%s (pid %d, profile %s)\n", in.Name, in.Pid, in.Profile)
	fmt.Fprintf(w, "uid / gid\t%v / %v, groups %v\n", in.Uid, in.Gid, in.Groups)
	fmt.Fprintf(w, "capabilities\teff %s prm %s bnd %s amb %s\n", in.CapEff, in.CapPrm, in.CapBnd, in.CapAmb)
	fmt.Fprintf(w, "no_new_privs\t%d\n", in.NoNewPrivs)
	fmt.Fprintf(w, "seccomp\tmode %d, %d filter(s)\n", in.Seccomp, in.Filters)
	for _, ns := range []string{"mnt", "pid", "ipc", "uts", "net", "cgroup", "user"} {
		if n, ok := in.Namespaces[ns]; ok {
			shared := "own"
			if n.Shared {
				shared = "SHARED with host"
			}
			fmt.Fprintf(w, "ns %s\t%s (%s)\n", ns, n.ID, shared)
		}
	}
	fmt.Fprintf(w, "root\t%s\n", strings.Join(in.Root, " "))
	for _, fd := range in.SortedFds() {
		fmt.Fprintf(w, "fd %d\t%s\n", fd, in.Fds[fd])
	}
	for _, l := range []string{"Max file size", "Max core file size", "Max msgqueue size", "Max file locks",
		"Max processes", "Max open files", "Max locked memory"} {
		if v, ok := in.Limits[l]; ok {
			fmt.Fprintf(w, "rlimit %s\t%s / %s\n", strings.ToLower(strings.TrimPrefix(l, "Max ")), v.Soft, v.Hard)
		}
	}
	fmt.Fprintf(w, "cgroup\t%s, pid inside: %v\n", in.Cgroup.Mode, in.Cgroup.Member)
	for _, f := range sortedKeys(in.Cgroup.Files) {
		fmt.Fprintf(w, "  %s\t%s\n", f, strings.ReplaceAll(in.Cgroup.Files[f], "\n", "; "))
	}
	fmt.Fprintf(w, "  usage\tmemory %d bytes, pids %d\n", in.Cgroup.Stats.MemoryUsage, in.Cgroup.Stats.PidsCurrent)
	if in.QMPSocket != "" {
		fmt.Fprintf(w, "qmp\t%s\n", in.QMPSocket)
	}
	w.Flush()
}

func sortedKeys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func printJSON(v any) int {
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		fmt.Fprintf(os.Stderr, "dmsandbox: %v\n", err)
		return ExitFailure
	}
	return ExitOK
}
