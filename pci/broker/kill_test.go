package broker

import (
	"bufio"
	"fmt"
	"io"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/dmsandbox/dmsandbox/pci"
	"github.com/dmsandbox/dmsandbox/pci/audit"
	"github.com/dmsandbox/dmsandbox/pci/backend/fake"
)

// Kill tests re-execute this test binary as the victim (a broker, or a
// device-model client) and SIGKILL it mid-stream.

const helperEnv = "DMSANDBOX_BROKER_HELPER"

// TestHelperProcess is the victim's body; it does nothing in a normal run.
func TestHelperProcess(t *testing.T) {
	switch os.Getenv(helperEnv) {
	case "broker":
		helperBroker(os.Getenv("HELPER_DIR"))
	case "client":
		helperClient()
	default:
		t.Skip("helper process for the kill tests")
	}
	os.Exit(0)
}

func brokerIn(dir string, durable bool) (*Broker, *fake.Backend, *audit.Log, error) {
	fb, err := fake.New(captured, filepath.Join(dir, "fake.calls"))
	if err != nil {
		return nil, nil, nil, err
	}
	al, err := audit.Open(audit.Options{Dir: filepath.Join(dir, "audit"), Durable: durable})
	if err != nil {
		return nil, nil, nil, err
	}
	b, err := New(Config{Backend: fb, Sysfs: pci.NewSysfs(captured), Audit: al, StateDir: filepath.Join(dir, "state"),
		AllowFake: true, Logger: log.New(io.Discard, "", 0)})
	return b, fb, al, err
}

// helperBroker runs a broker with a busy session and never returns.
func helperBroker(dir string) {
	b, _, _, err := brokerIn(dir, true)
	if err != nil {
		fmt.Println("ERR", err)
		return
	}
	s, f, err := b.OpenSession(dom, "", Peer{})
	if err != nil {
		fmt.Println("ERR", err)
		return
	}
	if err := b.Attach(s.ID, e1000e, AttachOptions{}); err != nil {
		fmt.Println("ERR", err)
		return
	}
	c, _ := NewClient(f)
	var p PirqReply
	for _, req := range []Request{&Hello{Version: 1}, &MapPirq{Domid: dom, Index: 10, Pirq: -1}} {
		if err := c.Do(req, &p); err != nil {
			fmt.Println("ERR", err)
			return
		}
	}
	c.Do(&BindPtPciIrq{Domid: dom, MachineIrq: uint8(p.Pirq), Device: 5}, nil)
	for i := uint64(0); ; i++ {
		m := &MemoryMapping{Domid: dom, Add: 1, FirstGfn: 0xe0000 + i%16, FirstMfn: 0xfeb80 + i%16, NrMfns: 1}
		if err := c.Do(m, nil); err != nil {
			fmt.Println("ERR", err)
			return
		}
		io := &IoportMapping{Domid: dom, Add: 1, FirstGport: 0xc000, FirstMport: 0xc040, NrPorts: 8}
		c.Do(io, nil)
		if i == 20 {
			fmt.Println("READY")
		}
		io.Add = 0
		c.Do(io, nil)
		m.Add = 0
		c.Do(m, nil)
	}
}

// helperClient plays QEMU on the session fd it inherited as fd 3.
func helperClient() {
	c, err := NewClient(os.NewFile(3, "session"))
	if err != nil {
		fmt.Println("ERR", err)
		return
	}
	var p PirqReply
	for _, req := range []Request{
		&Hello{Version: 1},
		&MemoryMapping{Domid: dom, Add: 1, FirstGfn: 0xe0000, FirstMfn: 0xfeb80, NrMfns: 0x20},
		&MapPirq{Domid: dom, Index: 10, Pirq: -1},
		&MapPirqMSI{Domid: dom, Index: -1, Pirq: -1, Devfn: 4 << 3, EntryNr: 0, TableBase: 0xfebd0000},
	} {
		if err := c.Do(req, &p); err != nil {
			fmt.Println("ERR", err)
			return
		}
	}
	c.Do(&UpdateMsiIrq{Domid: dom, Gvec: 0x40, Pirq: uint32(p.Pirq)}, nil)
	fmt.Println("READY")
	for {
		c.Do(&ConfigRead{BDF: WireBDF(e1000e), Size: 4}, nil)
	}
}

