package rig

import (
	"fmt"
	"strconv"
	"strings"
)

// qemuBinary is the L0 emulator. $DMSANDBOX_RIG_QEMU overrides it.
const qemuBinary = "qemu-system-x86_64"

// bootFiles are what one L1 boot needs from the cache.
type bootFiles struct {
	kernel    *Kernel
	initramfs string
	outDir    string // host side of the writable share
}

// qemuArgs builds the L0 command line. Each choice is forced by this host
// (shared/RIGS.md):
//   - TCG, not KVM: the host's kvm_pvm cannot boot a stock Linux kernel;
//     thread=multi gives L1 both host cores; -cpu max exposes SVM/VMX so KVM
//     works inside L1.
//   - q35 with kernel-irqchip=split and intel-iommu intremap=on: VT-d with
//     interrupt remapping, which vfio-pci needs for MSI; caching-mode=on lets
//     an inner QEMU in L1 nest its own vIOMMU.
//   - host / read-only over 9p (multidevs=remap: the host root spans several
//     filesystems, inode numbers must not collide) and a writable share for
//     results; security_model=none keeps file ownership as L1 sees it.
//   - -no-reboot with panic=-1: a panicking L1 ends QEMU instead of looping.
func (r *Rig) qemuArgs(b bootFiles) []string {
	a := []string{
		"-accel", "tcg,thread=multi", "-cpu", "max",
		"-machine", "q35,kernel-irqchip=split",
		"-m", strconv.Itoa(r.memory()), "-smp", strconv.Itoa(r.cpus()),
		"-device", "intel-iommu,intremap=on,caching-mode=on",
	}
	for _, d := range r.Devices {
		a = append(a, "-device", d)
	}
	a = append(a, r.QEMUArgs...)
	a = append(a,
		"-virtfs", "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap",
		"-virtfs", "local,path="+escapeOpt(b.outDir)+",mount_tag=rigout,security_model=none",
		"-kernel", b.kernel.Vmlinuz(), "-initrd", b.initramfs,
		"-append", r.kernelCmdline(b),
		"-nic", "none", "-display", "none", "-vga", "none",
		"-serial", "stdio", "-monitor", "none", "-no-reboot",
	)
	return a
}

// kernelCmdline: serial console, the IOMMU on (iommu=pt: only devices
// handed to VFIO get translation, the rest of L1 stays fast under TCG), and
// the rig's own parameters read by the init stages.
func (r *Rig) kernelCmdline(b bootFiles) string {
	c := []string{
		"console=ttyS0", "intel_iommu=on", "iommu=pt", "panic=-1", "quiet",
		"rig.kmod=" + b.kernel.ModulesDir(),
		"rig.cgroup=" + r.cgroup(),
	}
	if r.Append != "" {
		c = append(c, r.Append)
	}
	return strings.Join(c, " ")
}

// escapeOpt doubles commas, QEMU's escape inside an option value.
func escapeOpt(s string) string { return strings.ReplaceAll(s, ",", ",,") }

func (r *Rig) memory() int {
	if r.MemoryMiB > 0 {
		return r.MemoryMiB
	}
	return 1024
}

func (r *Rig) cpus() int {
	if r.CPUs > 0 {
		return r.CPUs
	}
	return 2
}

func (r *Rig) cgroup() string {
	if r.Cgroup == "" {
		return "v1"
	}
	return r.Cgroup
}

func (r *Rig) validate() error {
	switch r.cgroup() {
	case "v1", "v2":
	default:
		return fmt.Errorf("rig: cgroup layout %q: want v1 or v2", r.Cgroup)
	}
	if strings.ContainsAny(r.Append, "\n") {
		return fmt.Errorf("rig: kernel command line has a newline")
	}
	for k := range r.Env {
		if k == "" || strings.ContainsAny(k, "= \n'\"$") {
			return fmt.Errorf("rig: bad environment variable name %q", k)
		}
	}
	return nil
}
