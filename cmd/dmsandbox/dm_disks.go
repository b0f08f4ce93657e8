package main

import (
	"errors"
	"fmt"
	"io/fs"
	"sort"
	"strconv"
	"strings"

	"github.com/dmsandbox/dmsandbox/launcher"
	"github.com/dmsandbox/dmsandbox/xenstore"
)

// PV disks (qdisk). For every disk with backendtype=qdisk, libxl writes
// the backend directory /local/domain/0/backend/qdisk/DOMID/DEVID
// (params, mode, ...) before it spawns the device model: disks are added
// in domcreate_rebuild_done, the device model is launched from
// domcreate_launch_dm, their callback (libxl_create.c, 4.17-4.19; seen in
// the nested Xen rig's xl -vvv log). QEMU's xen-bus then creates a
// xen-block device for each and opens the image by the path in params,
// which the sandbox root does not hold. So DM mode reads those backends
// once, before the sandbox starts, and asks the launcher to expose each
// image at its path (launcher/images.go: a loop device over dmsandbox's
// own open of the image, never the user's file or a link).
//
// Not covered: a qdisk disk hot-plugged after start (xl block-attach)
// finds no image in the sandbox and QEMU fails that device alone;
// backends in a driver domain other than dom0; qcow2/vhd backing files
// (QEMU opens them by the path in the image header).

// xenstoreReader is what qdiskImages needs of xenstore.Client.
type xenstoreReader interface {
	Read(path string) (string, error)
	List(path string) ([]string, error)
}

// openXenstore is xenstore.Open; a variable for tests.
var openXenstore = func() (xenstoreReader, func() error, error) {
	c, err := xenstore.Open()
	if err != nil {
		return nil, nil, err
	}
	return c, c.Close, nil
}

// dmImages returns the images of domid's qdisk backends. With no
// xenstore at all (not dom0) there are none: QEMU fails on its own
// there, and exposing nothing is the safe side.
func dmImages(domid int, logf func(string, ...any)) ([]launcher.Image, error) {
	xs, closeXS, err := openXenstore()
	if errors.Is(err, xenstore.ErrUnavailable) {
		logf("domain %d: no xenstore, no qdisk disks: %v", domid, err)
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer closeXS()
	imgs, err := qdiskImages(xs, domid)
	for _, img := range imgs {
		mode := "rw"
		if img.ReadOnly {
			mode = "ro"
		}
		logf("domain %d: qdisk image %s (%s) from xenstore, to be exposed to QEMU", domid, img.Path, mode)
	}
	return imgs, err
}

// qdiskImages reads /local/domain/0/backend/qdisk/DOMID/*.
func qdiskImages(xs xenstoreReader, domid int) ([]launcher.Image, error) {
	dir := fmt.Sprintf("/local/domain/0/backend/qdisk/%d", domid)
	devs, err := xs.List(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("qdisk backends: %w", err)
	}
	sort.Strings(devs)
	var out []launcher.Image
	for _, dev := range devs {
		if _, err := strconv.ParseUint(dev, 10, 32); err != nil {
			return nil, fmt.Errorf("qdisk backend %s/%s: not a device id", dir, dev)
		}
		params, err := xs.Read(dir + "/" + dev + "/params")
		if errors.Is(err, fs.ErrNotExist) {
			continue // not written (yet): QEMU does not create the device either
		}
		if err != nil {
			return nil, fmt.Errorf("qdisk backend %s/%s: %w", dir, dev, err)
		}
		path := qdiskPath(params)
		if path == "" {
			continue // an empty CD-ROM drive
		}
		mode, err := xs.Read(dir + "/" + dev + "/mode")
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("qdisk backend %s/%s: %w", dir, dev, err)
		}
		out = append(out, launcher.Image{Path: path, ReadOnly: qdiskReadOnly(mode)})
	}
	return out, nil
}

// qdiskPath is the file QEMU 7.2's xen_block_drive_create opens for a
// params value: what follows the first ':' ("aio:", "raw:", "qcow2:"),
// or all of it without one.
func qdiskPath(params string) string {
	if _, after, ok := strings.Cut(params, ":"); ok {
		return after
	}
	return params
}

// qdiskReadOnly mirrors xen_block_drive_create: read-only unless mode is
// absent or starts with 'w'.
func qdiskReadOnly(mode string) bool { return mode != "" && mode[0] != 'w' }
