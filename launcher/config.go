package launcher

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
)

// ConfigVersion is the only config format version this build reads.
// Bump it when a field changes meaning; never reuse a version.
const ConfigVersion = 1

// ErrConfig marks an unreadable or invalid config file. The CLI maps it to
// its own exit code so scripts can tell a config error from a failed start.
var ErrConfig = errors.New("invalid config")

// Config is the launcher's configuration file (JSON). Every field is
// documented here and in docs/config.md; unknown fields are an error so that
// a typo never silently weakens the sandbox.
type Config struct {
	// Version must be ConfigVersion.
	Version int `json:"version"`

	// UIDBase is the first host uid/gid of the sandbox range, like libxl's
	// xen-qemuuser-range-base: sandbox N runs as UIDBase+N. Never 0.
	UIDBase uint32 `json:"uid_base"`
	// UIDCount is how many indexes the range has (the largest index + 1).
	UIDCount uint32 `json:"uid_count"`

	// UserNamespace runs the program in a new user namespace that maps
	// only two ids: the program's own uid/gid (to itself) and the
	// namespace's root, used only by runc's setup, to a second per-sandbox
	// id UIDBase+UIDCount+index. The range is then 2*UIDCount long. Off by
	// default: libxl deployments expect the plain per-domain uid.
	UserNamespace bool `json:"user_namespace"`

	// Profile is the seccomp profile (seccomp.Names()) used when --profile
	// is not given.
	Profile string `json:"profile"`
	// SeccompLog switches the profile's default action from kill to log,
	// for discovering missing rules. Never in production.
	SeccompLog bool `json:"seccomp_log"`

	// Limits applied to the sandbox's cgroup.
	Cgroup CgroupLimits `json:"cgroup"`
	// Rlimits applied to the program (soft = hard).
	Rlimits RlimitConfig `json:"rlimits"`

	// RunDir holds one directory per running sandbox (state, lock, QMP).
	RunDir string `json:"run_dir"`
	// CacheDir holds the minimal roots, one per content identity.
	CacheDir string `json:"cache_dir"`
	// CgroupParent is the cgroup (relative to the launcher's own cgroup on
	// each hierarchy) under which each sandbox gets NAME.
	CgroupParent string `json:"cgroup_parent"`

	// QMPTimeoutMS bounds the wait for QEMU's monitor to answer.
	QMPTimeoutMS int `json:"qmp_timeout_ms"`

	// ExtraPaths are host files or directories copied into every minimal
	// root in addition to what the program's ELF dependencies need.
	ExtraPaths []string `json:"extra_paths"`
}

// CgroupLimits are the per-sandbox cgroup limits.
type CgroupLimits struct {
	MemoryBytes int64  `json:"memory_bytes"` // memory.limit_in_bytes / memory.max
	Pids        int64  `json:"pids"`         // pids.max
	CPUQuotaUS  int64  `json:"cpu_quota_us"` // per CPUPeriodUS; 0 = unlimited
	CPUPeriodUS uint64 `json:"cpu_period_us"`
	CPUShares   uint64 `json:"cpu_shares"` // v1 cpu.shares (v2 weight is derived)
}

// RlimitConfig are the program's resource limits. Zero means zero, not
// "unlimited": CORE, MSGQUEUE and LOCKS are meant to be 0.
type RlimitConfig struct {
	FSize    uint64 `json:"fsize"`    // largest file the program may write
	Core     uint64 `json:"core"`     // core dumps (0: a crashing QEMU leaves no guest memory on disk)
	MsgQueue uint64 `json:"msgqueue"` // POSIX message queues (QEMU uses none)
	Locks    uint64 `json:"locks"`    // file locks
	NProc    uint64 `json:"nproc"`    // processes+threads of the sandbox uid
	NoFile   uint64 `json:"nofile"`   // open fds
	// MemLock is applied only when non-zero (VFIO pins guest RAM). Raising
	// it above the launcher's own hard limit needs CAP_SYS_RESOURCE.
	MemLock uint64 `json:"memlock"`
}

// DefaultConfig is the built-in configuration: it needs no editing on a
// fresh machine and is what `dmsandbox demo` uses.
func DefaultConfig() Config {
	return Config{
		Version:  ConfigVersion,
		UIDBase:  3000000, // far above login users and the usual subuid ranges
		UIDCount: 32768,   // one per Xen domid
		Profile:  "qemu-kvm",
		Cgroup: CgroupLimits{
			MemoryBytes: 2 << 30,
			Pids:        512,
			CPUQuotaUS:  200000,
			CPUPeriodUS: 100000,
			CPUShares:   1024,
		},
		Rlimits: RlimitConfig{
			FSize:    64 << 30,
			Core:     0,
			MsgQueue: 0,
			Locks:    0,
			NProc:    1024,
			NoFile:   4096,
		},
		RunDir:       "/run/dmsandbox",
		CacheDir:     "/var/cache/dmsandbox",
		CgroupParent: "dmsandbox",
		QMPTimeoutMS: 10000,
	}
}

