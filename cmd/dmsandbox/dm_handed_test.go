package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/dmsandbox/dmsandbox/launcher/dmargv"
	"golang.org/x/sys/unix"
)

// TestPrepareDriveTwin: a read-write drive's fd set holds a read-only fd
// of the same file too (dmargv); DM mode opens the path once and reopens
// that fd, so both are the same inode with their own access modes.
func TestPrepareDriveTwin(t *testing.T) {
	img := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(img, make([]byte, 4096), 0o600); err != nil {
		t.Fatal(err)
	}
	dm := &dmargv.DM{Handed: []dmargv.Handed{
		{Kind: dmargv.HandFile, Name: "drive-d0", Path: img},
		{Kind: dmargv.HandFile, Name: "drive-d0-ro", Path: img, ReadOnly: true},
	}}
	r, err := prepare(dm)
	if err != nil {
		t.Fatal(err)
	}
	defer r.close()
	a, _ := r.files[0].Stat()
	b, _ := r.files[1].Stat()
	if !os.SameFile(a, b) {
		t.Fatal("the read-only twin is another file")
	}
	for i, want := range []int{unix.O_RDWR, unix.O_RDONLY} {
		fl, err := unix.FcntlInt(r.files[i].Fd(), unix.F_GETFL, 0)
		if err != nil || fl&unix.O_ACCMODE != want {
			t.Errorf("fd %d: flags %#x %v, want access mode %#x", i, fl, err, want)
		}
	}
	// A link as the drive is refused before anything is handed.
	link := filepath.Join(t.TempDir(), "link.img")
	if err := os.Symlink(img, link); err != nil {
		t.Fatal(err)
	}
	dm.Handed[0].Path, dm.Handed[1].Path = link, link
	if r, err := prepare(dm); err == nil {
		r.close()
		t.Fatal("a symlinked drive was opened")
	}
}
