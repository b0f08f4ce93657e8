package rig

import (
	"fmt"
	"io"
)

// cpioWriter writes the "newc" (SVR4, no CRC) cpio format the kernel unpacks
// into its initial rootfs (Documentation/driver-api/early-userspace/
// buffer-format.rst). Writing it here instead of piping `find | cpio` keeps
// the image byte-for-byte reproducible: fixed inode numbers, mtime 0, root
// ownership, entries in the order given.
type cpioWriter struct {
	w    io.Writer
	ino  uint32
	off  int64
	err  error
	done bool
	rdev [2]uint32 // major, minor of the next entry (device nodes only)
}

const (
	cpioDir  = 0o040000
	cpioFile = 0o100000
	cpioLink = 0o120000
	cpioChar = 0o020000
)

func newCPIOWriter(w io.Writer) *cpioWriter { return &cpioWriter{w: w, ino: 1} }

// Dir adds a directory.
func (c *cpioWriter) Dir(name string, perm uint32) { c.entry(name, cpioDir|perm, nil) }

// File adds a regular file with its contents.
func (c *cpioWriter) File(name string, perm uint32, data []byte) {
	c.entry(name, cpioFile|perm, data)
}

// Symlink adds a symbolic link; its data is the target.
func (c *cpioWriter) Symlink(name, target string) { c.entry(name, cpioLink|0o777, []byte(target)) }

// CharDev adds a character device node. /dev/console must exist before
// /init runs: the kernel opens it for init's stdin/stdout/stderr.
func (c *cpioWriter) CharDev(name string, perm, major, minor uint32) {
	c.rdev = [2]uint32{major, minor}
	c.entry(name, cpioChar|perm, nil)
	c.rdev = [2]uint32{}
}

// Close writes the trailer. The kernel stops at "TRAILER!!!".
func (c *cpioWriter) Close() error {
	if !c.done {
		c.entry("TRAILER!!!", 0, nil)
		c.done = true
	}
	return c.err
}

func (c *cpioWriter) entry(name string, mode uint32, data []byte) {
	if c.err != nil {
		return
	}
	nlink := uint32(1)
	if mode&0o170000 == cpioDir {
		nlink = 2
	}
	ino := c.ino
	if name == "TRAILER!!!" {
		ino = 0
	}
	c.ino++
	// magic, ino, mode, uid, gid, nlink, mtime, filesize, devmajor, devminor,
	// rdevmajor, rdevminor, namesize (with NUL), check
	hdr := fmt.Sprintf("070701%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x",
		ino, mode, 0, 0, nlink, 0, len(data), 0, 0, c.rdev[0], c.rdev[1], len(name)+1, 0)
	c.write([]byte(hdr))
	c.write([]byte(name + "\x00"))
	c.pad() // header+name are padded to a multiple of 4
	c.write(data)
	c.pad() // so is the data
}

func (c *cpioWriter) write(b []byte) {
	if c.err != nil {
		return
	}
	n, err := c.w.Write(b)
	c.off += int64(n)
	c.err = err
}

func (c *cpioWriter) pad() {
	if r := c.off % 4; r != 0 {
		c.write(make([]byte, 4-r))
	}
}
