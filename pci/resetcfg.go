package pci

import (
	"fmt"
	"path/filepath"
	"time"
)

// Delays of the config-space resets (PCIe Base 5.0: 100 ms after FLR
// before the device must answer, sec. 6.6.2; 10 ms D3hot↔D0 recovery,
// PCI PM 1.2 table 5-6; a secondary bus reset held for at least 1 ms and
// 1 s before the devices behind it are touched, as Linux's
// pci_reset_secondary_bus waits).
const (
	flrWait       = 100 * time.Millisecond
	pmWait        = 10 * time.Millisecond
	sbrAssertHold = 2 * time.Millisecond
	sbrSettle     = time.Second
	readyPoll     = 10 * time.Millisecond
	cfgBIST       = 0x0f
	pcieDevStaTP  = 1 << 5
	bistStart     = 1 << 6
)

// configReset performs a reset by writing config space, for kernels that
// cannot do it (no reset_method) or bus resets the kernel will not do
// because of idle neighbours. The kernel's reset saves and restores the
// whole state; here the standard 64-byte header of every device touched
// is saved before and written back after, as libvirt does.
func (s *Sysfs) configReset(d *Device, method string, opt ResetOptions) error {
	switch method {
	case MethodFLR:
		return s.withSavedHeaders([]BDF{d.BDF}, opt, func() error {
			// Let outstanding transactions drain first (Device Status
			// Transactions Pending); after the wait, reset anyway, as
			// Linux does: the device is being taken away regardless.
			s.waitClear(d.BDF, int64(d.Caps.PCIe.Offset)+0x0a, pcieDevStaTP, opt)
			off := int64(d.Caps.PCIe.Offset) + 8 // Device Control
			ctl, err := s.readConfig16(d.BDF, off)
			if err != nil {
				return err
			}
			if err := s.writeConfig16(d.BDF, off, ctl|pcieDevCtlFLR); err != nil {
				return err
			}
			opt.Sleep(flrWait)
			return nil
		})
	case MethodAFFLR:
		return s.withSavedHeaders([]BDF{d.BDF}, opt, func() error {
			if d.Caps.AF.TP { // AF Status bit 0: transactions pending
				s.waitClear(d.BDF, int64(d.Caps.AF.Offset)+4, 1<<8, opt)
			}
			if err := s.WriteConfigReg(d.BDF, int(d.Caps.AF.Offset)+4, 1, afCtlFLR); err != nil {
				return err
			}
			opt.Sleep(flrWait)
			return nil
		})
	case MethodPM:
		return s.withSavedHeaders([]BDF{d.BDF}, opt, func() error {
			off := int64(d.Caps.PM.Offset) + 4 // PMCSR
			csr, err := s.readConfig16(d.BDF, off)
			if err != nil {
				return err
			}
			if err := s.writeConfig16(d.BDF, off, csr&^pmCSRStateMask|3); err != nil {
				return err
			}
			opt.Sleep(pmWait)
			if err := s.writeConfig16(d.BDF, off, csr&^pmCSRStateMask); err != nil {
				return err
			}
			opt.Sleep(pmWait)
			return nil
		})
	case MethodBus:
		behind, err := s.Behind(*d.Parent)
		if err != nil {
			return err
		}
		var all []BDF
		for _, o := range behind {
			all = append(all, o.BDF)
		}
		br := *d.Parent
		return s.withSavedHeaders(all, opt, func() error {
			ctl, err := s.readConfig16(br, cfgBridgeCtl)
			if err != nil {
				return err
			}
			if err := s.writeConfig16(br, cfgBridgeCtl, ctl|bridgeCtlBusReset); err != nil {
				return err
			}
			opt.Sleep(sbrAssertHold)
			if err := s.writeConfig16(br, cfgBridgeCtl, ctl&^bridgeCtlBusReset); err != nil {
				return err
			}
			opt.Sleep(sbrSettle)
			return nil
		})
	}
	return fmt.Errorf("no config-space route for %s", method)
}

// withSavedHeaders saves each device's header, runs reset, waits for each
// device to answer again, and writes the headers back (BARs and bridge
// windows first, the command register last, so decoding is re-enabled
// only once the addresses are right).
func (s *Sysfs) withSavedHeaders(devs []BDF, opt ResetOptions, reset func() error) error {
	saved := map[BDF][]byte{}
	for _, b := range devs {
		cfg, err := s.ReadConfig(b)
		if err != nil {
			return fmt.Errorf("save %s: %w", b, err)
		}
		if len(cfg) < cfgHeaderLen {
			return fmt.Errorf("save %s: config %d bytes: %w", b, len(cfg), ErrMalformed)
		}
		saved[b] = cfg[:cfgHeaderLen:cfgHeaderLen]
	}
	if err := reset(); err != nil {
		return err
	}
	for _, b := range devs {
		if err := s.waitReady(b, opt); err != nil {
			return err
		}
		h := saved[b]
		// BIST bit 6 starts a self-test: never write it back.
		h[cfgBIST] &^= bistStart
		if err := s.writeConfig(b, 0x08, h[0x08:cfgHeaderLen]); err != nil {
			return fmt.Errorf("restore %s: %w", b, err)
		}
		if err := s.writeConfig(b, cfgCommand, h[cfgCommand:cfgCommand+2]); err != nil {
			return fmt.Errorf("restore %s: %w", b, err)
		}
	}
	return nil
}

// waitClear polls a 16-bit register until mask is clear, at most
// flrWait: the spec's bound for pending transactions to complete.
func (s *Sysfs) waitClear(b BDF, off int64, mask uint16, opt ResetOptions) {
	for waited := time.Duration(0); waited < flrWait; waited += readyPoll {
		v, err := s.readConfig16(b, off)
		if err != nil || v&mask == 0 {
			return
		}
		opt.Sleep(readyPoll)
	}
}

// waitReady polls the vendor ID until the device answers (not all-ones:
// a function still in reset completes reads with ~0).
func (s *Sysfs) waitReady(b BDF, opt ResetOptions) error {
	deadline := time.Now().Add(opt.Timeout)
	for {
		v, err := s.readConfig16(b, cfgVendor)
		if err == nil && v != 0xffff {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not answer after reset within %v: %w", b, opt.Timeout, ErrTimeout)
		}
		opt.Sleep(readyPoll)
	}
}

func (s *Sysfs) readConfig16(b BDF, off int64) (uint16, error) {
	v, err := s.ReadConfigReg(b, int(off), 2)
	return uint16(v), err
}

func (s *Sysfs) writeConfig16(b BDF, off int64, v uint16) error {
	return s.WriteConfigReg(b, int(off), 2, uint32(v))
}

func (s *Sysfs) writeConfig(b BDF, off int64, data []byte) error {
	p := filepath.Join(s.DevicePath(b), "config")
	if err := s.kernel().WriteConfig(p, off, data); err != nil {
		return fmt.Errorf("pci %s: %w", b, err)
	}
	return nil
}