// LoadConfig reads a config file over the defaults: a field absent from the
// file keeps its default. An empty path returns the defaults.
func LoadConfig(path string) (Config, error) {
	cfg := DefaultConfig()
	if path == "" {
		return cfg, nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return cfg, fmt.Errorf("%w: %v", ErrConfig, err)
	}
	if err := decodeConfig(data, &cfg); err != nil {
		return cfg, fmt.Errorf("%w: %s: %v", ErrConfig, path, err)
	}
	return cfg, nil
}

func decodeConfig(data []byte, cfg *Config) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	cfg.Version = 0 // the file must say which version it is
	if err := dec.Decode(cfg); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("trailing data after the config object")
	}
	return cfg.Validate()
}

// Validate checks the config for values that would weaken the sandbox or
// cannot work.
func (c *Config) Validate() error {
	switch {
	case c.Version != ConfigVersion:
		return fmt.Errorf("version %d not supported (want %d)", c.Version, ConfigVersion)
	case c.UIDBase == 0:
		return errors.New("uid_base 0 would run sandbox 0 as root")
	case c.UIDBase < minUIDBase:
		// Below 65536 live login users, system users and nobody
		// (65534): a host process with the sandbox's uid could ptrace
		// the device model and use its fds.
		return fmt.Errorf("uid_base %d is below %d, among the host's own users", c.UIDBase, minUIDBase)
	case c.UIDCount == 0:
		return errors.New("uid_count must be at least 1")
	case uint64(c.UIDBase)+c.uidSpan() > 1<<32-1:
		return fmt.Errorf("uid range %d+%d wraps past 2^32-1 (and so through 0)", c.UIDBase, c.uidSpan())
	case c.Profile == "":
		return errors.New("profile is empty: a sandbox without a seccomp filter is not allowed")
	case c.Cgroup.MemoryBytes <= 0:
		return errors.New("cgroup.memory_bytes must be positive")
	case c.Cgroup.Pids <= 0:
		return errors.New("cgroup.pids must be positive")
	case c.Cgroup.CPUQuotaUS < 0:
		return errors.New("cgroup.cpu_quota_us must not be negative")
	case c.Cgroup.CPUShares < 2 || c.Cgroup.CPUShares > 262144:
		return fmt.Errorf("cgroup.cpu_shares %d outside the kernel's range 2..262144", c.Cgroup.CPUShares)
	case c.Cgroup.CPUQuotaUS > 0 && c.Cgroup.CPUPeriodUS == 0:
		return errors.New("cgroup.cpu_period_us must be set with cpu_quota_us")
	case c.Rlimits.NoFile == 0 || c.Rlimits.NProc == 0:
		return errors.New("rlimits.nofile and rlimits.nproc must be positive")
	case !isAbs(c.RunDir) || !isAbs(c.CacheDir):
		return errors.New("run_dir and cache_dir must be absolute paths")
	case c.CgroupParent == "" || !validName(c.CgroupParent):
		return fmt.Errorf("cgroup_parent %q must be one plain path component", c.CgroupParent)
	case c.QMPTimeoutMS <= 0:
		return errors.New("qmp_timeout_ms must be positive")
	}
	for _, p := range c.ExtraPaths {
		if !isAbs(p) {
			return fmt.Errorf("extra_paths: %q is not absolute", p)
		}
	}
	return nil
}

// minUIDBase is the lowest uid_base accepted: the ids below belong to the
// host's users (and nobody, 65534).
const minUIDBase = 65536

// uidSpan is how many host ids the configuration uses from UIDBase.
func (c *Config) uidSpan() uint64 {
	if c.UserNamespace {
		return 2 * uint64(c.UIDCount)
	}
	return uint64(c.UIDCount)
}

// NSRootUID is the host id the user namespace of sandbox index maps its
// root to: unique per sandbox, never used by a running program.
func (c *Config) NSRootUID(index uint32) uint32 { return c.UIDBase + c.UIDCount + index }

// UID returns the host uid (and gid) of sandbox index i.
func (c *Config) UID(index uint32) (uint32, error) {
	if index >= c.UIDCount {
		return 0, fmt.Errorf("sandbox index %d outside uid range (uid_count %d)", index, c.UIDCount)
	}
	return c.UIDBase + index, nil
}

func isAbs(p string) bool { return len(p) > 0 && p[0] == '/' }
