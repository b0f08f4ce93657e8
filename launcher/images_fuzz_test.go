package launcher

import (
	"path/filepath"
	"strings"
	"testing"
)

// FuzzImageMountPoint: image paths come from xenstore (libxl's params).
// Whatever imageMountPoint accepts is absolute and clean, under a
// directory, never under what the sandbox mounts itself nor under the
// refused /dev subtrees, and its scaffold is exactly the first component.
func FuzzImageMountPoint(f *testing.F) {
	for _, s := range []string{"/var/lib/xen/pv.img", "/dev/sdb", "/dev/xen/privcmd", "/proc/self/mem",
		"/var/../proc/x", "//var/a", "/a.img", "/srv/a\x00b", "relative/a.img", "/dev/shm/../sda"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		mp, err := imageMountPoint(p)
		if err != nil {
			return
		}
		if !filepath.IsAbs(p) || filepath.Clean(p) != p || strings.ContainsRune(p, 0) {
			t.Fatalf("accepted %q", p)
		}
		first, rest, _ := strings.Cut(p[1:], "/")
		if rest == "" || imageRefusedTop[first] {
			t.Fatalf("accepted %q", p)
		}
		if first == "dev" {
			if mp != "" {
				t.Fatalf("%q: scaffold %q under /dev", p, mp)
			}
			for _, d := range imageRefusedDev {
				if p == d || strings.HasPrefix(p, d+"/") {
					t.Fatalf("accepted %q under %s", p, d)
				}
			}
			return
		}
		if mp != "/"+first {
			t.Fatalf("%q: scaffold %q", p, mp)
		}
	})
}
