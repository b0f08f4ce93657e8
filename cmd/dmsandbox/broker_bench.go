package main

import (
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/dmsandbox/dmsandbox/pci"
	"github.com/dmsandbox/dmsandbox/pci/audit"
	"github.com/dmsandbox/dmsandbox/pci/backend/fake"
	"github.com/dmsandbox/dmsandbox/pci/broker"
	"golang.org/x/sys/unix"
)

// `dmsandbox broker bench`: the broker's cost against a baseline measured
// in the same run (make bench-broker).
//
//  1. round trip of a raw SOCK_SEQPACKET socketpair echo (baseline) vs a
//     config_read through a real session (decode, policy, fake backend,
//     audit record, reply) with the audit buffered: p50/p99 and ratios;
//  2. with the audit durable (fsync before each reply, group commit):
//     ops/s and ops per fsync for 1, 4 and 16 concurrent sessions.
//
// The fake backend keeps the hypervisor out of the numbers: what is
// measured is the broker's own path. Devices come from a synthetic tree
// of copies of the captured e1000e (one per session).
func brokerBench(args []string) int {
	fs := flag.NewFlagSet("broker bench", flag.ContinueOnError)
	src := fs.String("sysfs-root", "pci/testdata/sysfs/q35-vfio-rig", "captured tree holding 0000:00:04.0")
	n := fs.Int("n", 20000, "round trips per latency measurement")
	dur := fs.Duration("duration", 2*time.Second, "run time per durable-audit row")
	delay := fs.Duration("commit-delay", 0, "audit group-commit delay (0: the log's default; negative: off)")
	if err := fs.Parse(args); err != nil {
		return ExitUsage
	}
	tmp, err := os.MkdirTemp("", "dmsandbox-broker-bench")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return ExitFailure
	}
	defer os.RemoveAll(tmp)
	root, devs, err := benchTree(*src, filepath.Join(tmp, "sysfs"), 16)
	if err != nil {
		fmt.Fprintln(os.Stderr, "broker bench:", err)
		return ExitFailure
	}

	b, al, err := benchBroker(root, filepath.Join(tmp, "buffered"), false, *delay)
	if err != nil {
		fmt.Fprintln(os.Stderr, "broker bench:", err)
		return ExitFailure
	}
	raw, op, err := interleaved(b, devs[0], *n)
	b.Close()
	al.Close()
	if err != nil {
		fmt.Fprintln(os.Stderr, "broker bench:", err)
		return ExitFailure
	}
	p := func(d []time.Duration, q float64) time.Duration { return d[int(float64(len(d)-1)*q)] }
	fmt.Printf("broker round trip (%d each, interleaved in blocks of 500, same run)\n", len(raw))
	fmt.Printf("  %-44s p50 %8v  p99 %8v\n", "raw unix seqpacket echo (baseline)", p(raw, .5), p(raw, .99))
	fmt.Printf("  %-44s p50 %8v  p99 %8v\n", "config_read via broker, audit buffered", p(op, .5), p(op, .99))
	fmt.Printf("  ratio broker/raw: p50 %.2fx  p99 %.2fx  (goal <= 3x)\n",
		float64(p(op, .5))/float64(p(raw, .5)), float64(p(op, .99))/float64(p(raw, .99)))

	fmt.Printf("durable audit (fsync before reply, group commit), %v per row\n", *dur)
	for _, sessions := range []int{1, 4, 16} {
		b, al, err := benchBroker(root, filepath.Join(tmp, fmt.Sprintf("durable-%d", sessions)), true, *delay)
		if err != nil {
			fmt.Fprintln(os.Stderr, "broker bench:", err)
			return ExitFailure
		}
		ops, elapsed, err := concurrentOps(b, devs[:sessions], *dur)
		st := al.Stats()
		b.Close()
		al.Close()
		if err != nil {
			fmt.Fprintln(os.Stderr, "broker bench:", err)
			return ExitFailure
		}
		fmt.Printf("  %2d sessions: %8.0f ops/s  %6d fsyncs  %5.1f ops per fsync%s\n", sessions,
			float64(ops)/elapsed.Seconds(), st.Syncs, float64(ops)/float64(max(st.Syncs, 1)),
			map[bool]string{true: "  (goal >= 8 at 16)", false: ""}[sessions == 16])
	}
	return ExitOK
}

