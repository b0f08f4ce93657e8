package launcher

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
)

// rootfsFormat is part of every root's identity: bump it when the layout
// of a built root changes, so old cache entries are never reused.
const rootfsFormat = "dmsandbox-rootfs-v1"

// mountPoints are created empty in every root so that runc never has to
// write into the (cached, shared) root directory at start. /sys stays an
// empty directory unless VFIO devices are handed in (vfio.go).
var mountPoints = []string{"/proc", "/dev", "/tmp", "/run", "/sys"}

// qemuDataDirs are what a qemu-system-* binary loads besides its ELF
// dependencies: its firmware search path (Debian's `qemu-system-x86_64 -L
// help`: option ROMs and keymaps, SeaBIOS, iPXE ROMs). Missing ones are
// skipped: not every host has every firmware package.
var qemuDataDirs = []string{"/usr/share/qemu", "/usr/share/seabios", "/usr/lib/ipxe/qemu"}

// qemuModuleGlobs are the QEMU modules copied into the root. Debian builds
// TCG as a module; UI and audio modules are left out on purpose: they pull
// in GTK/SDL/PulseAudio and have no place in a device model.
var qemuModuleGlobs = []string{"/usr/lib/x86_64-linux-gnu/qemu/accel-*.so"}

// rootEntry is one node of a planned root: a directory, a symlink (Target)
// or a regular file copied from Host.
type rootEntry struct {
	Path   string // absolute path inside the root
	Kind   byte   // 'd', 'l' or 'f'
	Target string // link target, as on the host
	Host   string // source of a file
	Size   int64
	Mtime  int64
	Ino    uint64
	Mode   fs.FileMode
	Tree   bool // a directory copied with all its entries
	Synth  bool // made for the sandbox (a mount point), not copied
}

// rootPlan is the list of nodes a root needs, and its identity.
type rootPlan struct {
	entries map[string]rootEntry
	// seen caches Lstat results: every path shares its leading
	// components with many others (/usr/lib/x86_64-linux-gnu/...), and
	// planning is on every launch's path.
	seen map[string]lstatResult
}

type lstatResult struct {
	fi  fs.FileInfo
	err error
}

func (p *rootPlan) lstat(path string) (fs.FileInfo, error) {
	if r, ok := p.seen[path]; ok {
		return r.fi, r.err
	}
	fi, err := os.Lstat(path)
	p.seen[path] = lstatResult{fi, err}
	return fi, err
}

// planRoot lists what PROGRAM needs: itself, its ELF closure and, for
// QEMU, its data and module directories, plus the config's extra paths
// and the empty mount points of mounts (images.go: where a disk image's
// scaffold tmpfs goes), which must not be anything the root holds.
// Symlinks on the way (Debian's merged /usr: /lib -> usr/lib) are
// reproduced, not flattened, so that paths baked into binaries resolve.
func planRoot(program string, extra []string, files []RootFile, mounts ...string) (*rootPlan, error) {
	p := &rootPlan{entries: map[string]rootEntry{}, seen: map[string]lstatResult{}}
	for _, mp := range mountPoints {
		p.entries[mp] = rootEntry{Path: mp, Kind: 'd', Mode: 0o755, Synth: true}
	}
	objects := []string{program}
	var trees []string
	if isQEMU(program) {
		for _, g := range qemuModuleGlobs {
			mods, _ := filepath.Glob(g)
			objects = append(objects, mods...)
		}
		for _, d := range qemuDataDirs {
			if _, err := os.Stat(d); err == nil {
				trees = append(trees, d)
			}
		}
	}
	deps, err := elfClosure(objects...)
	if err != nil {
		return nil, err
	}
	for _, path := range append(append(objects, deps...), append(trees, extra...)...) {
		if err := p.add(path, 0); err != nil {
			return nil, err
		}
	}
	for _, f := range files {
		if err := p.addFileAt(f); err != nil {
			return nil, err
		}
	}
	for _, mp := range mounts {
		if e, ok := p.entries[mp]; ok && !(e.Synth && e.Kind == 'd') {
			return nil, fmt.Errorf("rootfs: %w: %s is part of the sandbox root, nothing can be mounted over it", ErrUsage, mp)
		}
		p.entries[mp] = rootEntry{Path: mp, Kind: 'd', Mode: 0o755, Synth: true}
	}
	return p, nil
}

