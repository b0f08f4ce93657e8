package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"github.com/dmsandbox/dmsandbox/seccomp"
	"io"
	"os"
	"sort"
	"time"
)

// A bench measures one figure against a baseline measured in the same
// run, alternating the two so that drift of the machine hits both alike,
// and prints medians and their ratio. Each area registers its own.
type bench struct {
	name string
	run  func(w io.Writer, quick bool) error
}

var benches []bench

func registerBench(name string, run func(w io.Writer, quick bool) error) {
	benches = append(benches, bench{name, run})
}

func init() {
	register(command{Name: "bench", Summary: "measure costs against same-run baselines (make bench)", Run: benchCmd})
}

func benchCmd(args []string) int {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	quick := fs.Bool("quick", false, "fewer iterations (for tests; figures are noisier)")
	if err := fs.Parse(args); err != nil {
		fmt.Fprintln(os.Stderr, "usage: dmsandbox bench [--quick] [NAME...]")
		return ExitUsage
	}
	want := map[string]bool{}
	for _, n := range fs.Args() {
		want[n] = true
	}
	sort.Slice(benches, func(i, j int) bool { return benches[i].name < benches[j].name })
	status := ExitOK
	ran := 0
	for _, b := range benches {
		if len(want) > 0 && !want[b.name] {
			continue
		}
		ran++
		fmt.Printf("== %s\n", b.name)
		if err := b.run(os.Stdout, *quick); err != nil {
			fmt.Fprintf(os.Stderr, "dmsandbox bench %s: %v\n", b.name, err)
			status = ExitFailure
		}
		fmt.Println()
	}
	if ran == 0 {
		fmt.Fprintf(os.Stderr, "dmsandbox bench: no benchmark named %v\n", fs.Args())
		return ExitUsage
	}
	return status
}

// median of durations (sorted copy).
func median(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

func writeJSONFile(path string, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, data, 0o600)
}

// The other areas' benchmarks, each its own subcommand too
// (`dmsandbox seccomp bench`, `dmsandbox broker bench`).
func init() {
	registerBench("seccomp", func(w io.Writer, quick bool) error {
		if quick {
			return seccomp.RunBench(w, seccomp.BenchConfig{Rounds: 3, Calls: 20000})
		}
		return seccompBench(w)
	})
	registerBench("broker", func(w io.Writer, quick bool) error {
		args := []string{}
		if quick {
			args = []string{"-n", "2000", "--duration", "300ms"}
		}
		if code := brokerBench(args); code != ExitOK {
			return fmt.Errorf("broker bench exited %d", code)
		}
		return nil
	})
}