// benchTree builds a sysfs tree with n copies of the captured
// 0000:00:04.0 at 0000:00:08.0 upward, so each session has a device.
func benchTree(src, dst string, n int) (string, []pci.BDF, error) {
	if out, err := exec.Command("cp", "-a", src, dst).CombinedOutput(); err != nil {
		return "", nil, fmt.Errorf("copy %s: %v: %s", src, err, out)
	}
	orig := filepath.Join(dst, "sys/devices/pci0000:00/0000:00:04.0")
	var devs []pci.BDF
	for i := 0; i < n; i++ {
		bdf := pci.BDF{Dev: uint8(8 + i)}
		dir := filepath.Join(dst, "sys/devices/pci0000:00", bdf.String())
		if out, err := exec.Command("cp", "-a", orig, dir).CombinedOutput(); err != nil {
			return "", nil, fmt.Errorf("copy device: %v: %s", err, out)
		}
		if err := os.Symlink("../../../devices/pci0000:00/"+bdf.String(), filepath.Join(dst, "sys/bus/pci/devices", bdf.String())); err != nil {
			return "", nil, err
		}
		devs = append(devs, bdf)
	}
	return dst, devs, nil
}

func benchBroker(root, dir string, durable bool, delay time.Duration) (*broker.Broker, *audit.Log, error) {
	fb, err := fake.New(root, "")
	if err != nil {
		return nil, nil, err
	}
	al, err := audit.Open(audit.Options{Dir: filepath.Join(dir, "audit"), Durable: durable, CommitDelay: delay})
	if err != nil {
		return nil, nil, err
	}
	b, err := broker.New(broker.Config{Backend: fb, Sysfs: pci.NewSysfs(root), Audit: al,
		StateDir: filepath.Join(dir, "state"), AllowFake: true, Logger: log.New(io.Discard, "", 0)})
	if err != nil {
		al.Close()
		return nil, nil, err
	}
	return b, al, nil
}

// session opens a session of its own domain with dev and says hello.
func benchSession(b *broker.Broker, domid uint32, dev pci.BDF) (*broker.Client, error) {
	s, f, err := b.OpenSession(domid, "", broker.Peer{PID: int32(os.Getpid())})
	if err != nil {
		return nil, err
	}
	if err := b.Attach(s.ID, dev, broker.AttachOptions{}); err != nil {
		f.Close()
		return nil, err
	}
	c, err := broker.NewClient(f)
	if err != nil {
		return nil, err
	}
	return c, c.Do(&broker.Hello{Version: uint32(broker.Version)}, nil)
}

// interleaved measures n raw round trips and n broker round trips in
// alternating blocks of 500, so both see the same load on a shared machine.
func interleaved(b *broker.Broker, dev pci.BDF, n int) (raw, op []time.Duration, err error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, err
	}
	defer unix.Close(fds[0])
	go func() {
		defer unix.Close(fds[1])
		buf := make([]byte, 512)
		for {
			k, err := unix.Read(fds[1], buf)
			if err != nil || k == 0 {
				return
			}
			unix.Write(fds[1], buf[:broker.HeaderSize+broker.ReplyPrefix+8]) // config_read's reply size
		}
	}()
	c, err := benchSession(b, 1, dev)
	if err != nil {
		return nil, nil, err
	}
	defer c.Close()
	rawReq := broker.EncodeRequest(1, &broker.ConfigRead{Size: 4})
	req := &broker.ConfigRead{BDF: broker.WireBDF(dev), Size: 4}
	var res broker.ConfigReadReply
	buf := make([]byte, 512)
	const block = 500
	for len(raw) < n {
		for i := 0; i < block; i++ {
			t := time.Now()
			unix.Write(fds[0], rawReq)
			unix.Read(fds[0], buf)
			raw = append(raw, time.Since(t))
		}
		for i := 0; i < block; i++ {
			t := time.Now()
			if err := c.Do(req, &res); err != nil {
				return nil, nil, err
			}
			op = append(op, time.Since(t))
		}
	}
	sort.Slice(raw, func(i, j int) bool { return raw[i] < raw[j] })
	sort.Slice(op, func(i, j int) bool { return op[i] < op[j] })
	return raw, op, nil
}

func concurrentOps(b *broker.Broker, devs []pci.BDF, d time.Duration) (int, time.Duration, error) {
	var clients []*broker.Client
	for i, dev := range devs {
		c, err := benchSession(b, uint32(100+i), dev)
		if err != nil {
			return 0, 0, err
		}
		defer c.Close()
		clients = append(clients, c)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	total := 0
	var firstErr error
	start := time.Now()
	deadline := start.Add(d)
	for i, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req := &broker.ConfigRead{BDF: broker.WireBDF(devs[i]), Size: 4}
			k := 0
			for time.Now().Before(deadline) {
				if err := c.Do(req, nil); err != nil {
					mu.Lock()
					firstErr = err
					mu.Unlock()
					return
				}
				k++
			}
			mu.Lock()
			total += k
			mu.Unlock()
		}()
	}
	wg.Wait()
	return total, time.Since(start), firstErr
}