// addFileAt plans host file f.Host at f.Path in the root, whatever its
// host path: directories on the way that the root does not hold yet are
// made for it.
func (p *rootPlan) addFileAt(f RootFile) error {
	st, err := os.Lstat(f.Host)
	if err != nil {
		return fmt.Errorf("rootfs: %w", err)
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("rootfs: %w: %s is not a regular file", ErrUsage, f.Host)
	}
	var dirs []string
	for d := filepath.Dir(f.Path); d != "/"; d = filepath.Dir(d) {
		dirs = append([]string{d}, dirs...)
	}
	for _, d := range dirs {
		e, ok := p.entries[d]
		switch {
		case !ok:
			p.entries[d] = rootEntry{Path: d, Kind: 'd', Mode: 0o755, Synth: true}
		case e.Kind != 'd':
			return fmt.Errorf("rootfs: %w: %s: %s is not a directory in the root", ErrUsage, f.Path, d)
		}
	}
	if _, ok := p.entries[f.Path]; ok {
		return fmt.Errorf("rootfs: %w: %s is already part of the root", ErrUsage, f.Path)
	}
	sys := st.Sys().(*syscall.Stat_t)
	p.entries[f.Path] = rootEntry{Path: f.Path, Kind: 'f', Host: f.Host, Size: st.Size(),
		Mtime: st.ModTime().UnixNano(), Ino: sys.Ino, Mode: st.Mode().Perm()}
	return nil
}

// add plans host path (absolute) and, through symlinks, what it points to.
func (p *rootPlan) add(path string, depth int) error {
	if depth > 40 {
		return fmt.Errorf("too many levels of symbolic links at %s", path)
	}
	path = filepath.Clean(path)
	// Walk the parents so that a symlinked directory on the way is
	// reproduced as a link and followed.
	parts := strings.Split(strings.TrimPrefix(path, "/"), "/")
	cur := "/"
	for i, part := range parts {
		next := filepath.Join(cur, part)
		st, err := p.lstat(next)
		if err != nil {
			if i == len(parts)-1 && errors.Is(err, fs.ErrNotExist) && depth > 0 {
				return nil // a dangling link (e.g. an uninstalled OVMF): keep the link, skip the target
			}
			return fmt.Errorf("rootfs: %w", err)
		}
		if st.Mode()&fs.ModeSymlink != 0 {
			target, err := os.Readlink(next)
			if err != nil {
				return fmt.Errorf("rootfs: %w", err)
			}
			p.entries[next] = rootEntry{Path: next, Kind: 'l', Target: target}
			resolved := target
			if !filepath.IsAbs(target) {
				resolved = filepath.Join(cur, target)
			}
			rest := filepath.Join(append([]string{resolved}, parts[i+1:]...)...)
			return p.add(rest, depth+1)
		}
		if i < len(parts)-1 {
			if _, done := p.entries[next]; done {
				cur = next
				continue
			}
			if !st.IsDir() {
				return fmt.Errorf("rootfs: %s is not a directory", next)
			}
			p.entries[next] = rootEntry{Path: next, Kind: 'd', Mode: st.Mode().Perm()}
			cur = next
			continue
		}
		if st.IsDir() {
			// A directory copied whole: its mtime is part of the identity
			// (an added or removed file changes it).
			p.entries[next] = rootEntry{Path: next, Kind: 'd', Mode: st.Mode().Perm(),
				Mtime: st.ModTime().UnixNano(), Tree: true}
			ents, err := os.ReadDir(next)
			if err != nil {
				return fmt.Errorf("rootfs: %w", err)
			}
			for _, e := range ents {
				if err := p.add(filepath.Join(next, e.Name()), depth); err != nil {
					return err
				}
			}
			return nil
		}
		if !st.Mode().IsRegular() {
			return fmt.Errorf("rootfs: %s is neither a file, a directory nor a link", next)
		}
		sys := st.Sys().(*syscall.Stat_t)
		p.entries[next] = rootEntry{Path: next, Kind: 'f', Host: next, Size: st.Size(),
			Mtime: st.ModTime().UnixNano(), Ino: sys.Ino, Mode: st.Mode().Perm()}
	}
	return nil
}

