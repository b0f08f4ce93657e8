package broker

import (
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
)

// fileConn turns the broker end of a session socketpair into a
// *net.UnixConn (so Close from another goroutine unblocks a read). It
// takes ownership of f.
func fileConn(f *os.File) (*net.UnixConn, error) {
	defer f.Close() // net.FileConn dups it
	c, err := net.FileConn(f)
	if err != nil {
		return nil, fmt.Errorf("broker: session socket: %w", err)
	}
	uc, ok := c.(*net.UnixConn)
	if !ok {
		c.Close()
		return nil, fmt.Errorf("broker: session socket is a %T", c)
	}
	return uc, nil
}

func isConnRefused(err error) bool { return errors.Is(err, syscall.ECONNREFUSED) }
