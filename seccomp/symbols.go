package seccomp

import (
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// symbols are the names a profile may use in argument values. They come
// from golang.org/x/sys/unix (generated from the kernel headers), never
// typed in as numbers.
var symbols = map[string]uint64{
	// socket(2) domains and types
	"AF_UNIX":        unix.AF_UNIX,
	"AF_INET":        unix.AF_INET,
	"AF_INET6":       unix.AF_INET6,
	"AF_PACKET":      unix.AF_PACKET,
	"AF_VSOCK":       unix.AF_VSOCK,
	"AF_NETLINK":     unix.AF_NETLINK,
	"SOCK_STREAM":    unix.SOCK_STREAM,
	"SOCK_DGRAM":     unix.SOCK_DGRAM,
	"SOCK_SEQPACKET": unix.SOCK_SEQPACKET,
	"SOCK_NONBLOCK":  unix.SOCK_NONBLOCK,
	"SOCK_CLOEXEC":   unix.SOCK_CLOEXEC,

	// clone(2) flags
	"CLONE_VM":             unix.CLONE_VM,
	"CLONE_FS":             unix.CLONE_FS,
	"CLONE_FILES":          unix.CLONE_FILES,
	"CLONE_SIGHAND":        unix.CLONE_SIGHAND,
	"CLONE_THREAD":         unix.CLONE_THREAD,
	"CLONE_SYSVSEM":        unix.CLONE_SYSVSEM,
	"CLONE_SETTLS":         unix.CLONE_SETTLS,
	"CLONE_PARENT_SETTID":  unix.CLONE_PARENT_SETTID,
	"CLONE_CHILD_CLEARTID": unix.CLONE_CHILD_CLEARTID,
	"CLONE_NEWNS":          unix.CLONE_NEWNS,
	"CLONE_NEWCGROUP":      unix.CLONE_NEWCGROUP,
	"CLONE_NEWUTS":         unix.CLONE_NEWUTS,
	"CLONE_NEWIPC":         unix.CLONE_NEWIPC,
	"CLONE_NEWUSER":        unix.CLONE_NEWUSER,
	"CLONE_NEWPID":         unix.CLONE_NEWPID,
	"CLONE_NEWNET":         unix.CLONE_NEWNET,
	"CLONE_NEWTIME":        unix.CLONE_NEWTIME,
	"CLONE_VFORK":          unix.CLONE_VFORK,
	"CLONE_PARENT":         unix.CLONE_PARENT,
	"CLONE_PTRACE":         unix.CLONE_PTRACE,
	"CLONE_UNTRACED":       unix.CLONE_UNTRACED,
	"CLONE_PIDFD":          unix.CLONE_PIDFD,

	// signals (for check)
	"SIGKILL": uint64(unix.SIGKILL),
	"SIGTERM": uint64(unix.SIGTERM),
	"SIGUSR1": uint64(unix.SIGUSR1),
	"SIGURG":  uint64(unix.SIGURG),
	"SIGCHLD": uint64(unix.SIGCHLD),

	// prctl(2) options
	"PR_SET_NAME":         unix.PR_SET_NAME,
	"PR_GET_NAME":         unix.PR_GET_NAME,
	"PR_SET_TIMERSLACK":   unix.PR_SET_TIMERSLACK,
	"PR_MCE_KILL":         unix.PR_MCE_KILL,
	"PR_SET_PDEATHSIG":    unix.PR_SET_PDEATHSIG,
	"PR_GET_DUMPABLE":     unix.PR_GET_DUMPABLE,
	"PR_SET_VMA":          unix.PR_SET_VMA,
	"PR_CAPBSET_READ":     unix.PR_CAPBSET_READ,
	"PR_GET_SECUREBITS":   unix.PR_GET_SECUREBITS,
	"PR_GET_NO_NEW_PRIVS": unix.PR_GET_NO_NEW_PRIVS,

	// prlimit64(2) resources
	"RLIMIT_NOFILE":  unix.RLIMIT_NOFILE,
	"RLIMIT_STACK":   unix.RLIMIT_STACK,
	"RLIMIT_MEMLOCK": unix.RLIMIT_MEMLOCK,
	"RLIMIT_AS":      unix.RLIMIT_AS,

	// fcntl(2) commands
	"F_GETFD":         unix.F_GETFD,
	"F_SETFD":         unix.F_SETFD,
	"F_GETFL":         unix.F_GETFL,
	"F_SETFL":         unix.F_SETFL,
	"F_DUPFD_CLOEXEC": unix.F_DUPFD_CLOEXEC,
	"F_OFD_SETLK":     unix.F_OFD_SETLK,
	"F_OFD_GETLK":     unix.F_OFD_GETLK,
	"F_SETLK":         unix.F_SETLK,
	"F_GETLK":         unix.F_GETLK,
	"F_ADD_SEALS":     unix.F_ADD_SEALS,
	"F_GET_SEALS":     unix.F_GET_SEALS,

	// mmap/mprotect protections
	"PROT_EXEC": unix.PROT_EXEC,

	// seccomp(2) operations
	"SECCOMP_SET_MODE_FILTER":   unix.SECCOMP_SET_MODE_FILTER,
	"SECCOMP_GET_ACTION_AVAIL":  unix.SECCOMP_GET_ACTION_AVAIL,
	"SECCOMP_GET_NOTIF_SIZES":   unix.SECCOMP_GET_NOTIF_SIZES,
	"SECCOMP_FILTER_FLAG_TSYNC": unix.SECCOMP_FILTER_FLAG_TSYNC,
}

// evalSymbols evaluates "A|B|0x10": names from symbols and numbers
// (strconv base 0), ORed together. The empty string is an error.
func evalSymbols(expr string) (uint64, error) {
	if strings.TrimSpace(expr) == "" {
		return 0, fmt.Errorf("empty value")
	}
	var v uint64
	for _, term := range strings.Split(expr, "|") {
		term = strings.TrimSpace(term)
		if n, ok := symbols[term]; ok {
			v |= n
			continue
		}
		n, err := strconv.ParseUint(term, 0, 64)
		if err != nil {
			return 0, fmt.Errorf("unknown symbol %q", term)
		}
		v |= n
	}
	return v, nil
}
