package qmpproxy

// Allowlist is every command libxl 4.17-4.19 sends a qemu-xen device
// model (libxl_qmp.c, libxl_dm.c, libxl_pci.c, libxl_usb.c,
// libxl_colo_*.c; captures/qmp-dom1.log shows the PCI hot-add exchange).
// Everything else (human-monitor-command above all, which reaches every
// HMP command) is refused and logged.
var Allowlist = map[string]bool{
	"qmp_capabilities": true, // every connection's handshake
	// Start, readiness, pause (libxl_dm.c, libxl_domain.c).
	"query-status": true, "cont": true, "stop": true, "query-chardev": true,
	"query-vnc": true, "change-vnc-password": true,
	// 4.19's probe of QEMU's options, then "quit" to end the probe.
	"query-command-line-options": true, "quit": true,
	// PCI passthrough and USB hot-plug, vCPU hot-plug (libxl_pci.c,
	// libxl_usb.c, libxl_domain.c).
	"device_add": true, "device_del": true, "query-pci": true,
	"query-hotpluggable-cpus": true, "query-cpus-fast": true, "query-cpus": true,
	// Save/restore and migration (libxl_qmp.c).
	"xen-save-devices-state": true, "xen-load-devices-state": true, "xen-set-global-dirty-log": true,
	// CD-ROM change (libxl_disk.c): media change and query.
	"blockdev-change-medium": true, "eject": true, "query-block": true,
	"blockdev-add": true, "blockdev-del": true, "blockdev-open-tray": true, "blockdev-close-tray": true,
	"blockdev-remove-medium": true, "blockdev-insert-medium": true, "add-fd": true, "remove-fd": true,
	"query-fdsets": true, "getfd": true, "closefd": true,
	// S3 resume, ACPI power button (libxl_domain.c triggers).
	"system_wakeup": true, "system_powerdown": true, "system_reset": true,
	// COLO (libxl_colo_qdisk.c, libxl_colo_proxy.c).
	"xen-set-replication": true, "query-xen-replication-status": true, "xen-colo-do-checkpoint": true,
	"nbd-server-start": true, "nbd-server-add": true, "nbd-server-stop": true, "x-blockdev-change": true,
}

// refusedDrivers may never be device_add-ed: they open host devices.
var refusedDrivers = map[string]bool{
	"vfio-pci": true, "vfio-platform": true, "vfio-ccw": true, "vfio-ap": true, "pci-assign": true,
	"usb-host": true, "vhost-user-fs-pci": true, "vhost-scsi-pci": true, "vhost-vsock-pci": true,
}

// passthroughDriver is QEMU's Xen PCI passthrough device (hw/xen/xen_pt.c).
const passthroughDriver = "xen-pci-passthrough"
