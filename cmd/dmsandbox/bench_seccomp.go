package main

import (
	"io"

	"github.com/dmsandbox/dmsandbox/seccomp"
)

// seccompBench runs the seccomp benchmark (per-syscall cost of every
// compiled profile, runc's layout and the linear chain, against no filter
// in the same run) and writes its table to w. It is reachable as
// `dmsandbox seccomp bench`; a top-level `dmsandbox bench` can call it too.
//
// The children it starts are this binary re-executed with an environment
// variable that the seccomp package's init recognises (see seccomp/bench.go).
func seccompBench(w io.Writer) error {
	return seccomp.RunBench(w, seccomp.BenchConfig{Rounds: 7, Calls: 200000})
}
