package pci

import "errors"

// Sentinel errors callers branch on. Every error returned by this package
// wraps one of these or an *os.PathError, and names the device (BDF) or the
// file involved.
var (
	// ErrNoDevice: no such device under the sysfs root.
	ErrNoDevice = errors.New("no such pci device")
	// ErrMalformed: a sysfs file or config space did not parse.
	ErrMalformed = errors.New("malformed")
	// ErrRefused: policy refuses the operation (bridge, deny list, group
	// not viable, active siblings); the message says why.
	ErrRefused = errors.New("refused")
	// ErrNoReset: no reset method applies to the device; the message
	// lists each method and why it does not apply.
	ErrNoReset = errors.New("no reset method applies")
	// ErrNoRecord: dmsandbox has no binding record for the device.
	ErrNoRecord = errors.New("no binding record")
	// ErrBadAccess: a config register access of the wrong size, not
	// aligned, or outside the device's config space.
	ErrBadAccess = errors.New("bad config space access")
	// ErrTimeout: the kernel or the device did not answer in time.
	ErrTimeout = errors.New("timed out")
)
