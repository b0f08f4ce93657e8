package seccomp

import (
	"fmt"
	"strconv"
	"strings"
)

// AuditRecord is one kernel seccomp audit record (type=1326, AUDIT_SECCOMP),
// as printed to the kernel log when no audit daemon takes it:
//
//	audit: type=1326 audit(1795703704.664:40): auid=4294967295 uid=0 gid=0
//	ses=4294967295 subj=... pid=30599 comm="qemu-system-x86" exe="/usr/bin/qemu-system-x86_64"
//	sig=31 arch=c000003e syscall=105 compat=0 ip=0x40866e code=0x80000000
//
// sig=31 (SIGSYS) with code 0x80000000 is a kill_process, code 0x0 a
// kill_thread, 0x7ffc0000 a log, 0x50000|errno an errno (logged only with
// SECCOMP_FILTER_FLAG_LOG).
type AuditRecord struct {
	PID     int
	Comm    string
	Exe     string
	Arch    uint32
	Syscall int
	Code    uint32
}

// Action is the seccomp action the record reports.
func (r AuditRecord) Action() Verdict { return DecodeVerdict(r.Code) }

// maxAuditLine bounds the lines ParseAuditLine looks at: kernel log records
// are at most about 1 KiB; anything longer is not a seccomp record.
const maxAuditLine = 4096

// ParseAuditLine extracts a seccomp record from one kernel log line
// (dmesg, /dev/kmsg, journalctl -k, or audit.log). ok is false for any
// other line. Input is untrusted (a log can hold anything a process
// printed), so the parser only splits on spaces and reads known keys.
func ParseAuditLine(line string) (rec AuditRecord, ok bool) {
	if len(line) > maxAuditLine {
		return rec, false
	}
	i := strings.Index(line, "type=1326 ")
	if i < 0 {
		i = strings.Index(line, "type=SECCOMP ") // audit.log spelling
		if i < 0 {
			return rec, false
		}
	}
	var have struct{ arch, sc, code bool }
	for _, f := range splitAuditFields(line[i:]) {
		k, v, found := strings.Cut(f, "=")
		if !found {
			continue
		}
		switch k {
		case "pid":
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				return rec, false
			}
			rec.PID = n
		case "comm":
			rec.Comm = unquoteAudit(v)
		case "exe":
			rec.Exe = unquoteAudit(v)
		case "arch":
			n, err := strconv.ParseUint(v, 16, 32)
			if err != nil {
				return rec, false
			}
			rec.Arch, have.arch = uint32(n), true
		case "syscall":
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 || n > 1<<31-1 {
				return rec, false
			}
			rec.Syscall, have.sc = n, true
		case "code":
			n, err := strconv.ParseUint(strings.TrimPrefix(v, "0x"), 16, 32)
			if err != nil {
				return rec, false
			}
			rec.Code, have.code = uint32(n), true
		}
	}
	return rec, have.arch && have.sc && have.code
}

// splitAuditFields splits on spaces outside double quotes.
func splitAuditFields(s string) []string {
	var out []string
	start, quoted := 0, false
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '"':
			quoted = !quoted
		case ' ':
			if !quoted {
				if i > start {
					out = append(out, s[start:i])
				}
				start = i + 1
			}
		}
	}
	if start < len(s) {
		out = append(out, s[start:])
	}
	return out
}

// unquoteAudit undoes the audit quoting: "text" or hex for odd bytes.
func unquoteAudit(v string) string {
	if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
		return v[1 : len(v)-1]
	}
	if len(v)%2 == 0 {
		b := make([]byte, 0, len(v)/2)
		for i := 0; i+1 < len(v); i += 2 {
			n, err := strconv.ParseUint(v[i:i+2], 16, 8)
			if err != nil {
				return v
			}
			b = append(b, byte(n))
		}
		return string(b)
	}
	return v
}

func (r AuditRecord) String() string {
	name, ok := syscallName(r.Syscall)
	if !ok {
		name = "#" + strconv.Itoa(r.Syscall)
	}
	return fmt.Sprintf("pid %d %s (%s) arch %#x syscall %s: %v", r.PID, r.Comm, r.Exe, r.Arch, name, r.Action())
}
