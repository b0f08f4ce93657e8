package launcher

import (
	"os"
	"os/signal"
	"syscall"
	"time"
)

// ForwardedSignals are relayed to the confined program. SIGHUP is what
// libxl sends the device model on `xl destroy`; SIGTERM and SIGINT are the
// usual ways a person or a service manager stops a foreground program.
var ForwardedSignals = []os.Signal{syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT}

// Supervise relays ForwardedSignals to the program until it exits. After
// the first forwarded signal the program has grace to exit on its own
// (QEMU quits on all three); then every process of the cgroup is killed.
// The program is pid 1 of its namespace, which ignores any signal it has
// no handler for, so the grace kill is what ends a program that ignores
// them. It returns the exit status (code, or 128+signal).
func (sb *Sandbox) Supervise(grace time.Duration) int {
	sigs := NotifySignals()
	defer signal.Stop(sigs)
	return sb.SuperviseSignals(sigs, grace)
}

// NotifySignals starts catching ForwardedSignals. Call it before Start so
// that a signal arriving while the sandbox is being built is not the Go
// default (an immediate exit, leaving the cleanup to the reaper) but is
// forwarded as soon as the program runs.
func NotifySignals() chan os.Signal {
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, ForwardedSignals...)
	return sigs
}

// SuperviseSignals is Supervise with signals from a channel made by
// NotifySignals.
func (sb *Sandbox) SuperviseSignals(sigs <-chan os.Signal, grace time.Duration) int {
	var deadline <-chan time.Time
	for {
		select {
		case <-sb.exited:
			return sb.Wait()
		case sig := <-sigs:
			sb.Signal(sig)
			if deadline == nil {
				deadline = time.After(grace)
			}
		case <-deadline:
			sb.cg.Kill(10 * time.Second)
			deadline = nil
		}
	}
}
