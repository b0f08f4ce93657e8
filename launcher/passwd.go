package launcher

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// checkPasswd refuses a uid range that holds an account of the host: a
// process of that user could ptrace the device model (it is dumpable after
// execve) and use its fds. Accounts named xen-qemuuser-* are libxl's own
// markers of the range (xen-qemuuser-range-base) and are allowed. A
// missing passwd file is no error (a minimal host).
func checkPasswd(cfg *Config, path string) error {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	lo, hi := uint64(cfg.UIDBase), uint64(cfg.UIDBase)+cfg.uidSpan()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Split(sc.Text(), ":")
		if len(fields) < 3 || strings.HasPrefix(fields[0], "xen-qemuuser") {
			continue
		}
		uid, err := strconv.ParseUint(fields[2], 10, 32)
		if err == nil && uid >= lo && uid < hi {
			return fmt.Errorf("uid range %d..%d holds the account %s (uid %d) of %s", lo, hi-1, fields[0], uid, path)
		}
	}
	return sc.Err()
}
