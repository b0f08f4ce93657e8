package launcher

import "testing"

// FuzzDecodeConfig: any bytes either decode to a config that passes
// Validate, or give an error; never a panic, never a config with uid 0.
func FuzzDecodeConfig(f *testing.F) {
	f.Add([]byte(`{"version":1}`))
	f.Add([]byte(`{"version":1,"uid_base":5000,"uid_count":10,"user_namespace":true,"cgroup":{"memory_bytes":1,"pids":1}}`))
	f.Add([]byte(`{"version":1,"extra_paths":["/etc/hostname"],"rlimits":{"memlock":1}}`))
	f.Add([]byte(`{"version":1,"uid_base":4294967295}`))
	f.Add([]byte(`{"version":1,"cgroup_parent":".."}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg := DefaultConfig()
		if err := decodeConfig(data, &cfg); err != nil {
			return
		}
		if err := cfg.Validate(); err != nil {
			t.Fatalf("decoded config fails Validate: %v", err)
		}
		for i := uint32(0); i < 3 && i < cfg.UIDCount; i++ {
			if uid, err := cfg.UID(i); err != nil || uid == 0 {
				t.Fatalf("index %d maps to uid %d (%v)", i, uid, err)
			}
		}
		if last, err := cfg.UID(cfg.UIDCount - 1); err != nil || last == 0 || last < cfg.UIDBase {
			t.Fatalf("last index maps to uid %d (%v)", last, err)
		}
	})
}
