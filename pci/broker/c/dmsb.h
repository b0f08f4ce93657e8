/*
 * dmsb.h — dmsandbox broker session protocol, version 1, for C clients
 * (the libxenctrl shim preloaded into QEMU). Mirrors pci/broker/proto*.go;
 * docs/broker-protocol.md explains every field and status code.
 *
 * Transport: one SOCK_SEQPACKET socket per session, inherited or received
 * with SCM_RIGHTS. One frame per send/recv; one request in flight.
 * All integers little-endian (x86: native). No implicit padding.
 */
#ifndef DMSB_H
#define DMSB_H

#include <stdint.h>

#define DMSB_MAGIC      0x42534d44u /* "DMSB" */
#define DMSB_VERSION    1
#define DMSB_FLAG_REPLY 1u
#define DMSB_MAX_FRAME  256

enum dmsb_op {
	DMSB_HELLO = 1,
	DMSB_MEMORY_MAPPING = 2,  /* xc_domain_memory_mapping */
	DMSB_IOPORT_MAPPING = 3,  /* xc_domain_ioport_mapping */
	DMSB_MAP_PIRQ = 4,        /* xc_physdev_map_pirq */
	DMSB_MAP_PIRQ_MSI = 5,    /* xc_physdev_map_pirq_msi */
	DMSB_UNMAP_PIRQ = 6,      /* xc_physdev_unmap_pirq */
	DMSB_BIND_PT_PCI_IRQ = 7, /* xc_domain_bind_pt_pci_irq */
	DMSB_UNBIND_PT_IRQ = 8,   /* xc_domain_unbind_pt_irq */
	DMSB_UPDATE_MSI_IRQ = 9,  /* xc_domain_update_msi_irq */
	DMSB_UNBIND_MSI_IRQ = 10, /* xc_domain_unbind_msi_irq */
	DMSB_CONFIG_READ = 11,
	DMSB_CONFIG_WRITE = 12,
	DMSB_RESET = 13,
	DMSB_OPEN_FILE = 14,      /* a read-only fd of a session device's sysfs file (SCM_RIGHTS) */
};

/* Files of DMSB_OPEN_FILE: what QEMU's hw/xen/xen-host-pci-device.c opens
 * under /sys/bus/pci/devices/BDF/, and the BAR holding the MSI-X table
 * (hw/xen/xen_pt_msi.c maps it through /dev/mem). */
enum dmsb_file {
	DMSB_FILE_CONFIG = 1,
	DMSB_FILE_RESOURCE = 2,
	DMSB_FILE_VENDOR = 3,
	DMSB_FILE_DEVICE = 4,
	DMSB_FILE_SUBSYSTEM_VENDOR = 5,
	DMSB_FILE_SUBSYSTEM_DEVICE = 6,
	DMSB_FILE_CLASS = 7,
	DMSB_FILE_IRQ = 8,
	DMSB_FILE_MSIX_BAR = 9, /* bdf may be DMSB_BDF_ANY; addr: a host address in the MSI-X table or PBA */
};
#define DMSB_BDF_ANY 0xffffffffu

/* The 24-byte header. */
struct dmsb_header {
	uint32_t magic;
	uint16_t version;
	uint16_t op;
	uint32_t flags;
	uint32_t seq;      /* strictly increasing per session */
	uint32_t length;   /* body bytes after the header */
	uint32_t reserved;
};

/* Every reply body starts with this. status: 0 or a Linux errno. */
struct dmsb_reply_prefix { int32_t status; uint32_t reserved; };

/* BDF on the wire: segment << 16 | bus << 8 | device << 3 | function. */
#define DMSB_BDF(seg, bus, dev, fn) \
	((uint32_t)(seg) << 16 | (uint32_t)(bus) << 8 | (uint32_t)(dev) << 3 | (uint32_t)(fn))

struct dmsb_hello       { uint32_t version, reserved; };
struct dmsb_hello_reply { uint32_t domid, ndevices; uint32_t devices[8]; };
struct dmsb_memory_mapping { uint32_t domid, add; uint64_t first_gfn, first_mfn, nr_mfns; };
struct dmsb_ioport_mapping { uint32_t domid, add, first_gport, first_mport, nr_ports, reserved; };
struct dmsb_map_pirq    { uint32_t domid; int32_t index, pirq; uint32_t reserved; };
struct dmsb_map_pirq_msi {
	uint32_t domid; int32_t index, pirq, devfn, bus, entry_nr; uint64_t table_base;
};
struct dmsb_pirq_reply  { int32_t pirq; uint32_t reserved; };
struct dmsb_unmap_pirq  { uint32_t domid; int32_t pirq; };
struct dmsb_bind_pt_pci_irq { uint32_t domid; uint8_t machine_irq, bus, device, intx; };
struct dmsb_unbind_pt_irq {
	uint32_t domid; uint8_t machine_irq, irq_type, bus, device, intx, isa_irq; uint16_t reserved;
};
struct dmsb_update_msi_irq { uint32_t domid, gvec, pirq, gflags; uint64_t gtable; };
struct dmsb_unbind_msi_irq { uint32_t domid, gvec, pirq, gflags; };
struct dmsb_config_read  { uint32_t bdf; uint16_t offset; uint8_t size, reserved; };
struct dmsb_config_read_reply { uint32_t value, reserved; };
struct dmsb_config_write { uint32_t bdf; uint16_t offset; uint8_t size, reserved; uint32_t value, reserved2; };
struct dmsb_reset        { uint32_t bdf, reserved; };
/* The reply to DMSB_OPEN_FILE carries exactly one fd (SCM_RIGHTS) when
 * status is 0; base/size are the BAR's host address and length for
 * DMSB_FILE_MSIX_BAR, 0 otherwise. */
struct dmsb_open_file    { uint32_t bdf, file; uint64_t addr; };
struct dmsb_open_file_reply { uint64_t base, size; };

#define DMSB_CHECK_SIZE(t, n) _Static_assert(sizeof(struct t) == (n), #t " is " #n " bytes on the wire")
DMSB_CHECK_SIZE(dmsb_header, 24);
DMSB_CHECK_SIZE(dmsb_reply_prefix, 8);
DMSB_CHECK_SIZE(dmsb_hello, 8);
DMSB_CHECK_SIZE(dmsb_hello_reply, 40);
DMSB_CHECK_SIZE(dmsb_memory_mapping, 32);
DMSB_CHECK_SIZE(dmsb_ioport_mapping, 24);
DMSB_CHECK_SIZE(dmsb_map_pirq, 16);
DMSB_CHECK_SIZE(dmsb_map_pirq_msi, 32);
DMSB_CHECK_SIZE(dmsb_pirq_reply, 8);
DMSB_CHECK_SIZE(dmsb_unmap_pirq, 8);
DMSB_CHECK_SIZE(dmsb_bind_pt_pci_irq, 8);
DMSB_CHECK_SIZE(dmsb_unbind_pt_irq, 12);
DMSB_CHECK_SIZE(dmsb_update_msi_irq, 24);
DMSB_CHECK_SIZE(dmsb_unbind_msi_irq, 16);
DMSB_CHECK_SIZE(dmsb_config_read, 8);
DMSB_CHECK_SIZE(dmsb_config_read_reply, 8);
DMSB_CHECK_SIZE(dmsb_config_write, 16);
DMSB_CHECK_SIZE(dmsb_reset, 8);
DMSB_CHECK_SIZE(dmsb_open_file, 16);
DMSB_CHECK_SIZE(dmsb_open_file_reply, 16);

#endif
