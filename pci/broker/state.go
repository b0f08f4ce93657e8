package broker

import (
	"fmt"

	"github.com/dmsandbox/dmsandbox/pci"
)

// Kind of a live item a session holds.
type Kind string

// Item kinds, each with its undo.
const (
	KindDevice Kind = "dev"  // attached device; undo: reset, release (quarantine)
	KindMem    Kind = "mem"  // MMIO mapping; undo: memory_mapping remove
	KindIO     Kind = "io"   // I/O port mapping; undo: ioport_mapping remove
	KindPirq   Kind = "pirq" // pirq mapped from a GSI or MSI; undo: unmap_pirq
	KindIntx   Kind = "intx" // INTx binding; undo: unbind_pt_irq
	KindMSI    Kind = "msi"  // MSI binding; undo: unbind_msi_irq
)

// undoOrder is the order a closing session undoes its kinds in: first
// take the device away from the guest (mappings), then stop interrupt
// delivery, then free the pirqs, last reset and quarantine the device.
var undoOrder = []Kind{KindMem, KindIO, KindMSI, KindIntx, KindPirq, KindDevice}

// Item is one thing a session did that must be undone. It is also the
// state journal's record, so its JSON form is an on-disk format.
type Item struct {
	Kind Kind   `json:"kind"`
	BDF  string `json:"bdf,omitempty"` // dev; pirq (the device it belongs to)
	// mem: frames; io: ports
	Guest uint64 `json:"guest,omitempty"`
	Host  uint64 `json:"host,omitempty"`
	Count uint64 `json:"count,omitempty"`
	// pirq, intx, msi
	Pirq      int    `json:"pirq,omitempty"`
	GSI       int    `json:"gsi,omitempty"`        // pirq from a GSI
	MSI       bool   `json:"msi,omitempty"`        // pirq from MSI/MSI-X
	Entry     int    `json:"entry,omitempty"`      // MSI vector or MSI-X entry
	TableBase uint64 `json:"table_base,omitempty"` // MSI-X: host table BAR address; 0 for MSI
	// intx: the guest's virtual slot
	Slot [3]uint8 `json:"slot,omitempty"` // bus, device, intx
	// msi binding
	Gvec   uint32 `json:"gvec,omitempty"`
	Gflags uint32 `json:"gflags,omitempty"`
	Gtable uint64 `json:"gtable,omitempty"`
}

// same reports whether two items name the same live thing.
func (it Item) same(o Item) bool {
	if it.Kind != o.Kind {
		return false
	}
	switch it.Kind {
	case KindDevice:
		return it.BDF == o.BDF
	case KindMem, KindIO:
		return it.Guest == o.Guest && it.Host == o.Host && it.Count == o.Count
	case KindPirq, KindMSI:
		return it.Pirq == o.Pirq
	case KindIntx:
		return it.Pirq == o.Pirq && it.Slot == o.Slot
	}
	return false
}

func (it Item) String() string {
	switch it.Kind {
	case KindDevice:
		return "device " + it.BDF
	case KindMem:
		return fmt.Sprintf("mem gfn=%#x mfn=%#x nr=%#x", it.Guest, it.Host, it.Count)
	case KindIO:
		return fmt.Sprintf("io gport=%#x mport=%#x nr=%#x", it.Guest, it.Host, it.Count)
	case KindPirq:
		if it.MSI {
			return fmt.Sprintf("pirq %d (msi %s entry %d)", it.Pirq, it.BDF, it.Entry)
		}
		return fmt.Sprintf("pirq %d (gsi %d)", it.Pirq, it.GSI)
	case KindIntx:
		return fmt.Sprintf("intx pirq %d bus %d dev %d int%c", it.Pirq, it.Slot[0], it.Slot[1], 'A'+it.Slot[2])
	case KindMSI:
		return fmt.Sprintf("msi pirq %d gvec %#x", it.Pirq, it.Gvec)
	}
	return string(it.Kind)
}

// liveSet is a session's items in creation order.
type liveSet struct{ items []Item }

func (l *liveSet) add(it Item) { l.items = append(l.items, it) }

func (l *liveSet) remove(it Item) bool {
	for i := range l.items {
		if l.items[i].same(it) {
			l.items = append(l.items[:i], l.items[i+1:]...)
			return true
		}
	}
	return false
}

func (l *liveSet) find(pred func(Item) bool) (Item, bool) {
	for _, it := range l.items {
		if pred(it) {
			return it, true
		}
	}
	return Item{}, false
}

func (l *liveSet) pirq(p int) (Item, bool) {
	return l.find(func(it Item) bool { return it.Kind == KindPirq && it.Pirq == p })
}

// undoPlan returns the items in the order they must be undone: by kind
// in undoOrder, newest first within a kind.
func (l *liveSet) undoPlan() []Item {
	var out []Item
	for _, k := range undoOrder {
		for i := len(l.items) - 1; i >= 0; i-- {
			if l.items[i].Kind == k {
				out = append(out, l.items[i])
			}
		}
	}
	return out
}

// sessionDevice is a device attached to a session.
type sessionDevice struct {
	dev        *pci.Device
	permissive bool
	writable   []byte // per config byte: bits a guest may change
}
