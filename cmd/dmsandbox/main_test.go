package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
)

// TestMain lets the tests run this test binary as dmsandbox itself: a
// child started with one of these variables plays that role and exits
// before any test runs — a broker daemon on the captured tree
// (DMSANDBOX_DAEMON_DIR, or DMSANDBOX_AUTHZ_DAEMON_DIR with
// --require-authorization), one CLI call (DMSANDBOX_CLI_ARGS, a JSON
// argv), or the dmsandbox the hotplug script runs (DMSANDBOX_CONTRIB_HELPER,
// argv as given).
func TestMain(m *testing.M) {
	switch {
	case os.Getenv("DMSANDBOX_CONTRIB_HELPER") == "1":
		os.Exit(run(os.Args[1:]))
	case os.Getenv("DMSANDBOX_DAEMON_DIR") != "":
		os.Exit(brokerCmd(testDaemonArgs(os.Getenv("DMSANDBOX_DAEMON_DIR"))))
	case os.Getenv("DMSANDBOX_AUTHZ_DAEMON_DIR") != "":
		os.Exit(brokerCmd(append(testDaemonArgs(os.Getenv("DMSANDBOX_AUTHZ_DAEMON_DIR")), "--require-authorization")))
	case os.Getenv("DMSANDBOX_CLI_ARGS") != "":
		var args []string
		if err := json.Unmarshal([]byte(os.Getenv("DMSANDBOX_CLI_ARGS")), &args); err != nil || len(args) == 0 {
			os.Exit(99)
		}
		os.Exit(commands[args[0]].Run(args[1:]))
	}
	os.Exit(m.Run())
}

// testDaemonArgs runs the daemon (vfio backend) on the captured tree with
// its sockets and state under dir.
func testDaemonArgs(dir string) []string {
	return []string{"run", "--backend", "vfio", "--sysfs-root", capturedTree,
		"--socket", filepath.Join(dir, "run", "broker.sock"), "--audit-dir", filepath.Join(dir, "audit"),
		"--state-dir", filepath.Join(dir, "state"), "--pci-state-dir", filepath.Join(dir, "pci"),
		"--lock-dir", filepath.Join(dir, "locks")}
}
