package integration

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/dmsandbox/dmsandbox/integration/rig"
)

// guestLib is bash sourced at the top of every rig script: check records a
// named result line that the host side turns into test failures, so a failed
// step names itself instead of hiding in a log.
const guestLib = `
set -u
FAILED=0
say() { echo "[$(cut -d' ' -f1 /proc/uptime)] $*"; }
check() { # check NAME PASS|FAIL [detail...]
	local name=$1 res=$2; shift 2
	echo "CHECK $name $res $*"
	[ "$res" = PASS ] || FAILED=1
}
# expect NAME CMD...: PASS when CMD succeeds, its output as the detail.
expect() {
	local name=$1 out; shift
	if out=$("$@" 2>&1); then check "$name" PASS "$(echo $out | head -c 300)"; else check "$name" FAIL "rc=$? $(echo $out | head -c 300)"; fi
}
find_dev() { # find_dev VENDOR:DEVICE [N]: the Nth (from 1) such BDF
	local n=0 d
	for d in /sys/bus/pci/devices/*; do
		if [ "$(cat $d/vendor):$(cat $d/device)" = "$1" ]; then
			n=$((n+1)); [ $n = "${2:-1}" ] && { basename $d; return; }
		fi
	done
}
drv() { basename "$(readlink /sys/bus/pci/devices/$1/driver 2>/dev/null)" 2>/dev/null || true; }
grp() { basename "$(readlink /sys/bus/pci/devices/$1/iommu_group)"; }
finish() { say "done, failed=$FAILED"; exit $FAILED; }
`

// runRig boots r with guestLib prepended to its script, logs the script's
// output and fails the test for every CHECK that did not pass, or for no
// CHECK at all (a script that died early must not look green).
func runRig(t *testing.T, r rig.Rig) *rig.Result {
	t.Helper()
	r.Script = guestLib + r.Script
	r.Logf = t.Logf
	if r.WorkDir == "" {
		r.WorkDir = t.TempDir()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	res, err := r.Run(ctx)
	if res != nil {
		t.Logf("L1 script log (attempts %d, boot %.1fs, total %.1fs):\n%s", res.Attempts, res.Boot.Seconds(), res.Duration.Seconds(), res.Log)
	}
	if err != nil {
		t.Fatalf("rig: %v", err)
	}
	checks := 0
	for _, line := range strings.Split(res.Log, "\n") {
		f := strings.Fields(line)
		if len(f) < 3 || f[0] != "CHECK" {
			continue
		}
		checks++
		if f[2] != "PASS" {
			t.Errorf("L1 check %s: %s", f[1], strings.Join(f[2:], " "))
		}
	}
	if checks == 0 {
		t.Errorf("L1 script reported no CHECK lines")
	}
	if res.ExitCode != 0 {
		t.Errorf("L1 script exit status %d", res.ExitCode)
	}
	return res
}
