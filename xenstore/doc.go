// Package xenstore is a minimal read-only client of xenstored, enough
// for DM mode to read what libxl wrote for a domain before it spawned
// the device model (the qdisk backends of cmd/dmsandbox/dm_disks.go).
//
// It speaks the wire protocol of xen/include/public/io/xs_wire.h over
// xenstored's unix socket (dom0) or /dev/xen/xenbus: a 16-byte header
// (type, request id, transaction id, payload length, host byte order)
// and a payload of at most 4096 bytes. Only XS_READ and XS_DIRECTORY
// are sent; replies are decoded strictly (wire.go) since they come from
// another process: a wrong type, id or length ends the connection.
package xenstore
