// Command imagerun is `dmsandbox run` with launcher.Spec.Images, for the
// real-container tests of disk images (integration/container/images_test.go):
// the CLI has no option for them, since only DM mode exposes images (the
// qdisk backends libxl wrote to xenstore).
//
//	imagerun -config CFG -name NAME -image /var/lib/a.img [-image /srv/b.img:ro] -- PROGRAM ARGS...
//
// Exit status as `dmsandbox run`: the program's, or 2 usage, 5 setup.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"time"

	"github.com/dmsandbox/dmsandbox/launcher"
	"github.com/opencontainers/runc/libcontainer"
	_ "github.com/opencontainers/runc/libcontainer/nsenter" // runc's init, as in cmd/dmsandbox/runcinit.go
)

func init() {
	runtime.LockOSThread()
	if len(os.Args) > 1 && os.Args[1] == "init" {
		runtime.GOMAXPROCS(1)
		libcontainer.Init()
	}
	if len(os.Args) > 1 && os.Args[1] == launcher.ReaperCommand { // the launcher re-executes itself as its reaper
		os.Exit(launcher.RunReaper(os.Args[2:]))
	}
}

type images []launcher.Image

func (l *images) String() string { return fmt.Sprint(*l) }
func (l *images) Set(s string) error {
	p, ro := strings.CutSuffix(s, ":ro")
	*l = append(*l, launcher.Image{Path: p, ReadOnly: ro})
	return nil
}

func main() {
	var imgs images
	cfgPath := flag.String("config", "", "launcher config")
	name := flag.String("name", "", "sandbox name")
	profile := flag.String("profile", "", "seccomp profile")
	flag.Var(&imgs, "image", "disk image PATH or PATH:ro (repeatable)")
	flag.Parse()
	if *name == "" || flag.NArg() == 0 {
		flag.Usage()
		os.Exit(2)
	}
	cfg, err := launcher.LoadConfig(*cfgPath)
	if err != nil {
		fmt.Fprintf(os.Stderr, "imagerun: %v\n", err)
		os.Exit(3)
	}
	sigs := launcher.NotifySignals()
	defer signal.Stop(sigs)
	l := &launcher.Launcher{Config: cfg, Log: os.Stderr, Signals: sigs}
	sb, err := l.Start(launcher.Spec{Name: *name, Index: -1, Program: flag.Arg(0), Args: flag.Args()[1:],
		Profile: *profile, Images: imgs})
	if err != nil {
		fmt.Fprintf(os.Stderr, "imagerun: %v\n", err)
		os.Exit(5)
	}
	status := sb.SuperviseSignals(sigs, 10*time.Second)
	if err := sb.Close(); err != nil {
		fmt.Fprintf(os.Stderr, "imagerun: cleanup: %v\n", err)
	}
	os.Exit(status)
}
