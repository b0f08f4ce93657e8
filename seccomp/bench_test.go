package seccomp

import (
	"fmt"
	"strings"
	"testing"
)

// TestBenchRuns runs the seccomp benchmark at a tiny size: every child must
// load its filter and report every call. It asserts nothing about time.
func TestBenchRuns(t *testing.T) {
	if testing.Short() {
		t.Skip("re-executes the test binary")
	}
	var out strings.Builder
	if err := RunBench(&out, BenchConfig{Rounds: 1, Calls: 1000}); err != nil {
		t.Fatal(err)
	}
	for _, n := range Names() {
		if !strings.Contains(out.String(), n) {
			t.Errorf("no line for %s:\n%s", n, out.String())
		}
	}
	if strings.Contains(out.String(), "NaN") || strings.Contains(out.String(), "Inf") {
		t.Errorf("missing baseline:\n%s", out.String())
	}
	t.Log("\n" + out.String())
}

// BenchmarkFilters is the go test -bench entry point for the alternated
// child-process benchmark; each child times its own loop, so one iteration
// (-benchtime 1x, or the default: one run takes longer than 1 s) is enough.
// The table goes to stdout (b.Log truncates benchmark output).
func BenchmarkFilters(b *testing.B) {
	var out strings.Builder
	for b.Loop() {
		out.Reset()
		if err := RunBench(&out, BenchConfig{Rounds: 7, Calls: 200000}); err != nil {
			b.Fatal(err)
		}
	}
	fmt.Print(out.String())
}

// BenchmarkEvaluate measures the userspace evaluator on the ioctl path.
func BenchmarkEvaluate(b *testing.B) {
	p, err := Load("qemu-kvm")
	if err != nil {
		b.Fatal(err)
	}
	prog, err := p.BPF()
	if err != nil {
		b.Fatal(err)
	}
	d := ioctlData("KVM_RUN")
	for b.Loop() {
		Evaluate(prog, d)
	}
}
