package main

import (
	"path/filepath"
	"testing"

	"github.com/dmsandbox/dmsandbox/pci/backend/fake"
	"github.com/dmsandbox/dmsandbox/pci/broker"
)

// testBroker is an embedded broker (broker code, fake backend on the
// captured tree) serving a real control socket, for the tests of the
// commands that talk to a broker daemon. Everything stops at the test's end.
type testBroker struct {
	dir, sock string
	be        *fake.Backend
	e         *broker.Embedded
}

func serveTestBroker(t *testing.T, requireAuthorization bool) *testBroker {
	t.Helper()
	dir := t.TempDir()
	be, err := fake.New(capturedTree, "")
	if err != nil {
		t.Fatal(err)
	}
	e, err := broker.NewEmbedded(broker.EmbeddedConfig{Backend: be, SysfsRoot: capturedTree,
		AuditDir: filepath.Join(dir, "audit"), StateDir: filepath.Join(dir, "state"), Buffered: true,
		AllowFake: true, RequireAuthorization: requireAuthorization})
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "broker.sock")
	l, err := broker.ListenControl(sock)
	if err != nil {
		e.Shutdown()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- e.ServeControl(l) }()
	t.Cleanup(func() { l.Close(); <-done; e.Shutdown() })
	return &testBroker{dir: dir, sock: sock, be: be, e: e}
}
