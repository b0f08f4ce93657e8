package launcher

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestDefaultConfigValid(t *testing.T) {
	cfg := DefaultConfig()
	if err := cfg.Validate(); err != nil {
		t.Fatalf("built-in defaults invalid: %v", err)
	}
	if uid, _ := cfg.UID(0); uid == 0 {
		t.Fatal("default uid of index 0 is root")
	}
}

func TestLoadConfig(t *testing.T) {
	dir := t.TempDir()
	write := func(body string) string {
		p := filepath.Join(dir, "c.json")
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cases := []struct {
		name, body, wantErr string
	}{
		{"minimal", `{"version":1}`, ""},
		{"override", `{"version":1,"uid_base":500000,"cgroup":{"memory_bytes":1048576,"pids":10}}`, ""},
		{"host users", `{"version":1,"uid_base":1000}`, "among the host's own users"},
		{"nobody", `{"version":1,"uid_base":65000,"uid_count":1000}`, "among the host's own users"},
		{"userns wraps", `{"version":1,"uid_base":4294000000,"uid_count":600000,"user_namespace":true}`, "wraps"},
		{"cpu shares 0", `{"version":1,"cgroup":{"memory_bytes":1,"pids":1,"cpu_shares":0}}`, "cpu_shares"},
		{"no version", `{}`, "version 0 not supported"},
		{"future version", `{"version":2}`, "version 2 not supported"},
		{"unknown field", `{"version":1,"uid_bsae":5}`, "unknown field"},
		{"uid base 0", `{"version":1,"uid_base":0}`, "uid_base 0"},
		{"wraps", `{"version":1,"uid_base":4294967000,"uid_count":1000}`, "wraps"},
		{"no profile", `{"version":1,"profile":""}`, "profile is empty"},
		{"zero pids", `{"version":1,"cgroup":{"memory_bytes":1,"pids":0}}`, "cgroup.pids"},
		{"relative run dir", `{"version":1,"run_dir":"run"}`, "absolute"},
		{"bad parent", `{"version":1,"cgroup_parent":"../x"}`, "cgroup_parent"},
		{"trailing", `{"version":1} {}`, "trailing"},
		{"not json", `version = 1`, "invalid character"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg, err := LoadConfig(write(c.body))
			if c.wantErr == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), c.wantErr) {
				t.Fatalf("error %v, want one containing %q", err, c.wantErr)
			}
			if !errors.Is(err, ErrConfig) {
				t.Fatalf("error %v does not wrap ErrConfig", err)
			}
			_ = cfg
		})
	}
	cfg, err := LoadConfig(write(`{"version":1,"uid_base":500000,"cgroup":{"memory_bytes":1048576,"pids":10}}`))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.UIDBase != 500000 || cfg.Cgroup.Pids != 10 {
		t.Fatalf("fields not applied: %+v", cfg)
	}
	// A nested object replaces only the fields it names... but JSON
	// decoding into a struct keeps the others: cpu limits stay default.
	if cfg.Cgroup.CPUPeriodUS != DefaultConfig().Cgroup.CPUPeriodUS {
		t.Fatalf("cpu period lost its default: %+v", cfg.Cgroup)
	}
	if _, err := LoadConfig(filepath.Join(dir, "missing.json")); !errors.Is(err, ErrConfig) {
		t.Fatalf("missing file: %v", err)
	}
}

func TestUIDRange(t *testing.T) {
	cfg := DefaultConfig()
	cfg.UIDBase, cfg.UIDCount = 100000, 10
	if uid, err := cfg.UID(9); err != nil || uid != 100009 {
		t.Fatalf("UID(9) = %d, %v", uid, err)
	}
	if _, err := cfg.UID(10); err == nil {
		t.Fatal("UID(10) outside the range accepted")
	}
}

func TestValidName(t *testing.T) {
	for _, ok := range []string{"a", "dom1", "qemu-dm-7", "x.y_z", strings.Repeat("a", 64)} {
		if !validName(ok) {
			t.Errorf("%q rejected", ok)
		}
	}
	for _, bad := range []string{"", ".", "..", "../x", "a/b", ".hidden", "a b", "é", strings.Repeat("a", 65), "a\x00"} {
		if validName(bad) {
			t.Errorf("%q accepted", bad)
		}
	}
}
