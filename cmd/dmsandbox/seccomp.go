package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"

	"github.com/dmsandbox/dmsandbox/seccomp"
	"golang.org/x/net/bpf"
)

// dmsandbox seccomp: inspect the built-in profiles and the filters compiled
// from them, and turn kernel seccomp records into proposed rules.
//
// Exit codes: ExitOK (0) when the command did its job (check prints the
// verdict and exits 0 whatever the verdict is); ExitUsage (2) for bad
// arguments, an unknown profile or syscall; ExitFailure (1) when a profile
// does not compile or an input cannot be read.
func init() {
	register(command{Name: "seccomp", Summary: "list, show and check seccomp profiles; propose rules from kernel log", Run: seccompMain})
}

const seccompUsage = `usage: dmsandbox seccomp list
       dmsandbox seccomp show [-log] [-bpf] PROFILE
       dmsandbox seccomp check [-log] [-self-pid N] [-arch x86_64|x32|i386] PROFILE SYSCALL [ARG...]
       dmsandbox seccomp propose [-profile PROFILE] [-pid N] [FILE]   (kernel log lines; stdin without FILE)
       dmsandbox seccomp exec [-log] PROFILE -- COMMAND [ARG...]
       dmsandbox seccomp bench   (per-syscall cost of each compiled filter vs none)

exec installs PROFILE in this process (no_new_privs; kill and tgkill only
towards its own pid, which the command keeps) and executes COMMAND: a
discovery and test aid without the launcher's sandbox.

ARG is a number, a symbol expression (AF_UNIX, CLONE_VM|CLONE_THREAD) or an
ioctl request name (KVM_RUN). check prints what the compiled filter does:
allow, errno N (NAME), kill_process, kill_thread, log.`

func seccompMain(args []string) int {
	if len(args) == 0 {
		fmt.Fprintln(os.Stderr, seccompUsage)
		return ExitUsage
	}
	switch args[0] {
	case "list":
		return seccompList(os.Stdout)
	case "show":
		return seccompShow(os.Stdout, args[1:])
	case "check":
		return seccompCheck(os.Stdout, args[1:])
	case "propose":
		return seccompPropose(os.Stdout, args[1:])
	case "exec":
		return seccompExec(args[1:])
	case "bench":
		if err := seccompBench(os.Stdout); err != nil {
			fmt.Fprintf(os.Stderr, "dmsandbox seccomp bench: %v\n", err)
			return ExitFailure
		}
		return ExitOK
	case "-h", "--help", "help":
		fmt.Println(seccompUsage)
		return ExitOK
	}
	fmt.Fprintf(os.Stderr, "dmsandbox seccomp: unknown subcommand %q\n%s\n", args[0], seccompUsage)
	return ExitUsage
}

func seccompList(w io.Writer) int {
	for _, n := range seccomp.Names() {
		p, err := seccomp.Load(n)
		if err != nil {
			fmt.Fprintf(os.Stderr, "dmsandbox seccomp: %v\n", err)
			return ExitFailure
		}
		fmt.Fprintf(w, "%-10s %s\n", n, p.Summary())
	}
	return ExitOK
}

// loadForCLI maps Load's errors to exit codes.
func loadForCLI(name string, opts ...seccomp.Option) (*seccomp.Profile, int) {
	p, err := seccomp.Load(name, opts...)
	if err == nil {
		return p, ExitOK
	}
	fmt.Fprintf(os.Stderr, "dmsandbox seccomp: %v\n", err)
	if errors.Is(err, seccomp.ErrUnknownProfile) {
		return nil, ExitUsage
	}
	return nil, ExitFailure
}

