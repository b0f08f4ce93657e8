package launcher

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCheckPasswd(t *testing.T) {
	p := filepath.Join(t.TempDir(), "passwd")
	os.WriteFile(p, []byte("root:x:0:0::/root:/bin/sh\nxen-qemuuser-range-base:x:3000000:3000000::/:/bin/false\nalice:x:3000100:100::/home/alice:/bin/sh\n"), 0o600)
	cfg := DefaultConfig()
	cfg.UIDCount = 100 // 3000000..3000099: only libxl's marker inside
	if err := checkPasswd(&cfg, p); err != nil {
		t.Fatalf("marker account refused: %v", err)
	}
	cfg.UserNamespace = true // 3000000..3000199: alice inside
	if err := checkPasswd(&cfg, p); err == nil || !strings.Contains(err.Error(), "alice") {
		t.Fatalf("alice's uid inside the range not refused: %v", err)
	}
	if err := checkPasswd(&cfg, filepath.Join(t.TempDir(), "none")); err != nil {
		t.Fatalf("missing passwd: %v", err)
	}
}
