package main

import (
	"errors"
	"fmt"
	"io/fs"
	"reflect"
	"sort"
	"strings"
	"syscall"
	"testing"

	"github.com/dmsandbox/dmsandbox/launcher"
	"github.com/dmsandbox/dmsandbox/xenstore"
)

// fakeXenstore answers Read and List from a map of nodes, ENOENT for
// anything else, and err for every request when set.
type fakeXenstore struct {
	nodes map[string]string
	err   error
}

func (f *fakeXenstore) Read(path string) (string, error) {
	if f.err != nil {
		return "", f.err
	}
	v, ok := f.nodes[path]
	if !ok {
		return "", fmt.Errorf("fake read %s: %w", path, syscall.ENOENT)
	}
	return v, nil
}

func (f *fakeXenstore) List(path string) ([]string, error) {
	if f.err != nil {
		return nil, f.err
	}
	seen := map[string]bool{}
	var out []string
	for k := range f.nodes {
		if rest, ok := strings.CutPrefix(k, path+"/"); ok {
			name, _, _ := strings.Cut(rest, "/")
			if !seen[name] {
				seen[name] = true
				out = append(out, name)
			}
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("fake list %s: %w", path, syscall.ENOENT)
	}
	sort.Strings(out)
	return out, nil
}

// The backends as libxl 4.17 writes them for
// disk = [ "format=raw,vdev=xvda,access=rw,backendtype=qdisk,target=..." ]
// plus a read-only qcow2 disk, an empty CD-ROM and another domain's disk.
func TestQdiskImages(t *testing.T) {
	b := "/local/domain/0/backend/qdisk/"
	xs := &fakeXenstore{nodes: map[string]string{
		b + "5/51712/params": "aio:/var/lib/xen/pvdisk.img", b + "5/51712/mode": "w", b + "5/51712/state": "1",
		b + "5/51728/params": "qcow2:/srv/ro.qcow2", b + "5/51728/mode": "r",
		b + "5/5632/params": "", b + "5/5632/device-type": "cdrom",
		b + "6/51712/params": "/var/lib/xen/other.img", b + "6/51712/mode": "w",
	}}
	got, err := qdiskImages(xs, 5)
	if err != nil {
		t.Fatal(err)
	}
	want := []launcher.Image{{Path: "/var/lib/xen/pvdisk.img"}, {Path: "/srv/ro.qcow2", ReadOnly: true}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("images %+v, want %+v", got, want)
	}
	if got, err := qdiskImages(xs, 7); err != nil || len(got) != 0 {
		t.Fatalf("domain without qdisk: %v, %v", got, err)
	}
	xs.nodes[b+"5/../params"] = "/etc/shadow"
	if _, err := qdiskImages(xs, 5); err == nil {
		t.Fatal("a backend id that is not a number was accepted")
	}
	if _, err := qdiskImages(&fakeXenstore{err: errors.New("fake: connection reset")}, 5); err == nil {
		t.Fatal("a xenstore error was taken for no disks")
	}
}

func TestQdiskParams(t *testing.T) {
	for params, want := range map[string]string{
		"/var/lib/xen/a.img": "/var/lib/xen/a.img", "aio:/a/b": "/a/b", "raw:/a/b": "/a/b",
		"qcow2:/a:b": "/a:b", "": "", "vhd:": "",
	} {
		if got := qdiskPath(params); got != want {
			t.Errorf("qdiskPath(%q) = %q, want %q", params, got, want)
		}
	}
	for mode, ro := range map[string]bool{"": false, "w": false, "w!": false, "r": true, "x": true} {
		if qdiskReadOnly(mode) != ro {
			t.Errorf("qdiskReadOnly(%q) = %v", mode, !ro)
		}
	}
}

// Without any xenstore (not dom0), DM mode exposes nothing and goes on:
// QEMU fails on its own there. Any other failure stops the start.
func TestDMImagesNoXenstore(t *testing.T) {
	saved := openXenstore
	defer func() { openXenstore = saved }()
	var logged []string
	logf := func(f string, a ...any) { logged = append(logged, fmt.Sprintf(f, a...)) }
	openXenstore = func() (xenstoreReader, func() error, error) {
		return nil, nil, fmt.Errorf("%w: fake", xenstore.ErrUnavailable)
	}
	if imgs, err := dmImages(3, logf); err != nil || imgs != nil || len(logged) != 1 {
		t.Fatalf("no xenstore: %v %v %q", imgs, err, logged)
	}
	openXenstore = func() (xenstoreReader, func() error, error) { return nil, nil, fs.ErrPermission }
	if _, err := dmImages(3, logf); err == nil {
		t.Fatal("a xenstore that cannot be opened was taken for no xenstore")
	}
	openXenstore = func() (xenstoreReader, func() error, error) {
		return &fakeXenstore{nodes: map[string]string{"/local/domain/0/backend/qdisk/3/51712/params": "/var/a.img"}},
			func() error { return nil }, nil
	}
	logged = nil
	imgs, err := dmImages(3, logf)
	if err != nil || len(imgs) != 1 || len(logged) != 1 || !strings.Contains(logged[0], "/var/a.img (rw) from xenstore") {
		t.Fatalf("one disk: %v %v %q", imgs, err, logged)
	}
}
