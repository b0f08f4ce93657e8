//go:build !xen

package xen

import (
	"errors"
	"testing"
)

func TestNotBuiltFailsClosed(t *testing.T) {
	if _, err := New(nil); !errors.Is(err, ErrNotBuilt) {
		t.Fatalf("got %v", err)
	}
}
