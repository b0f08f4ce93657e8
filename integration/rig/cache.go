package rig

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// DefaultCacheDir holds the unpacked kernel and the built initramfs images
// between runs. $DMSANDBOX_RIG_CACHE overrides it.
const DefaultCacheDir = "/var/cache/dmsandbox-rig"

// CacheDir returns the cache directory in force, created if missing.
// A non-root user who cannot write the default gets one under their own
// cache directory instead of a permission error.
func CacheDir() (string, error) {
	if d := os.Getenv("DMSANDBOX_RIG_CACHE"); d != "" {
		return d, os.MkdirAll(d, 0o755)
	}
	if err := os.MkdirAll(DefaultCacheDir, 0o755); err == nil && syscall.Access(DefaultCacheDir, 2 /* W_OK */) == nil {
		return DefaultCacheDir, nil
	}
	uc, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("rig: no writable cache directory (%s) and no user cache: %w", DefaultCacheDir, err)
	}
	d := filepath.Join(uc, "dmsandbox-rig")
	return d, os.MkdirAll(d, 0o755)
}

// lockFile takes an exclusive flock on path and returns its release.
// Several test binaries (go test runs packages in parallel) may build the same
// cache entry or boot a rig at the same time; the lock makes them take turns.
// It polls rather than blocks so that the wait ends with ctx.
func lockFile(ctx context.Context, path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("rig: lock %s: %w", path, err)
	}
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil // closing the fd drops the flock
		}
		if err != syscall.EWOULDBLOCK && err != syscall.EINTR {
			f.Close()
			return nil, fmt.Errorf("rig: lock %s: %w", path, err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("rig: waiting for %s (another rig is running): %w", path, ctx.Err())
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// run executes a helper program and returns its stdout; on failure the error
// carries the command and its stderr, which is where apt and dpkg say why.
func run(dir, name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("rig: %s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return string(out), nil
}
