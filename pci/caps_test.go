package pci

import (
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestParseCapabilitiesCaptured parses the config space of every device of
// every captured tree.
func TestParseCapabilitiesCaptured(t *testing.T) {
	n := 0
	for _, tree := range trees(t) {
		cfgs, _ := filepath.Glob(filepath.Join(tree, "sys/bus/pci/devices/*/config"))
		for _, p := range cfgs {
			cfg, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := ParseCapabilities(cfg); err != nil {
				t.Errorf("%s: %v", p, err)
			}
			n++
		}
	}
	if n < 20 {
		t.Fatalf("only %d config spaces parsed", n)
	}
}

func readCfg(t *testing.T, tree, bdf string) []byte {
	t.Helper()
	cfg, err := os.ReadFile(filepath.Join("testdata/sysfs", tree, "sys/bus/pci/devices", bdf, "config"))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TestCapabilitiesKnownDevices checks values read by hand from the
// captured config spaces (xxd) against what QEMU 7.2's models build.
func TestCapabilitiesKnownDevices(t *testing.T) {
	// e1000e on the q35 root bus: PM, MSI, PCIe root-complex integrated
	// endpoint without FLR, MSI-X with 5 vectors in BAR 3, PBA at 0x2000.
	c, err := ParseCapabilities(readCfg(t, "q35-vfio-rig", "0000:00:04.0"))
	if err != nil {
		t.Fatal(err)
	}
	if c.PM == nil || c.PM.NoSoftReset || c.MSI == nil || c.PCIe == nil || c.PCIe.FLR || c.PCIe.Type != PCIeRCIEP {
		t.Errorf("e1000e caps: %+v pm=%+v pcie=%+v", c, c.PM, c.PCIe)
	}
	if m := c.MSIX; m == nil || m.TableSize != 5 || m.TableBAR != 3 || m.TableOffset != 0 || m.PBABAR != 3 || m.PBAOffset != 0x2000 {
		t.Errorf("e1000e msi-x: %+v", c.MSIX)
	}
	if c.MSIX.TableBytes() != 80 || c.MSIX.PBABytes() != 8 {
		t.Errorf("e1000e msi-x sizes: %d %d", c.MSIX.TableBytes(), c.MSIX.PBABytes())
	}
	// virtio behind a root port: PCIe FLR, PM, MSI-X.
	c, err = ParseCapabilities(readCfg(t, "q35-vfio-rig", "0000:02:00.0"))
	if err != nil {
		t.Fatal(err)
	}
	if c.PCIe == nil || !c.PCIe.FLR || c.PM == nil || c.MSIX == nil || c.MSIX.TableSize != 2 {
		t.Errorf("virtio caps: pcie=%+v pm=%+v msix=%+v", c.PCIe, c.PM, c.MSIX)
	}
	// edu: one 64-bit MSI vector, nothing else.
	c, err = ParseCapabilities(readCfg(t, "q35-vfio-rig", "0000:00:03.0"))
	if err != nil {
		t.Fatal(err)
	}
	if c.MSI == nil || c.MSI.Vectors != 1 || !c.MSI.Addr64 || c.PM != nil || c.PCIe != nil || c.MSIX != nil || len(c.List) != 1 {
		t.Errorf("edu caps: %+v msi=%+v", c, c.MSI)
	}
	// Root port: PCIe type 4.
	c, err = ParseCapabilities(readCfg(t, "q35-vfio-rig", "0000:00:02.0"))
	if err != nil {
		t.Fatal(err)
	}
	if c.PCIe == nil || c.PCIe.Type != PCIeRootPort {
		t.Errorf("root port: %+v", c.PCIe)
	}
	// This machine's virtio devices: five vendor caps then MSI-X.
	c, err = ParseCapabilities(readCfg(t, "host-fc", "0000:00:03.0"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, id := range c.List {
		names = append(names, id.Name())
	}
	if strings.Join(names, ",") != "vendor,vendor,vendor,vendor,vendor,msi-x" || c.MSIX.TableSize != 3 {
		t.Errorf("host virtio-net caps: %v msix=%+v", names, c.MSIX)
	}
}

// cfgWith builds a 256-byte type-0 config space with the capability list
// bit set and the given bytes poked in.
func cfgWith(pokes map[int][]byte) []byte {
	cfg := make([]byte, 256)
	binary.LittleEndian.PutUint16(cfg[cfgStatus:], statusCapList)
	for off, b := range pokes {
		copy(cfg[off:], b)
	}
	return cfg
}

func TestParseCapabilitiesMalformed(t *testing.T) {
	e1000e := readCfg(t, "q35-vfio-rig", "0000:00:04.0")
	ext := make([]byte, 4096)
	copy(ext, e1000e)
	cases := []struct {
		name string
		cfg  []byte
		want string
	}{
		{"empty", nil, "truncated"},
		{"header only half", e1000e[:32], "truncated"},
		{"cut in the middle of a capability", e1000e[:0xa2], "past end"},
		{"cut inside msi-x", cfgWith(map[int][]byte{cfgCapPtr: {0xf8}, 0xf8: {CapMSIX, 0}}), "needs 12 bytes"},
		{"cut inside pm", cfgWith(map[int][]byte{cfgCapPtr: {0xfc}, 0xfc: {CapPM, 0}}), "needs 6 bytes"},
		{"loop onto itself", cfgWith(map[int][]byte{cfgCapPtr: {0x40}, 0x40: {CapVndr, 0x40}}), "loops"},
		{"loop of two", cfgWith(map[int][]byte{cfgCapPtr: {0x40}, 0x40: {CapVndr, 0x50}, 0x50: {CapVndr, 0x40}}), "loops"},
		{"pointer into header", cfgWith(map[int][]byte{cfgCapPtr: {0x40}, 0x40: {CapVndr, 0x10}}), "into the header"},
		{"pointer past end", cfgWith(map[int][]byte{cfgCapPtr: {0x90}})[:0x80], "past end"},
		{"msi-x table in BIR 7", cfgWith(map[int][]byte{cfgCapPtr: {0x40}, 0x40: {CapMSIX, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0}}), "reserved"},
		{"msi reserved vector count", cfgWith(map[int][]byte{cfgCapPtr: {0x40}, 0x40: {CapMSI, 0, 0x0e, 0}}), "reserved"},
		{"extended loop", func() []byte {
			c := append([]byte(nil), ext...)
			binary.LittleEndian.PutUint32(c[0x100:], 0x001<<0|0x100<<20) // AER pointing at itself
			return c
		}(), "loops"},
		{"extended pointer below 0x100", func() []byte {
			c := append([]byte(nil), ext...)
			binary.LittleEndian.PutUint32(c[0x100:], 0x001|0x040<<20)
			return c
		}(), "below 0x100"},
		{"extended pointer past end", func() []byte {
			c := append([]byte(nil), ext[:0x180]...)
			binary.LittleEndian.PutUint32(c[0x100:], 0x001|0x200<<20)
			return c
		}(), "past end"},
	}
	for _, tc := range cases {
		_, err := ParseCapabilities(tc.cfg)
		if err == nil || !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want ErrMalformed containing %q", tc.name, err, tc.want)
		}
	}
}

func TestParseCapabilitiesNoList(t *testing.T) {
	cfg := cfgWith(map[int][]byte{cfgCapPtr: {0x40}, 0x40: {CapVndr, 0x40}})
	cfg[cfgStatus] = 0 // status says no list: the loop is never followed
	c, err := ParseCapabilities(cfg)
	if err != nil || len(c.List) != 0 {
		t.Fatalf("got %+v, %v", c, err)
	}
	// Low two bits of pointers are reserved and ignored.
	cfg = cfgWith(map[int][]byte{cfgCapPtr: {0x43}, 0x40: {CapPM, 0x00, 0, 0, 0x08, 0}})
	c, err = ParseCapabilities(cfg)
	if err != nil || c.PM == nil || c.PM.Offset != 0x40 || !c.PM.NoSoftReset {
		t.Fatalf("got %+v pm=%+v, %v", c, c.PM, err)
	}
}

func TestParseCapabilitiesSRIOVAndAF(t *testing.T) {
	cfg := make([]byte, 4096)
	binary.LittleEndian.PutUint16(cfg[cfgStatus:], statusCapList)
	cfg[cfgCapPtr] = 0x40
	copy(cfg[0x40:], []byte{CapAF, 0x00, 6, afCapFLR | afCapTP, 0, 0})
	binary.LittleEndian.PutUint32(cfg[0x100:], ExtACS|0x140<<20)
	binary.LittleEndian.PutUint32(cfg[0x140:], ExtSRIOV)
	binary.LittleEndian.PutUint16(cfg[0x140+0x0e:], 8)
	binary.LittleEndian.PutUint16(cfg[0x140+0x10:], 2)
	c, err := ParseCapabilities(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if c.AF == nil || !c.AF.FLR || !c.AF.TP || c.SRIOV == nil || c.SRIOV.TotalVFs != 8 || c.SRIOV.NumVFs != 2 {
		t.Fatalf("af=%+v sriov=%+v", c.AF, c.SRIOV)
	}
	if len(c.List) != 3 || c.List[1].Name() != "acs" || c.List[2].Name() != "sr-iov" {
		t.Fatalf("list %+v", c.List)
	}
}
