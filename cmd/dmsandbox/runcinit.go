package main

import (
	"os"
	"runtime"

	"github.com/opencontainers/runc/libcontainer"
	// nsenter's C constructor joins/creates the namespaces of runc's init
	// before the Go runtime starts; it does nothing in other processes.
	_ "github.com/opencontainers/runc/libcontainer/nsenter"
)

func init() {
	// Keep the main goroutine on the main thread: runc forks the
	// container init from the calling thread, and a parent-death signal
	// fires when that *thread* exits; also, a runc goroutine could
	// otherwise leave the main thread in the container's mount namespace.
	runtime.LockOSThread()
	if len(os.Args) > 1 && os.Args[1] == "init" {
		// runc re-executed us as the container's init.
		runtime.GOMAXPROCS(1)
		libcontainer.Init() // never returns
	}
}
