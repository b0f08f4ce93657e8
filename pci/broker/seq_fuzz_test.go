package broker

import (
	"fmt"
	"sort"
	"testing"

	"github.com/dmsandbox/dmsandbox/pci"
)

// FuzzSessionOps drives a session with a request sequence decoded from
// the input and checks after every request that the broker's idea of what
// is live equals the fake hypervisor's (no drift), and after the client
// hangs up that nothing is live. Arguments are drawn near the devices'
// real BARs, GSIs and tables so most requests reach the backend.
func FuzzSessionOps(f *testing.F) {
	f.Add([]byte{0, 1, 1, 2, 2, 3, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12})
	f.Add([]byte{3, 0, 4, 0, 5, 0, 6, 0, 7, 0, 8, 0, 9, 0, 1, 2, 3})
	f.Add([]byte{0, 0, 0, 0, 1, 1, 2, 9, 2, 9, 0x40, 0x41, 0x42, 3, 3, 3})
	// open_file: e1000e config, e1000e msix_bar (its table), any
	// msix_bar (05.0's table), 03:00.0 config, detach 05.0, 05.0 msix_bar.
	f.Add([]byte{13, 0, 1, 13, 0, 0x9f, 13, 3, 0x94, 13, 2, 1, 12, 0, 0, 13, 1, 0x94})
	// The captured tree plus the MSI-X BARs' resource files, for
	// open_file; nothing writes to it (the fake backend records calls in
	// its own file), so the iterations share it.
	root := openFileTree(f)
	f.Fuzz(func(t *testing.T, prog []byte) {
		if len(prog) > 256 {
			prog = prog[:256]
		}
		r := newRig(t, root)
		s, c := r.session(dom, e1000e, pci05)
		var pirqs []int32
		arg := func(i int) byte {
			if i < len(prog) {
				return prog[i]
			}
			return 0
		}
		pick := func(b byte) int32 {
			if len(pirqs) == 0 || b == 0xff {
				return int32(b)
			}
			return pirqs[int(b)%len(pirqs)]
		}
		for i := 0; i < len(prog); i += 3 {
			a, b := arg(i+1), arg(i+2)
			var req Request
			switch prog[i] % 14 {
			case 0:
				req = &MemoryMapping{Domid: dom, Add: uint32(a & 1), FirstGfn: 0xe0000 + uint64(b%8), FirstMfn: 0xfeb80 + uint64(a>>1)*9, NrMfns: uint64(b%5) + 1}
			case 1:
				req = &IoportMapping{Domid: dom, Add: uint32(a & 1), FirstGport: 0xc000 + uint32(b%4)*8, FirstMport: 0xc040 + uint32(a>>1)%0x30, NrPorts: uint32(b%9) + 1}
			case 2:
				req = &MapPirq{Domid: dom, Index: int32(9 + a%3), Pirq: -1}
			case 3:
				tb := uint64(0)
				if a&1 == 1 {
					tb = 0xfebd0000
				}
				req = &MapPirqMSI{Domid: dom, Index: -1, Pirq: -1, Devfn: int32(4+a%2) << 3, EntryNr: int32(b % 6), TableBase: tb}
			case 4:
				req = &UnmapPirq{Domid: dom, Pirq: pick(a)}
			case 5:
				req = &BindPtPciIrq{Domid: dom, MachineIrq: uint8(pick(a)), Device: b % 33, Intx: b % 5}
			case 6:
				req = &UnbindPtIrq{Domid: dom, MachineIrq: uint8(pick(a)), Device: b % 33, Intx: b % 5}
			case 7:
				req = &UpdateMsiIrq{Domid: dom, Gvec: uint32(b), Pirq: uint32(pick(a))}
			case 8:
				req = &UnbindMsiIrq{Domid: dom, Gvec: uint32(b), Pirq: uint32(pick(a))}
			case 9:
				req = &ConfigWrite{BDF: WireBDF(e1000e), Offset: uint16(a) &^ 3, Size: 4, Value: uint32(b) * 0x01010101}
			case 10:
				req = &ConfigRead{BDF: WireBDF(pci05), Offset: uint16(a), Size: 1 << (b % 3)}
			case 11:
				req = &Reset{BDF: WireBDF(e1000e)}
			case 12:
				if err := r.broker.Detach(s.ID, pci05); err != nil && len(s.devs) == 2 {
					t.Fatalf("detach: %v", err)
				}
				checkNoDrift(t, r, s)
				continue
			case 13:
				fuzzOpenFile(t, c, s, a, b)
				checkNoDrift(t, r, s)
				continue
			}
			var p PirqReply
			err := c.Do(req, &p)
			if err == nil && p.Pirq > 0 {
				pirqs = append(pirqs, p.Pirq)
			}
			if _, refused := err.(*StatusError); err != nil && !refused {
				t.Fatalf("%s: transport: %v", req.Op(), err)
			}
			checkNoDrift(t, r, s)
		}
		c.Close()
		r.waitGone(s)
		if st := r.fake.State(); !st.Empty() {
			t.Fatalf("after close: %v", st.Summary())
		}
	})
}