// sorted returns the entries in path order (parents before children).
func (p *rootPlan) sorted() []rootEntry {
	out := make([]rootEntry, 0, len(p.entries))
	for _, e := range p.entries {
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out
}

// identity names the root by what it is made of: every node's path, kind,
// link target, and for files size, mtime, inode and mode. A package upgrade
// replaces files (new inode and mtime) and so yields a new root. Hashing
// file contents would cost ~0.2 s per launch for QEMU's 60 MB closure; the
// metadata identifies the same content on a host where only root writes
// /usr.
func (p *rootPlan) identity() string {
	h := sha256.New()
	io.WriteString(h, rootfsFormat+"\n")
	for _, e := range p.sorted() {
		fmt.Fprintf(h, "%c %s %s %d %d %d %o\n", e.Kind, e.Path, e.Target, e.Size, e.Mtime, e.Ino, e.Mode)
	}
	return hex.EncodeToString(h.Sum(nil))[:32]
}

// ensureRoot returns the directory of the minimal root for program,
// building it under cacheDir/roots when no root of the same identity
// exists. Concurrent builders race benignly: each builds in its own
// temporary directory and the first rename wins.
func ensureRoot(cacheDir, program string, extra []string, files []RootFile, mounts ...string) (string, error) {
	plan, err := planRootCached(cacheDir, program, extra, files, mounts...)
	if err != nil {
		return "", err
	}
	rootsDir := filepath.Join(cacheDir, "roots")
	dir := filepath.Join(rootsDir, plan.identity())
	// 0711: a user-namespace sandbox's setup runs as an unmapped host
	// id that must traverse to its root, but nobody may list the cache.
	for _, d := range []string{cacheDir, rootsDir} {
		if err := os.MkdirAll(d, 0o711); err != nil {
			return "", fmt.Errorf("rootfs: %w", err)
		}
		if err := os.Chmod(d, 0o711); err != nil {
			return "", fmt.Errorf("rootfs: %w", err)
		}
	}
	if st, err := os.Stat(dir); err == nil && st.IsDir() {
		return dir, nil
	}
	tmp, err := os.MkdirTemp(rootsDir, ".build-")
	if err != nil {
		return "", fmt.Errorf("rootfs: %w", err)
	}
	defer os.RemoveAll(tmp) // a no-op after a successful rename
	if err := plan.build(tmp); err != nil {
		return "", err
	}
	// The root itself must be readable by the sandbox uid.
	if err := os.Chmod(tmp, 0o755); err != nil {
		return "", fmt.Errorf("rootfs: %w", err)
	}
	if err := os.Rename(tmp, dir); err != nil {
		if st, serr := os.Stat(dir); serr == nil && st.IsDir() {
			return dir, nil // another launcher built the same root first
		}
		return "", fmt.Errorf("rootfs: %w", err)
	}
	return dir, nil
}

// build materialises the plan under dir. Files are hard-linked from the
// host when on the same filesystem (free, and the root is mounted
// read-only anyway), copied otherwise.
func (p *rootPlan) build(dir string) error {
	for _, e := range p.sorted() {
		dst := filepath.Join(dir, e.Path)
		var err error
		switch e.Kind {
		case 'd':
			err = os.MkdirAll(dst, 0o755)
			if err == nil {
				err = os.Chmod(dst, e.Mode)
			}
		case 'l':
			err = os.Symlink(e.Target, dst)
		case 'f':
			if err = realParents(e.Host); err != nil {
				break
			}
			if err = os.Link(e.Host, dst); err == nil {
				err = samePlanned(dst, e)
			} else {
				err = copyFile(e.Host, dst, e)
			}
		}
		if err != nil {
			return fmt.Errorf("rootfs: build %s: %w", e.Path, err)
		}
	}
	return nil
}

// realParents checks that no parent directory of a planned file has
// become a symlink since planning (planning reproduced every link as a
// node of its own, so a planned file's path has none): a swapped-in link
// must not smuggle another host file into the root.
func realParents(path string) error {
	for dir := filepath.Dir(path); dir != "/"; dir = filepath.Dir(dir) {
		st, err := os.Lstat(dir)
		if err != nil {
			return err
		}
		if !st.IsDir() {
			return fmt.Errorf("%s changed between planning and building: %s is no longer a directory", path, dir)
		}
	}
	return nil
}

// samePlanned checks that the file made at path is a regular file of the
// planned size: not by inode, since on overlayfs a hard link copies the
// file up (new inode), nor by mtime, which a copy-up from a 9p lower layer
// does not keep exactly (seen in the nested Xen rig). realParents is the
// check that matters; this one catches a file replaced in between.
func samePlanned(path string, e rootEntry) error {
	st, err := os.Lstat(path)
	if err != nil {
		return err
	}
	if !st.Mode().IsRegular() || st.Size() != e.Size {
		return fmt.Errorf("%s changed between planning and building (size %d, planned %d)", e.Host, st.Size(), e.Size)
	}
	return nil
}

// copyFile copies the planned file e, refusing a final symlink and a file
// other than the planned one.
func copyFile(src, dst string, e rootEntry) error {
	in, err := os.OpenFile(src, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return err
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return err
	}
	if !st.Mode().IsRegular() || st.Size() != e.Size {
		return fmt.Errorf("%s changed between planning and building", src)
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, e.Mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// isQEMU tells whether program is a QEMU system emulator, which gets the
// management QMP socket and QEMU's data directories.
func isQEMU(program string) bool {
	base := filepath.Base(program)
	return strings.HasPrefix(base, "qemu-system-") || strings.HasSuffix(base, "-qemu-system-i386")
}

// planRootCached returns the plan recorded by an earlier launch of the same
// program when every node of it is unchanged on the host (one lstat per
// node, ~1 ms for QEMU), and plans anew otherwise (ELF parsing and
// directory walks, ~10 ms). The recorded plan is only a shortcut: the
// identity is still computed from what is on the host now.
func planRootCached(cacheDir, program string, extra []string, files []RootFile, mounts ...string) (*rootPlan, error) {
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%s\x00%s\x00%s", rootfsFormat, program, strings.Join(extra, "\x00"), strings.Join(mountPoints, "\x00"))
	if len(mounts) > 0 { // (keeps the memo names of roots without mounts)
		fmt.Fprintf(h, "\x00mounts\x00%s", strings.Join(mounts, "\x00"))
	}
	for _, f := range files { // (and of roots without placed files)
		fmt.Fprintf(h, "\x00file\x00%s\x00%s", f.Path, f.Host)
	}
	memo := filepath.Join(cacheDir, "plans", hex.EncodeToString(h.Sum(nil))[:32]+".json")
	if data, err := os.ReadFile(memo); err == nil {
		var entries []rootEntry
		if json.Unmarshal(data, &entries) == nil && len(entries) > 0 && unchanged(entries) {
			p := &rootPlan{entries: make(map[string]rootEntry, len(entries))}
			for _, e := range entries {
				p.entries[e.Path] = e
			}
			return p, nil
		}
	}
	p, err := planRoot(program, extra, files, mounts...)
	if err != nil {
		return nil, err
	}
	// Best effort: a plan that cannot be recorded is planned again next
	// time.
	if data, err := json.Marshal(p.sorted()); err == nil {
		if os.MkdirAll(filepath.Dir(memo), 0o700) == nil {
			tmp := fmt.Sprintf("%s.%d", memo, os.Getpid())
			if os.WriteFile(tmp, data, 0o600) == nil {
				os.Rename(tmp, memo)
			}
		}
	}
	return p, nil
}

// unchanged tells whether every recorded node still is what it was.
func unchanged(entries []rootEntry) bool {
	for _, e := range entries {
		if e.Synth {
			continue
		}
		src := e.Path
		if e.Kind == 'f' && e.Host != "" {
			src = e.Host // a file placed at another path (Spec.RootFiles)
		}
		st, err := os.Lstat(src)
		if err != nil {
			return false
		}
		switch e.Kind {
		case 'l':
			if st.Mode()&fs.ModeSymlink == 0 {
				return false
			}
			if t, err := os.Readlink(e.Path); err != nil || t != e.Target {
				return false
			}
		case 'd':
			if !st.IsDir() || st.Mode().Perm() != e.Mode || (e.Tree && st.ModTime().UnixNano() != e.Mtime) {
				return false
			}
		case 'f':
			sys, ok := st.Sys().(*syscall.Stat_t)
			if !ok || !st.Mode().IsRegular() || st.Size() != e.Size || st.ModTime().UnixNano() != e.Mtime ||
				sys.Ino != e.Ino || st.Mode().Perm() != e.Mode {
				return false
			}
		default:
			return false
		}
	}
	return true
}
