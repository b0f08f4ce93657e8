package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"time"

	"github.com/digitalocean/go-qemu/qemu"
	"github.com/digitalocean/go-qemu/qmp"
	"github.com/dmsandbox/dmsandbox/launcher"
)

func init() {
	register(command{Name: "demo", Summary: "launch a real QEMU confined with the built-in defaults, show it, stop it", Run: demoCmd})
}

// demoCmd is `make demo`: the main job on a fresh machine, no Xen needed.
// It starts QEMU (KVM when /dev/kvm works, else TCG) running SeaBIOS in
// the default sandbox, prints the confinement as the kernel reports it
// from outside, does a QMP round trip, and shuts QEMU down over QMP.
func demoCmd(args []string) int {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	cfgPath := fs.String("config", "", "config file (default: built-in)")
	name := fs.String("name", "demo", "sandbox name")
	if err := fs.Parse(args); err != nil || fs.NArg() != 0 {
		fmt.Fprintln(os.Stderr, "usage: dmsandbox demo [--config FILE] [--name NAME]")
		return ExitUsage
	}
	cfg, err := launcher.LoadConfig(*cfgPath)
	if err != nil {
		fmt.Fprintf(os.Stderr, "dmsandbox demo: %v\n", err)
		return ExitConfig
	}
	qemuBin, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		fmt.Fprintln(os.Stderr, "dmsandbox demo: qemu-system-x86_64 not found (apt-get install qemu-system-x86)")
		return ExitFailure
	}
	accel := "tcg"
	if f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0); err == nil {
		f.Close()
		accel = "kvm"
	}
	qemuArgs := []string{"-display", "none", "-nodefaults", "-machine", "q35", "-accel", accel, "-m", "128"}
	fmt.Printf("== starting %s %v confined (accel %s)\n", qemuBin, qemuArgs, accel)
	l := &launcher.Launcher{Config: cfg, Log: os.Stdout}
	start := time.Now()
	sb, err := l.Start(launcher.Spec{Name: *name, Index: -1, Program: qemuBin, Args: qemuArgs})
	if err != nil {
		fmt.Fprintf(os.Stderr, "dmsandbox demo: %v\n", err)
		return exitCodeFor(err)
	}
	defer sb.Close()
	fmt.Printf("== ready (QMP answered) in %v\n\n", time.Since(start).Round(time.Millisecond))

	in, err := launcher.Inspect(cfg.RunDir, *name)
	if err != nil {
		fmt.Fprintf(os.Stderr, "dmsandbox demo: inspect: %v\n", err)
		return ExitFailure
	}
	fmt.Println("== confinement, read from outside (/proc, cgroupfs)")
	printInspection(os.Stdout, in)

	fmt.Println("\n== QMP round trip (go-qemu) on", sb.State.QMPSocket)
	mon, err := launcher.DialQMP(sb.State.QMPSocket, 5*time.Second)
	if err != nil {
		fmt.Fprintf(os.Stderr, "dmsandbox demo: %v\n", err)
		return ExitFailure
	}
	dom, err := qemu.NewDomain(mon, *name)
	if err != nil {
		fmt.Fprintf(os.Stderr, "dmsandbox demo: %v\n", err)
		return ExitFailure
	}
	ver, _ := dom.Version()
	time.Sleep(time.Second) // let SeaBIOS run a little
	st, err := dom.Status()
	if err != nil {
		fmt.Fprintf(os.Stderr, "dmsandbox demo: query-status: %v\n", err)
		return ExitFailure
	}
	fmt.Printf("QEMU %s, status %v\n", ver, st)
	fmt.Println("\n== shutting down (QMP quit)")
	dom.Run(qmp.Command{Execute: "quit"})
	dom.Close()
	select {
	case <-sb.Exited():
	case <-time.After(10 * time.Second):
		fmt.Println("QEMU did not quit within 10 s; killing the sandbox")
	}
	status := sb.Stop(time.Second)
	if err := sb.Close(); err != nil {
		fmt.Fprintf(os.Stderr, "dmsandbox demo: cleanup: %v\n", err)
		return ExitFailure
	}
	fmt.Printf("QEMU exit status %d; cgroup and %s/%s removed\n", status, cfg.RunDir, *name)
	if status != 0 {
		return ExitFailure
	}
	return ExitOK
}
