package seccomp

import (
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
)

// formatVersion is the only profile file version this package reads. A
// profile written for another version is refused rather than half-understood.
const formatVersion = 1

// fileProfile is one profiles/*.json file, as written on disk.
//
//	{
//	  "version": 1,
//	  "name": "qemu-kvm",
//	  "abstract": false,          // true: a part, only included, never loaded alone
//	  "summary": "one line",
//	  "include": ["qemu-common"], // parts whose rules come first
//	  "rules": [ ... fileRule ... ]
//	}
type fileProfile struct {
	Version  int        `json:"version"`
	Name     string     `json:"name"`
	Abstract bool       `json:"abstract"`
	Summary  string     `json:"summary"`
	Include  []string   `json:"include"`
	Rules    []fileRule `json:"rules"`
}

// fileRule is one rule. Exactly one of Syscalls or Ioctls is set.
//
//	{"syscalls": ["read", "write"], "why": "..."}
//	{"syscalls": ["socket"], "args": [{"index": 0, "op": "eq", "value": "AF_UNIX"}], "why": "..."}
//	{"syscalls": ["clone3"], "action": "errno", "errno": "ENOSYS", "why": "..."}
//	{"ioctls": {"class": "kvm", "requests": ["KVM_RUN"]}, "why": "..."}
//
// Conditions in one rule are ANDed and must name distinct arguments
// (libcontainer silently turns two conditions on one argument into an OR);
// several rules for one syscall are ORed.
type fileRule struct {
	Syscalls []string   `json:"syscalls"`
	Ioctls   *fileIoctl `json:"ioctls"`
	Args     []fileArg  `json:"args"`
	Action   string     `json:"action"` // "allow" (default) or "errno"
	Errno    string     `json:"errno"`  // errno name, with action "errno"
	Why      string     `json:"why"`    // the code path that needs the rule; required
}

// fileIoctl allows ioctl(fd, REQUEST, ...) for each named request of one
// device class (see ioctl_linux.go for the classes and names).
type fileIoctl struct {
	Class    string   `json:"class"`
	Requests []string `json:"requests"`
}

// fileArg is a condition on one syscall argument. Value and Mask are
// symbolic expressions: names and numbers joined by "|" ("CLONE_THREAD|0x10").
//
// Ops: eq ne lt le gt ge (64-bit compare), masked_eq (arg & mask == value),
// and self_pid: the argument is the sandboxed process's own pid when the
// caller knows it (SelfPID option), otherwise any non-negative pid.
type fileArg struct {
	Index uint   `json:"index"`
	Op    string `json:"op"`
	Value string `json:"value"`
	Mask  string `json:"mask"`
}

var nameRE = regexp.MustCompile(`^[a-z][a-z0-9-]{0,40}$`)

// parseProfile decodes and checks one profile file. It checks the file on
// its own (names, fields, symbols); cross-file checks happen in compose.
func parseProfile(data []byte) (*fileProfile, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var fp fileProfile
	if err := dec.Decode(&fp); err != nil {
		return nil, fmt.Errorf("decode: %w", err)
	}
	if dec.More() {
		return nil, fmt.Errorf("trailing data after the profile object")
	}
	if fp.Version != formatVersion {
		return nil, fmt.Errorf("version %d, want %d", fp.Version, formatVersion)
	}
	if !nameRE.MatchString(fp.Name) {
		return nil, fmt.Errorf("bad profile name %q", fp.Name)
	}
	if fp.Summary == "" {
		return nil, fmt.Errorf("profile %s: empty summary", fp.Name)
	}
	for _, inc := range fp.Include {
		if !nameRE.MatchString(inc) {
			return nil, fmt.Errorf("profile %s: bad include %q", fp.Name, inc)
		}
	}
	for i := range fp.Rules {
		if _, err := resolveRule(&fp.Rules[i], fp.Name); err != nil {
			return nil, fmt.Errorf("profile %s: rule %d: %w", fp.Name, i, err)
		}
	}
	return &fp, nil
}
