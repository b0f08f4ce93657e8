package launcher

import (
	"debug/elf"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// libDirs are searched for DT_NEEDED libraries after the object's own
// RUNPATH/RPATH, in the order Debian's ld.so.cache effectively gives on
// x86_64 (multiarch first).
var libDirs = []string{
	"/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu",
	"/lib64", "/usr/lib64", "/lib", "/usr/lib",
}

// elfClosure returns the ELF objects a dynamically linked program needs to
// start: its interpreter and every DT_NEEDED library, transitively, as host
// paths (possibly symlinks; the caller copies links faithfully). A static
// binary yields nothing. A library that cannot be found is an error: a root
// missing it would only fail later, inside the sandbox, with a worse message.
func elfClosure(paths ...string) ([]string, error) {
	seen := map[string]bool{}
	var out []string
	queue := append([]string(nil), paths...)
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		interp, needed, search, err := elfInfo(p)
		if err != nil {
			return nil, err
		}
		if interp != "" && !seen[interp] {
			seen[interp] = true
			out = append(out, interp)
		}
		for _, lib := range needed {
			found, err := findLib(lib, search)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", p, err)
			}
			if !seen[found] {
				seen[found] = true
				out = append(out, found)
				queue = append(queue, found)
			}
		}
	}
	return out, nil
}

// elfInfo reads an object's interpreter, DT_NEEDED entries and its library
// search path (RUNPATH, else RPATH, with $ORIGIN expanded).
func elfInfo(path string) (interp string, needed, search []string, err error) {
	f, err := elf.Open(path)
	if err != nil {
		return "", nil, nil, fmt.Errorf("read elf %s: %w", path, err)
	}
	defer f.Close()
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			buf := make([]byte, prog.Filesz)
			if _, err := prog.ReadAt(buf, 0); err != nil {
				return "", nil, nil, fmt.Errorf("read interpreter of %s: %w", path, err)
			}
			interp = strings.TrimRight(string(buf), "\x00")
		}
	}
	needed, err = f.DynString(elf.DT_NEEDED)
	if err != nil {
		// No dynamic section: a static binary needs nothing.
		return interp, nil, nil, nil
	}
	rp, _ := f.DynString(elf.DT_RUNPATH)
	if len(rp) == 0 {
		rp, _ = f.DynString(elf.DT_RPATH)
	}
	origin := filepath.Dir(path)
	for _, entry := range rp {
		for _, d := range strings.Split(entry, ":") {
			d = strings.ReplaceAll(strings.ReplaceAll(d, "${ORIGIN}", origin), "$ORIGIN", origin)
			if d != "" {
				search = append(search, d)
			}
		}
	}
	return interp, needed, search, nil
}

func findLib(name string, search []string) (string, error) {
	if strings.Contains(name, "/") {
		return name, nil
	}
	for _, d := range append(search, libDirs...) {
		p := filepath.Join(d, name)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
			return p, nil
		}
	}
	return "", fmt.Errorf("library %s not found in %v", name, append(search, libDirs...))
}