func seccompShow(w io.Writer, args []string) int {
	fs := flag.NewFlagSet("seccomp show", flag.ContinueOnError)
	logMode := fs.Bool("log", false, "log mode (default action log)")
	dump := fs.Bool("bpf", false, "print the compiled program")
	if err := fs.Parse(args); err != nil || fs.NArg() != 1 {
		fmt.Fprintln(os.Stderr, seccompUsage)
		return ExitUsage
	}
	var opts []seccomp.Option
	if *logMode {
		opts = append(opts, seccomp.LogMode())
	}
	p, code := loadForCLI(fs.Arg(0), opts...)
	if p == nil {
		return code
	}
	prog, err := p.BPF()
	if err != nil {
		fmt.Fprintf(os.Stderr, "dmsandbox seccomp: %v\n", err)
		return ExitFailure
	}
	def := "kill_process"
	if p.LogMode() {
		def = "log"
	}
	rs := p.Rules()
	fmt.Fprintf(w, "profile %s: %s\n", p.Name(), p.Summary())
	fmt.Fprintf(w, "parts: %s\n", strings.Join(p.Parts(), " <- "))
	fmt.Fprintf(w, "default: %s; %d rules over %d syscalls; %d BPF instructions\n\n", def, rs.Len(), len(rs.Syscalls()), len(prog))
	from := ""
	for _, r := range rs.All() {
		if r.From != from {
			from = r.From
			fmt.Fprintf(w, "# %s\n", from)
		}
		fmt.Fprintf(w, "  %-18s %s%s\n", r.Syscall, ruleAction(r), ruleConds(r))
	}
	fmt.Fprintln(w, "\nwhy:")
	seen := map[string]bool{}
	for _, r := range rs.All() {
		key := r.From + "\x00" + r.Why
		if seen[key] {
			continue
		}
		seen[key] = true
		fmt.Fprintf(w, "  [%s] %s\n", r.From, r.Why)
	}
	if *dump {
		fmt.Fprintln(w, "\nbpf:")
		for i, ins := range prog {
			fmt.Fprintf(w, "  %4d  %v\n", i, bpf.Instruction(ins.Disassemble()))
		}
	}
	return ExitOK
}

func ruleAction(r seccomp.Rule) string {
	if r.Action == seccomp.ActErrno {
		return fmt.Sprintf("errno %d", r.Errno)
	}
	return "allow"
}

func ruleConds(r seccomp.Rule) string {
	var b strings.Builder
	for _, c := range r.Args {
		fmt.Fprintf(&b, "  arg%d %s %s", c.Index, c.Op, c.Text)
	}
	return b.String()
}

func seccompCheck(w io.Writer, args []string) int {
	fs := flag.NewFlagSet("seccomp check", flag.ContinueOnError)
	logMode := fs.Bool("log", false, "log mode (default action log)")
	selfPID := fs.Int("self-pid", 0, "compile with SelfPID(N)")
	arch := fs.String("arch", "x86_64", "x86_64, x32 or i386")
	if err := fs.Parse(args); err != nil || fs.NArg() < 2 {
		fmt.Fprintln(os.Stderr, seccompUsage)
		return ExitUsage
	}
	var opts []seccomp.Option
	if *logMode {
		opts = append(opts, seccomp.LogMode())
	}
	if *selfPID > 0 {
		opts = append(opts, seccomp.SelfPID(*selfPID))
	}
	p, code := loadForCLI(fs.Arg(0), opts...)
	if p == nil {
		return code
	}
	d, err := seccomp.CheckData(*arch, fs.Arg(1), fs.Args()[2:])
	if err != nil {
		fmt.Fprintf(os.Stderr, "dmsandbox seccomp check: %v\n", err)
		return ExitUsage
	}
	v, err := p.Check(d)
	if err != nil {
		fmt.Fprintf(os.Stderr, "dmsandbox seccomp check: %v\n", err)
		return ExitFailure
	}
	fmt.Fprintln(w, v)
	return ExitOK
}

