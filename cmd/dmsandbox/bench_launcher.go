package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/dmsandbox/dmsandbox/launcher"
)

func init() { registerBench("launcher", benchLauncher) }

// benchLauncher times start-to-QMP-answering of `dmsandbox run` around a
// QEMU against a bare exec of the same QEMU command line, alternated, both
// measured from outside in the same way (dial the QMP socket, complete the
// handshake, query-status). It also reports the supervisor's RSS (the
// launcher and its reaper) while QEMU runs.
func benchLauncher(w io.Writer, quick bool) error {
	qemuBin, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		return fmt.Errorf("qemu-system-x86_64 not found")
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	accel := "tcg"
	if f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0); err == nil {
		f.Close()
		accel = "kvm"
	}
	qemuArgs := []string{"-S", "-display", "none", "-nodefaults", "-machine", "q35", "-accel", accel, "-m", "64"}
	tmp, err := os.MkdirTemp("", "dmsandbox-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	cfg := launcher.DefaultConfig()
	cfg.RunDir = filepath.Join(tmp, "run")
	cfg.CgroupParent = "dmsandbox-bench"
	cfg.UIDBase = 3200000 // uids are locked host-wide; still, keep clear of real sandboxes
	cfg.UIDCount = 16
	cfgPath := filepath.Join(tmp, "config.json")
	if err := writeJSONFile(cfgPath, cfg); err != nil {
		return err
	}
	rounds := 15
	if quick {
		rounds = 3
	}
	// Warm up both paths once: the minimal root is built on first use and
	// page cache effects should not favour either side.
	if _, _, err := timeConfined(self, cfgPath, cfg.RunDir, qemuBin, qemuArgs); err != nil {
		return err
	}
	if _, err := timeBare(tmp, qemuBin, qemuArgs); err != nil {
		return err
	}
	var bare, confined []time.Duration
	var rss []int
	for i := 0; i < rounds; i++ {
		d, err := timeBare(tmp, qemuBin, qemuArgs)
		if err != nil {
			return err
		}
		bare = append(bare, d)
		d, kb, err := timeConfined(self, cfgPath, cfg.RunDir, qemuBin, qemuArgs)
		if err != nil {
			return err
		}
		confined = append(confined, d)
		rss = append(rss, kb)
	}
	mb, mc := median(bare), median(confined)
	fmt.Fprintf(w, "start to QMP answering, %s, %d alternated rounds (median)\n", accel, rounds)
	fmt.Fprintf(w, "  bare exec of QEMU          %8.1f ms\n", ms(mb))
	fmt.Fprintf(w, "  dmsandbox run (confined)   %8.1f ms\n", ms(mc))
	fmt.Fprintf(w, "  ratio confined/bare        %8.2f   (goal <= 1.15)\n", float64(mc)/float64(mb))
	fmt.Fprintf(w, "supervisor RSS (launcher + reaper) while QEMU runs: median %d KiB\n", medianInt(rss))
	return nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func medianInt(v []int) int {
	d := make([]time.Duration, len(v))
	for i, x := range v {
		d[i] = time.Duration(x)
	}
	return int(median(d))
}

// timeBare starts QEMU with a QMP socket of its own and measures until
// query-status answers.
func timeBare(tmp, qemuBin string, args []string) (time.Duration, error) {
	sock := filepath.Join(tmp, "bare.sock")
	os.Remove(sock)
	cmd := exec.Command(qemuBin, append(args, "-qmp", "unix:"+sock+",server=on,wait=off")...)
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	if err := pingQMP(sock, 30*time.Second); err != nil {
		return 0, fmt.Errorf("bare qemu: %w", err)
	}
	return time.Since(start), nil
}

// timeConfined runs `dmsandbox run` and measures until its QEMU's
// management socket answers; it also samples the supervisor's RSS.
func timeConfined(self, cfgPath, runDir, qemuBin string, args []string) (time.Duration, int, error) {
	sock := filepath.Join(runDir, "bench", "qmp.sock")
	cmd := exec.Command(self, append([]string{"run", "--config", cfgPath, "--name", "bench", "--", qemuBin}, args...)...)
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return 0, 0, err
	}
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
		// The run directory is removed at the end of the bench: wait
		// until the sandbox (and a reaper, should it be cleaning) is
		// gone, or its record would go with it.
		launcher.WaitGone(runDir, "bench", 15*time.Second)
	}()
	if err := pingQMP(sock, 30*time.Second); err != nil {
		return 0, 0, fmt.Errorf("confined qemu: %w", err)
	}
	d := time.Since(start)
	kb := rssKiB(cmd.Process.Pid)
	if st, err := launcher.ReadState(runDir, "bench"); err == nil && st.ReaperPid > 0 {
		kb += rssKiB(st.ReaperPid)
	}
	return d, kb, nil
}

func pingQMP(sock string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		mon, err := launcher.DialQMP(sock, time.Until(deadline))
		if err == nil {
			_, err = mon.Run([]byte(`{"execute":"query-status"}`))
			mon.Disconnect()
			return err
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(time.Millisecond)
	}
}

func rssKiB(pid int) int {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			n, _ := strconv.Atoi(strings.Fields(v)[0])
			return n
		}
	}
	return 0
}