// fuzzOpenFile asks for a file of a session device, of 03:00.0 (never
// the session's) or of any, near the MSI-X tables: a file may only come
// back for a device of the session, and nothing is left live.
func fuzzOpenFile(t *testing.T, c *Client, s *Session, a, b byte) {
	t.Helper()
	bdf := []pci.BDF{e1000e, pci05, other, AnyBDF}[a%4]
	addr := uint64(0)
	if b&0x80 != 0 {
		addr = []uint64{e1000eMSIXBar, pci05MSIXBar, 0xfe500000}[b%3] + uint64(a>>2)*0x400
	}
	f, rep, err := c.OpenFile(bdf, uint32(b&0x7f)%11, addr)
	if _, refused := err.(*StatusError); err != nil && !refused {
		t.Fatalf("open_file: transport: %v", err)
	}
	if err != nil {
		return
	}
	f.Close()
	s.mu.Lock()
	defer s.mu.Unlock()
	if bdf != AnyBDF && s.devs[bdf] == nil {
		t.Fatalf("open_file of %s, not a device of the session, succeeded", bdf)
	}
	if rep != (OpenFileReply{}) {
		for _, sd := range s.devs {
			for _, w := range msixWindows(sd.dev) {
				if w.bar.Start == rep.Base && w.bar.Size == rep.Size && addr >= w.start && addr <= w.last {
					return
				}
			}
		}
		t.Fatalf("open_file reply %+v is no MSI-X BAR of the session", rep)
	}
}

// checkNoDrift compares the session's live items with the fake's state.
func checkNoDrift(t *testing.T, r *rig, s *Session) {
	t.Helper()
	s.mu.Lock()
	var want []string
	for _, it := range s.live.items {
		switch it.Kind {
		case KindDevice:
			want = append(want, fmt.Sprintf("assigned %s dom%d", it.BDF, s.Domid))
		case KindMem:
			want = append(want, "mem "+fmt.Sprint(s.Domid, " ", it.Guest, " ", it.Host, " ", it.Count))
		case KindIO:
			want = append(want, "io "+fmt.Sprint(s.Domid, " ", it.Guest, " ", it.Host, " ", it.Count))
		case KindPirq:
			want = append(want, "pirq "+fmt.Sprint(s.Domid, " ", it.Pirq))
		case KindIntx:
			want = append(want, "intx "+fmt.Sprint(s.Domid, " ", it.Pirq, " ", uint64(it.Slot[0]), " ", uint64(it.Slot[1]), " ", uint64(it.Slot[2])))
		case KindMSI:
			want = append(want, "msi "+fmt.Sprint(s.Domid, " ", it.Pirq))
		}
	}
	s.mu.Unlock()
	sort.Strings(want)
	got := r.fake.State().Summary()
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("drift:\nbroker %v\nfake   %v", want, got)
	}
}
