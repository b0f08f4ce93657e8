package pci

import (
	"bufio"
	"bytes"
	"fmt"
	"slices"
	"strings"
)

// Mount is one line of /proc/<pid>/mountinfo (proc(5)), the fields the
// in-use checks need.
type Mount struct {
	Dev        string // "major:minor" of st_dev (0:N for pseudo and btrfs)
	MountPoint string // unescaped
	FSType     string
	Source     string // unescaped; the 9p tag for 9p, /dev/... for block filesystems
}

// maxMountinfo bounds what is read: a host with tens of thousands of
// mounts is pathological, and an unbounded read of a /proc file is not
// what a policy check should do.
const maxMountinfo = 4 << 20

// ParseMountinfo parses mountinfo text. The file is the kernel's, but its
// mount points and sources are chosen by whoever mounted (any user with a
// user namespace), so it is parsed as untrusted: a line that does not
// have the fields is an error naming it, never a panic.
func ParseMountinfo(data []byte) ([]Mount, error) {
	var out []Mount
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), len(data)+1)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if strings.TrimSpace(line) == "" {
			continue
		}
		// The kernel separates fields with one space and escapes
		// whitespace inside them: anything else is not mountinfo.
		f := strings.Split(line, " ")
		if slices.Contains(f, "") {
			return nil, fmt.Errorf("mountinfo line %d: %q: empty field: %w", n, trunc(line), ErrMalformed)
		}
		// id parent maj:min root mountpoint options [optional...] - fstype source superopts
		sep := -1
		for i := 6; i < len(f); i++ {
			if f[i] == "-" {
				sep = i
				break
			}
		}
		if len(f) < 6 || sep < 0 || sep+2 >= len(f) {
			return nil, fmt.Errorf("mountinfo line %d: %q: %w", n, trunc(line), ErrMalformed)
		}
		if !strings.Contains(f[2], ":") {
			return nil, fmt.Errorf("mountinfo line %d: device %q is not major:minor: %w", n, trunc(f[2]), ErrMalformed)
		}
		out = append(out, Mount{Dev: f[2], MountPoint: unescapeOctal(f[4]), FSType: f[sep+1], Source: unescapeOctal(f[sep+2])})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("mountinfo: %w: %w", err, ErrMalformed)
	}
	return out, nil
}

// unescapeOctal undoes the kernel's \ooo escapes of space, tab, newline
// and backslash (seq_file mangle); anything else is left as it is.
func unescapeOctal(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) && isOctal(s[i+1]) && isOctal(s[i+2]) && isOctal(s[i+3]) {
			v := (s[i+1]-'0')<<6 | (s[i+2]-'0')<<3 | (s[i+3] - '0')
			b.WriteByte(v)
			i += 3
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isOctal(c byte) bool { return c >= '0' && c <= '7' }

func trunc(s string) string {
	if len(s) > 80 {
		return s[:80] + "…"
	}
	return s
}
