package rig

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// fakeQEMU stands in for qemu-system-x86_64 to test the timeout and retry
// logic without booting anything: its first $FAKE_HANGS invocations hang
// (like an L1 in an RCU stall), later ones behave like a finished L1 —
// print the script-start marker, write a log and the exit status into the
// writable share named on the command line.
const fakeQEMU = `#!/bin/sh
for a; do case $a in local,path=*,mount_tag=rigout,*) out=${a#local,path=}; out=${out%%,mount_tag=rigout*};; esac; done
n=$(cat "$FAKE_COUNTER" 2>/dev/null || echo 0); n=$((n+1)); echo $n > "$FAKE_COUNTER"
if [ "$n" -le "$FAKE_HANGS" ]; then echo "RIG: stage1 start"; exec sleep 600; fi
echo "RIG: script start"
[ "$FAKE_STATUS" = none ] && exit 0
echo "fake log $n" > "$out/script.log"
echo "$FAKE_STATUS" > "$out/exit-status"
[ "${FAKE_HANG_AFTER:-}" = 1 ] && exec sleep 600
exit 0
`

func runFake(t *testing.T, hangs int, status string, r Rig) (*Result, int, error) {
	t.Helper()
	dir := t.TempDir()
	q := filepath.Join(dir, "fake-qemu")
	if err := os.WriteFile(q, []byte(fakeQEMU), 0o755); err != nil {
		t.Fatal(err)
	}
	counter := filepath.Join(dir, "count")
	t.Setenv("DMSANDBOX_RIG_QEMU", q)
	t.Setenv("FAKE_COUNTER", counter)
	t.Setenv("FAKE_HANGS", strconv.Itoa(hangs))
	t.Setenv("FAKE_STATUS", status)
	r.WorkDir = filepath.Join(dir, "work")
	r.Timeout = time.Second
	r.Logf = t.Logf
	b := bootFiles{kernel: &Kernel{Release: "0-fake", Root: dir}, initramfs: filepath.Join(dir, "initrd")}
	res, err := r.runAttempts(context.Background(), dir, b)
	n, _ := os.ReadFile(counter)
	calls, _ := strconv.Atoi(string(n[:len(n)-1]))
	return res, calls, err
}

func TestRetryAfterTimeout(t *testing.T) {
	res, calls, err := runFake(t, 1, "3", Rig{})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if calls != 2 || res.Attempts != 2 {
		t.Errorf("qemu started %d times, Attempts %d; want 2 and 2", calls, res.Attempts)
	}
	if res.ExitCode != 3 || res.Log != "fake log 2\n" {
		t.Errorf("result exit %d log %q; want 3 and the second attempt's log", res.ExitCode, res.Log)
	}
	if filepath.Base(filepath.Dir(res.OutDir)) != "attempt-2" {
		t.Errorf("OutDir %s is not the second attempt's", res.OutDir)
	}
}

func TestTimeoutEveryAttempt(t *testing.T) {
	res, calls, err := runFake(t, 5, "0", Rig{})
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("err = %v; want ErrTimeout", err)
	}
	if calls != 2 || res.Attempts != 2 {
		t.Errorf("qemu started %d times, Attempts %d; want one retry", calls, res.Attempts)
	}
}

func TestNoRetryWhenDisabled(t *testing.T) {
	_, calls, err := runFake(t, 1, "0", Rig{Retries: -1})
	if !errors.Is(err, ErrTimeout) || calls != 1 {
		t.Errorf("err %v after %d starts; want ErrTimeout after 1", err, calls)
	}
}

// An L1 that ends without an exit status (panic, init failure) is an error
// and not retried: it is not the flake the retry is for.
func TestNoExitStatusIsAnError(t *testing.T) {
	_, calls, err := runFake(t, 0, "none", Rig{})
	if err == nil || errors.Is(err, ErrTimeout) || calls != 1 {
		t.Errorf("err %v after %d starts; want a non-timeout error after 1", err, calls)
	}
}

// A deadline that strikes after the script finished (L1 slow to power off)
// keeps the script's result and is not retried.
func TestTimeoutAfterScriptFinished(t *testing.T) {
	t.Setenv("FAKE_HANG_AFTER", "1")
	res, calls, err := runFake(t, 0, "7", Rig{})
	if err != nil || calls != 1 || res.ExitCode != 7 {
		t.Errorf("err %v, %d starts, exit %v; want no error, 1 start, exit 7", err, calls, res)
	}
}
