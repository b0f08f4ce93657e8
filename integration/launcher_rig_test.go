package integration

import (
	"testing"
	"time"

	"github.com/dmsandbox/dmsandbox/integration/rig"
)

// TestLauncherCgroupV2Rig runs the launcher where the cgroup layout is
// pure cgroup2 (this host is v1/v2 hybrid, so v2 is proven in L1): QEMU
// starts confined, its cgroup2 directory carries the configured limits and
// the device program, it is the only member, and a stop removes it all.
func TestLauncherCgroupV2Rig(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a nested VM (about 30 s); skipped with -short")
	}
	rig.SkipIfNoRig(t)
	bin := buildDmsandbox(t)
	runRig(t, rig.Rig{
		Cgroup:  "v2",
		Timeout: 3 * time.Minute,
		Env:     map[string]string{"DMS": bin},
		Script:  launcherV2Scenario,
	})
}

const launcherV2Scenario = `
cat > /tmp/v2.json <<'CFG'
{"version":1,"cgroup":{"memory_bytes":268435456,"pids":100,"cpu_quota_us":50000,"cpu_period_us":100000,"cpu_shares":1024}}
CFG
$DMS run --config /tmp/v2.json --name v2q -- /usr/bin/qemu-system-x86_64 -S -display none -nodefaults -machine q35 -accel tcg -m 64 > /tmp/v2q.log 2>&1 &
L=$!
for i in $(seq 300); do grep -q "dmsandbox: v2q: pid" /tmp/v2q.log && break; kill -0 $L 2>/dev/null || break; sleep 0.2; done
cat /tmp/v2q.log
$DMS inspect v2q --json > /tmp/v2q.json 2>&1
cat /tmp/v2q.json
PID=$(sed -n 's/^  "pid": \([0-9]*\),/\1/p' /tmp/v2q.json)
DIR=$(sed -n 's/^ *"": "\(.*\)"$/\1/p' /tmp/v2q.json | head -1)
say "pid=$PID dir=$DIR"
expect v2-mode grep -q '"mode": "v2"' /tmp/v2q.json
expect v2-dir test -d "$DIR"
expect v2-memory-max sh -c "test \$(cat $DIR/memory.max) = 268435456"
expect v2-swap-max sh -c "test \$(cat $DIR/memory.swap.max) = 0"
expect v2-pids-max sh -c "test \$(cat $DIR/pids.max) = 100"
expect v2-cpu-max sh -c "grep -qx '50000 100000' $DIR/cpu.max"
expect v2-member sh -c "grep -qx $PID $DIR/cgroup.procs"
expect v2-device-program grep -Eq '"device_programs": [1-9]' /tmp/v2q.json
expect uid-not-root sh -c "test \$(awk '/^Uid/{print \$2}' /proc/$PID/status) -ne 0"
expect seccomp-filter sh -c "grep -qx 'Seccomp:	2' /proc/$PID/status"
kill -TERM $L
wait $L
say "launcher exit $?"
expect v2-dir-removed sh -c "! test -e $DIR"
expect process-gone sh -c "! test -e /proc/$PID || grep -q '^State:.*Z' /proc/$PID/status"
expect run-dir-removed sh -c "! test -e /run/dmsandbox/v2q"

# SIGKILL of the launcher: the reaper kills through cgroup.kill and removes all.
$DMS run --config /tmp/v2.json --name v2k -- /usr/bin/qemu-system-x86_64 -S -display none -nodefaults -machine q35 -accel tcg -m 64 > /tmp/v2k.log 2>&1 &
L=$!
for i in $(seq 300); do grep -q "dmsandbox: v2k: pid" /tmp/v2k.log && break; kill -0 $L 2>/dev/null || break; sleep 0.2; done
PID=$(sed -n 's/.*"pid": \([0-9]*\),.*/\1/p' /run/dmsandbox/v2k/state.json | head -1)
KDIR=$(sed -n 's/^ *"": "\(.*\)"$/\1/p' /run/dmsandbox/v2k/state.json | head -1)
say "v2k pid=$PID dir=$KDIR"
kill -9 $L
for i in $(seq 50); do test -e "$KDIR" || break; sleep 0.2; done
expect kill-dir-removed sh -c "test -n '$KDIR' && ! test -e '$KDIR'"
expect kill-process-gone sh -c "test -n '$PID' && { ! test -e /proc/$PID || grep -q '^State:.*Z' /proc/$PID/status; }"
expect kill-run-dir-removed sh -c "! test -e /run/dmsandbox/v2k"
finish
`
