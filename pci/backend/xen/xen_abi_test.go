//go:build xen

package xen

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dmsandbox/dmsandbox/pci"
	"github.com/dmsandbox/dmsandbox/pci/backend"
)

// TestCallsThroughTheCABI checks each backend method reaches the right
// libxenctrl function with the right arguments, through the real dynamic
// linker: the test binary (linked against libxenctrl) is re-executed with
// LD_PRELOAD of a tiny C library that defines the same symbols and logs
// its arguments. No hypervisor needed; the nested Xen rig runs the calls
// for real.
func TestCallsThroughTheCABI(t *testing.T) {
	if os.Getenv("FAKE_XC_LOG") != "" {
		t.Skip("inside the preloaded child")
	}
	if _, err := exec.LookPath("gcc"); err != nil {
		t.Skip("no gcc to build the preload library")
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "fakexc.c")
	if err := os.WriteFile(src, []byte(fakeXC), 0o644); err != nil {
		t.Fatal(err)
	}
	lib := filepath.Join(dir, "libfakexc.so")
	if out, err := exec.Command("gcc", "-shared", "-fPIC", "-o", lib, src).CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v\n%s", err, out)
	}
	logf := filepath.Join(dir, "calls.log")
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperXenCalls$", "-test.v")
	cmd.Env = append(os.Environ(), "LD_PRELOAD="+lib, "FAKE_XC_LOG="+logf)
	if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "--- PASS: TestHelperXenCalls") {
		t.Fatalf("child: %v\n%s", err, out)
	}
	got, err := os.ReadFile(logf)
	if err != nil {
		t.Fatal(err)
	}
	want := strings.TrimLeft(`
open
iomem_permission dom=7 first=0xfeb80 nr=32 allow=1
ioport_permission dom=7 first=0xc040 nr=32 allow=1
iomem_permission dom=7 first=0xfeb00 nr=64 allow=1
irq_permission dom=7 pirq=10 allow=1
memory_mapping dom=7 gfn=0xe0000 mfn=0xfeb80 nr=32 add=1
ioport_mapping dom=7 gport=0xc000 mport=0xc040 nr=32 add=0
map_pirq dom=7 index=10 pirq=-1
map_pirq_msi dom=7 index=-1 pirq=-1 devfn=0x21 bus=0x20003 entry=4 table_base=0xfebd0000
unmap_pirq dom=7 pirq=55
bind_pt_pci_irq dom=7 machine_irq=55 bus=0 device=5 intx=1
unbind_pt_irq dom=7 machine_irq=55 type=0 bus=0 device=5 intx=1 isa=0
update_msi_irq dom=7 gvec=0x41 pirq=56 gflags=0x1000 gtable=0xf1000000
unbind_msi_irq dom=7 gvec=0x41 pirq=56 gflags=0x1000
iomem_permission dom=7 first=0xfeb80 nr=32 allow=0
ioport_permission dom=7 first=0xc040 nr=32 allow=0
iomem_permission dom=7 first=0xfeb00 nr=64 allow=0
irq_permission dom=7 pirq=10 allow=0
close
`, "\n")
	if string(got) != want {
		t.Fatalf("calls:\n%s\nwant:\n%s", got, want)
	}
}

// TestHelperXenCalls runs in the child with the fake library preloaded.
func TestHelperXenCalls(t *testing.T) {
	if os.Getenv("FAKE_XC_LOG") == "" {
		t.Skip("helper of TestCallsThroughTheCABI")
	}
	be, err := New(pci.NewSysfs("/"))
	if err != nil {
		t.Fatal(err)
	}
	dev := &pci.Device{BDF: pci.BDF{Domain: 2, Bus: 3, Dev: 4, Fn: 1}, IRQ: 10, Driver: "e1000e",
		BARs: []pci.BAR{{Index: 0, Start: 0xfeb80000, Size: 0x20000}, {Index: 2, Start: 0xc040, Size: 0x20, IO: true}},
		ROM:  &pci.BAR{Index: 6, Start: 0xfeb00000, Size: 0x40000}}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := be.Assign(7, dev, backend.Grant{}); !errors.Is(err, pci.ErrRefused) {
		t.Fatalf("assigned a device a dom0 driver holds: %v", err)
	}
	dev.Driver = pci.StubPciback.Driver()
	must(be.Assign(7, dev, backend.Grant{}))
	must(be.MemoryMapping(7, 0xe0000, 0xfeb80, 32, true))
	must(be.IoportMapping(7, 0xc000, 0xc040, 32, false))
	if p, err := be.MapPirq(7, 10, -1); err != nil || p != 55 {
		t.Fatalf("map_pirq: %d %v", p, err)
	}
	if p, err := be.MapPirqMSI(7, dev, -1, 4, 0xfebd0000); err != nil || p != 56 {
		t.Fatalf("map_pirq_msi: %d %v", p, err)
	}
	must(be.UnmapPirq(7, 55))
	must(be.BindPtPciIrq(7, 55, 0, 5, 1))
	must(be.UnbindPtIrq(7, 55, 0, 5, 1))
	must(be.UpdateMsiIrq(7, 0x41, 56, 0x1000, 0xf1000000))
	must(be.UnbindMsiIrq(7, 0x41, 56, 0x1000))
	must(be.Release(7, dev))
	must(be.Close())
}

