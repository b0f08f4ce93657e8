// Command rigcapture boots the rig's L1 with a fixed set of QEMU-emulated
// PCI devices, runs pci/testdata/capture.sh inside it and stores the captured
// sysfs trees under pci/testdata/sysfs/rig-<name>/ (run by `make
// rig-capture` from the repository root). The trees are the pci package's
// fake sysfs testdata, so they come from a real kernel looking at real
// (emulated) hardware, never written by hand.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/dmsandbox/dmsandbox/integration/rig"
)

// devices: every shape the pci package must understand.
var devices = []string{
	// edu behind its own PCIe root port: alone on a secondary bus, so the
	// kernel offers a secondary bus reset ("bus").
	"pcie-root-port,id=rp1,chassis=1,slot=1", "edu,bus=rp1",
	// edu on the root bus: no reset method at all.
	"edu",
	// a NIC with an in-tree driver (e1000e) and PCIe/PM/MSI/MSI-X caps.
	"e1000e",
	// a virtio device (vendor capabilities, MSI-X).
	"virtio-net-pci",
	// a multi-function device: functions of one slot without ACS share an
	// IOMMU group.
	"virtio-rng-pci,addr=0x6.0,multifunction=on", "virtio-balloon-pci,addr=0x6.1",
	// a conventional PCI bus behind a PCIe-to-PCI bridge with two devices
	// on it: a bus reset of one hits the other; they share an IOMMU group
	// (requester IDs alias to the bridge); Linux lists "bus" in
	// reset_method of the first one scanned only (see docs/rigs.md).
	"pcie-root-port,id=rp2,chassis=2,slot=2", "pcie-pci-bridge,id=br1,bus=rp2", "edu,bus=br1,addr=1", "e1000,bus=br1,addr=2",
}

// guestScript captures the tree as booted (each device on its in-tree
// driver, if any), then again with the edu behind the root port bound to
// vfio-pci, as the pci package will see an assigned device.
const guestScript = `
set -eu
cap="bash $CAPTURE"
# Capture into L1's RAM and ship one tar: thousands of small writes over
# the 9p share cost a minute, one file a fraction of a second.
$cap /run/cap/rig-q35 "$NOTE"
edu=
for d in /sys/bus/pci/devices/*; do
	if [ "$(cat $d/vendor):$(cat $d/device)" = 0x1234:0x11e8 ] && [ "$(cat $(dirname $(readlink -f $d))/device)" = 0x000c ]; then edu=$(basename $d); fi
done
[ -n "$edu" ] || { echo "no edu behind a root port"; exit 1; }
echo vfio-pci > /sys/bus/pci/devices/$edu/driver_override
echo $edu > /sys/bus/pci/drivers_probe
[ "$(basename $(readlink /sys/bus/pci/devices/$edu/driver))" = vfio-pci ]
$cap /run/cap/rig-q35-edu-vfio "$NOTE; then $edu bound to vfio-pci through driver_override + drivers_probe"
tar -C /run/cap -cf "$RIG_OUT/captures.tar" .
`

const readmeText = `# %s — sysfs captured in the dmsandbox rig

Captured %s.

Made by ` + "`make rig-capture`" + ` (integration/cmd/rigcapture): it boots the rig's L1
(integration/rig: Debian's 6.1 kernel under QEMU TCG, q35, intel-iommu with
interrupt remapping, kernel cmdline intel_iommu=on iommu=pt) with

    %s

and runs pci/testdata/capture.sh inside L1; CAPTURE holds the exact note and
the device list. Regenerate with ` + "`make rig-capture`" + `, never edit by hand.

The two virtio 1af4:1009 devices are the rig's own 9p shares (host root and
results), real devices of L1 like any other.

Behind the PCIe-to-PCI bridge (1b36:000e), the edu and the e1000 share one
bus and one IOMMU group. Only the edu, scanned first, lists "bus" in
reset_method: Linux computed it while the edu was still alone on the bus,
and refuses "bus" for it now (EINVAL, "Unsupported reset method").
`

func main() {
	out := flag.String("out", "pci/testdata/sysfs", "directory that receives the rig-* trees")
	script := flag.String("capture", "pci/testdata/capture.sh", "the capture script")
	flag.Parse()
	if err := capture(*out, *script); err != nil {
		fmt.Fprintln(os.Stderr, "rigcapture:", err)
		os.Exit(1)
	}
}

func capture(out, script string) error {
	script, err := filepath.Abs(script)
	if err != nil {
		return err
	}
	if _, err := os.Stat(script); err != nil {
		return fmt.Errorf("capture script: %w", err)
	}
	var dev []string
	for _, d := range devices {
		dev = append(dev, "-device "+d)
	}
	r := rig.Rig{
		Devices: devices,
		Timeout: 3 * time.Minute,
		Env: map[string]string{
			"CAPTURE": script, // the host path is the L1 path: / is shared
			"NOTE":    "L1 of the dmsandbox rig (integration/rig, make rig-capture): qemu-system-x86_64 -machine q35,kernel-irqchip=split -device intel-iommu,intremap=on,caching-mode=on " + strings.Join(dev, " ") + "; kernel cmdline intel_iommu=on iommu=pt",
		},
		Script: guestScript,
		Logf:   func(f string, a ...any) { fmt.Fprintf(os.Stderr, f+"\n", a...) },
	}
	res, err := r.Run(context.Background())
	if err != nil {
		return err
	}
	if res.ExitCode != 0 {
		return fmt.Errorf("capture in L1 exited %d:\n%s", res.ExitCode, res.Log)
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	for _, name := range []string{"rig-q35", "rig-q35-edu-vfio"} {
		if err := os.RemoveAll(filepath.Join(out, name)); err != nil {
			return err
		}
	}
	// tar keeps the relative symlinks as they are.
	tar := exec.Command("tar", "-C", out, "--no-same-owner", "-xf", filepath.Join(res.OutDir, "captures.tar"), "./rig-q35", "./rig-q35-edu-vfio")
	if b, err := tar.CombinedOutput(); err != nil {
		return fmt.Errorf("unpack captures: %v: %s", err, b)
	}
	for name, what := range map[string]string{
		"rig-q35":          "as booted: every device on its in-tree driver, or none",
		"rig-q35-edu-vfio": "then the edu behind the root port bound to vfio-pci (driver_override + drivers_probe)",
	} {
		readme := fmt.Sprintf(readmeText, name, what, "-device "+strings.Join(devices, " -device "))
		if err := os.WriteFile(filepath.Join(out, name, "README.md"), []byte(readme), 0o644); err != nil {
			return err
		}
	}
	fmt.Fprintf(os.Stderr, "rigcapture: wrote %s/rig-q35 and rig-q35-edu-vfio in %.0fs (L1 boot %.1fs)\n", out, res.Duration.Seconds(), res.Boot.Seconds())
	return nil
}
