package pci

import (
	"errors"
	"strings"
	"syscall"
	"testing"
)

// TestRealKernelWriteError: a failed write names the attribute once and
// keeps the errno (callers branch on EINVAL). /dev/full fails every write
// with ENOSPC, like a sysfs attribute refusing a value.
func TestRealKernelWriteError(t *testing.T) {
	err := realKernel{}.WriteAttr("/dev/full", []byte("bus"))
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("err = %v", err)
	}
	if n := strings.Count(err.Error(), "/dev/full"); n != 1 {
		t.Fatalf("path named %d times: %v", n, err)
	}
}