// startVictim runs the helper and waits for its READY line.
func startVictim(t *testing.T, mode, dir string, extra *os.File) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$")
	cmd.Env = append(os.Environ(), helperEnv+"="+mode, "HELPER_DIR="+dir)
	if extra != nil {
		cmd.ExtraFiles = []*os.File{extra}
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || strings.TrimSpace(line) != "READY" {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("victim: %q %v", line, err)
	}
	return cmd
}

func kill(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
}

// SIGKILL the broker mid-stream; a new broker on the same state directory
// must undo what the dead one left, as the fake's persisted record shows.
func TestKillBrokerRecovers(t *testing.T) {
	dir := t.TempDir()
	cmd := startVictim(t, "broker", dir, nil)
	kill(t, cmd)

	left := fake.Replay(mustCalls(t, dir))
	if left.Empty() {
		t.Fatal("the victim left nothing live; the test would prove nothing")
	}
	journals, _ := filepath.Glob(filepath.Join(dir, "state", "*.journal"))
	if len(journals) != 1 {
		t.Fatalf("journals after kill: %v", journals)
	}
	b, fb, al, err := brokerIn(dir, true)
	if err != nil {
		t.Fatal(err)
	}
	defer fb.Close()
	defer al.Close()
	defer b.Close()
	if st := fake.Replay(mustCalls(t, dir)); !st.Empty() {
		t.Fatalf("after recovery, still live: %v (was %v)", st.Summary(), left.Summary())
	}
	if journals, _ := filepath.Glob(filepath.Join(dir, "state", "*.journal")); len(journals) != 0 {
		t.Fatalf("journals after recovery: %v", journals)
	}
	// The audit chain survived the kill (a torn last line is cut).
	al.Sync()
	files, _ := audit.Files(filepath.Join(dir, "audit"))
	if _, err := audit.Verify(files...); err != nil {
		t.Fatal(err)
	}
	// The device can be used again.
	s, f, err := b.OpenSession(dom, "", Peer{})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := b.Attach(s.ID, e1000e, AttachOptions{}); err != nil {
		t.Fatal(err)
	}
}

// SIGKILL the device model: the broker sees EOF and undoes the session.
func TestKillClientUndoes(t *testing.T) {
	r := newRig(t, "")
	s, f, err := r.broker.OpenSession(dom, "", Peer{})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.broker.Attach(s.ID, e1000e, AttachOptions{}); err != nil {
		t.Fatal(err)
	}
	cmd := startVictim(t, "client", r.dir, f)
	f.Close() // the victim holds the only client end now
	if n := len(r.fake.State().Summary()); n != 5 {
		t.Fatalf("victim did not set up: %v", r.fake.State().Summary())
	}
	kill(t, cmd)
	r.waitGone(s)
	if st := r.fake.State(); !st.Empty() {
		t.Fatalf("after the client died, still live: %v", st.Summary())
	}
	var undone []string
	hellos := 0
	for _, rec := range r.records() {
		if rec.Op == "undo" {
			undone = append(undone, rec.Args)
		}
		// The kernel names the sender of each frame (SO_PASSCRED): the
		// victim, not the process that opened the session.
		if rec.Op == "hello" && rec.Session == s.ID {
			hellos++
			if rec.PID != int32(cmd.Process.Pid) {
				t.Errorf("hello audited with pid %d, the client is %d", rec.PID, cmd.Process.Pid)
			}
		}
	}
	if hellos != 1 {
		t.Errorf("%d hello records", hellos)
	}
	// Reverse order by kind: mapping first, then bindings, pirqs, device.
	want := []string{"mem ", "msi ", "pirq ", "pirq ", "device "}
	if len(undone) != len(want) {
		t.Fatalf("undo steps %v", undone)
	}
	for i := range want {
		if !strings.HasPrefix(undone[i], want[i]) {
			t.Fatalf("undo order %v", undone)
		}
	}
}

func mustCalls(t *testing.T, dir string) []fake.Call {
	t.Helper()
	calls, err := fake.ReadCalls(filepath.Join(dir, "fake.calls"))
	if err != nil {
		t.Fatal(err)
	}
	return calls
}