func seccompPropose(w io.Writer, args []string) int {
	fs := flag.NewFlagSet("seccomp propose", flag.ContinueOnError)
	profile := fs.String("profile", "", "profile the records were taken under (marks syscalls it allows for some arguments)")
	pid := fs.Int("pid", 0, "keep only the records of this pid")
	if err := fs.Parse(args); err != nil || fs.NArg() > 1 {
		fmt.Fprintln(os.Stderr, seccompUsage)
		return ExitUsage
	}
	var p *seccomp.Profile
	if *profile != "" {
		var code int
		if p, code = loadForCLI(*profile); p == nil {
			return code
		}
	}
	in := io.Reader(os.Stdin)
	if fs.NArg() == 1 {
		f, err := os.Open(fs.Arg(0))
		if err != nil {
			fmt.Fprintf(os.Stderr, "dmsandbox seccomp propose: %v\n", err)
			return ExitFailure
		}
		defer f.Close()
		in = f
	}
	recs, suppressed, err := seccomp.ReadAuditRecords(in)
	if err != nil {
		fmt.Fprintf(os.Stderr, "dmsandbox seccomp propose: read: %v\n", err)
		return ExitFailure
	}
	if *pid > 0 {
		kept := recs[:0]
		for _, r := range recs {
			if r.PID == *pid {
				kept = append(kept, r)
			}
		}
		recs = kept
	}
	props, foreign := seccomp.Propose(recs, p)
	fmt.Fprintf(w, "# %d seccomp records, %d syscalls to review\n", len(recs), len(props))
	if suppressed > 0 {
		fmt.Fprintf(w, "# WARNING: the kernel dropped %d audit records (printk rate limit): the list is incomplete;\n"+
			"#          rerun with sysctl -w kernel.printk_ratelimit=0 (restore it after) or with auditd\n", suppressed)
	}
	for _, f := range foreign {
		fmt.Fprintf(w, "# not allowable (foreign ABI): %v\n", f)
	}
	for _, pr := range props {
		if pr.Note != "" {
			fmt.Fprintf(w, "# %s: %s (%d records from %s)\n", pr.Syscall, pr.Note, pr.Count, strings.Join(pr.Comms, ", "))
			continue
		}
		rule := map[string]any{
			"syscalls": []string{pr.Syscall},
			"why":      fmt.Sprintf("TODO: which code path? seen %d times from %s", pr.Count, strings.Join(pr.Comms, ", ")),
		}
		b, _ := json.Marshal(rule)
		fmt.Fprintf(w, "%s,\n", b)
	}
	return ExitOK
}

// seccompExec loads a profile into this process and executes the command
// under it. exec keeps the pid, so SelfPID(own pid) holds for the command.
func seccompExec(args []string) int {
	fs := flag.NewFlagSet("seccomp exec", flag.ContinueOnError)
	logMode := fs.Bool("log", false, "log mode (default action log)")
	if err := fs.Parse(args); err != nil || fs.NArg() < 2 {
		fmt.Fprintln(os.Stderr, seccompUsage)
		return ExitUsage
	}
	cmd := fs.Args()[1:]
	if cmd[0] == "--" {
		cmd = cmd[1:]
	}
	if len(cmd) == 0 {
		fmt.Fprintln(os.Stderr, seccompUsage)
		return ExitUsage
	}
	path, err := exec.LookPath(cmd[0])
	if err != nil {
		fmt.Fprintf(os.Stderr, "dmsandbox seccomp exec: %v\n", err)
		return ExitUsage
	}
	opts := []seccomp.Option{seccomp.SelfPID(os.Getpid())}
	if *logMode {
		opts = append(opts, seccomp.LogMode())
	}
	p, code := loadForCLI(fs.Arg(0), opts...)
	if p == nil {
		return code
	}
	if err := p.Install(); err != nil {
		fmt.Fprintf(os.Stderr, "dmsandbox seccomp exec: %v\n", err)
		return ExitFailure
	}
	err = syscall.Exec(path, cmd, os.Environ())
	// Only reached when execve failed (the filter allows execve).
	fmt.Fprintf(os.Stderr, "dmsandbox seccomp exec: %s: %v\n", path, err)
	return ExitFailure
}