// fakeXC defines the libxenctrl symbols the backend uses, with the
// argument types of xenctrl.h (Xen 4.17), logging each call.
const fakeXC = `
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <stdbool.h>
static void logf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
#include <stdarg.h>
static void logf(const char *fmt, ...) {
	FILE *f = fopen(getenv("FAKE_XC_LOG"), "a");
	va_list ap; va_start(ap, fmt); vfprintf(f, fmt, ap); va_end(ap);
	fputc('\n', f); fclose(f);
}
void *xc_interface_open(void *l, void *dl, unsigned flags) { logf("open"); return (void *)16; }
int xc_interface_close(void *x) { logf("close"); return 0; }
int xc_domain_iomem_permission(void *x, uint32_t d, unsigned long first, unsigned long nr, uint8_t allow)
{ logf("iomem_permission dom=%u first=%#lx nr=%lu allow=%u", d, first, nr, allow); return 0; }
int xc_domain_ioport_permission(void *x, uint32_t d, uint32_t first, uint32_t nr, uint32_t allow)
{ logf("ioport_permission dom=%u first=%#x nr=%u allow=%u", d, first, nr, allow); return 0; }
int xc_domain_irq_permission(void *x, uint32_t d, uint32_t pirq, bool allow)
{ logf("irq_permission dom=%u pirq=%u allow=%d", d, pirq, allow); return 0; }
int xc_domain_memory_mapping(void *x, uint32_t d, unsigned long gfn, unsigned long mfn, unsigned long nr, uint32_t add)
{ logf("memory_mapping dom=%u gfn=%#lx mfn=%#lx nr=%lu add=%u", d, gfn, mfn, nr, add); return 0; }
int xc_domain_ioport_mapping(void *x, uint32_t d, uint32_t g, uint32_t m, uint32_t nr, uint32_t add)
{ logf("ioport_mapping dom=%u gport=%#x mport=%#x nr=%u add=%u", d, g, m, nr, add); return 0; }
int xc_physdev_map_pirq(void *x, uint32_t d, int index, int *pirq)
{ logf("map_pirq dom=%u index=%d pirq=%d", d, index, *pirq); *pirq = 55; return 0; }
int xc_physdev_map_pirq_msi(void *x, uint32_t d, int index, int *pirq, int devfn, int bus, int entry, uint64_t tb)
{ logf("map_pirq_msi dom=%u index=%d pirq=%d devfn=%#x bus=%#x entry=%d table_base=%#llx", d, index, *pirq, devfn, bus, entry,
       (unsigned long long)tb); *pirq = 56; return 0; }
int xc_physdev_unmap_pirq(void *x, uint32_t d, int pirq) { logf("unmap_pirq dom=%u pirq=%d", d, pirq); return 0; }
int xc_domain_bind_pt_pci_irq(void *x, uint32_t d, uint8_t mirq, uint8_t bus, uint8_t dev, uint8_t intx)
{ logf("bind_pt_pci_irq dom=%u machine_irq=%u bus=%u device=%u intx=%u", d, mirq, bus, dev, intx); return 0; }
int xc_domain_unbind_pt_irq(void *x, uint32_t d, uint8_t mirq, uint8_t type, uint8_t bus, uint8_t dev, uint8_t intx, uint8_t isa)
{ logf("unbind_pt_irq dom=%u machine_irq=%u type=%u bus=%u device=%u intx=%u isa=%u", d, mirq, type, bus, dev, intx, isa); return 0; }
int xc_domain_update_msi_irq(void *x, uint32_t d, uint32_t gvec, uint32_t pirq, uint32_t gflags, uint64_t gtable)
{ logf("update_msi_irq dom=%u gvec=%#x pirq=%u gflags=%#x gtable=%#llx", d, gvec, pirq, gflags, (unsigned long long)gtable); return 0; }
int xc_domain_unbind_msi_irq(void *x, uint32_t d, uint32_t gvec, uint32_t pirq, uint32_t gflags)
{ logf("unbind_msi_irq dom=%u gvec=%#x pirq=%u gflags=%#x", d, gvec, pirq, gflags); return 0; }
`
