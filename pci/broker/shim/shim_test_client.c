/*
 * shim_test_client.c — calls the shim's xc_* functions the way QEMU's
 * hw/xen/xen_pt*.c does; used only by TestShim (pci/broker/shim_test.go),
 * which links it against bin/libdmsb-shim.so (libxenctrl itself is not
 * loaded: every xc_* symbol resolves to the shim).
 *
 *   shim_test_client broker THEIRS   session of domain 7 holding 0000:00:04.0
 *                                    (fd in DMSANDBOX_BROKER_FD); THEIRS is a
 *                                    pirq of another session
 *   shim_test_client threads         only the concurrent calls (TestShimSerialises)
 *   shim_test_client fallback        every call once, to see the fallback
 *   shim_test_client files           what xen-host-pci-device.c and xen_pt_msi.c
 *                                    do with files, on the session's 0000:00:04.0
 *
 * Prints one line per call: "name ret=R errno=E [pirq=P]".
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <xenctrl.h>

#define DOM 7
#define THREADS 4
#define ROUNDS 100

static pthread_barrier_t start;

static void show(const char *name, int ret)
{
	printf("%s ret=%d errno=%d\n", name, ret, ret ? errno : 0);
}

/* hammer maps and unmaps one page of BAR 1 per round, from several
 * threads at once: without the shim's mutex, replies would be read by the
 * wrong thread and fail with EPROTO. */
static void *hammer(void *arg)
{
	unsigned long i = (unsigned long)(uintptr_t)arg;
	int r, bad = 0;

	pthread_barrier_wait(&start); /* all threads call at once */
	for (int n = 0; n < ROUNDS; n++) {
		r = xc_domain_memory_mapping(NULL, DOM, 0x100000 + i, 0xfeba0 + i, 1, 1);
		bad += r != 0;
		r = xc_domain_memory_mapping(NULL, DOM, 0x100000 + i, 0xfeba0 + i, 1, 0);
		bad += r != 0;
	}
	return (void *)(uintptr_t)bad;
}

/* threads runs hammer on THREADS threads started together. */
static int threads(void)
{
	pthread_t th[THREADS];
	uintptr_t bad = 0;

	pthread_barrier_init(&start, NULL, THREADS);
	for (unsigned long i = 0; i < THREADS; i++)
		if (pthread_create(&th[i], NULL, hammer, (void *)(uintptr_t)i) != 0)
			return 1;
	for (int i = 0; i < THREADS; i++) {
		void *b;

		pthread_join(th[i], &b);
		bad += (uintptr_t)b;
	}
	printf("threads calls=%d failed=%lu\n", THREADS * ROUNDS * 2, (unsigned long)bad);
	return 0;
}

static int broker(int theirs)
{
	int pirq = -1, msi = -1, ret;

	/* BAR 0 of 00:04.0 (feb80000, 32 pages) at guest frame f0000. */
	show("memory_mapping", xc_domain_memory_mapping(NULL, DOM, 0xf0000, 0xfeb80, 0x20, 1));
	show("memory_mapping_outside_bars", xc_domain_memory_mapping(NULL, DOM, 0xf1000, 0xfee00, 1, 1));
	show("memory_mapping_other_domid", xc_domain_memory_mapping(NULL, DOM + 1, 0xf1000, 0xfeba0, 1, 1));
	show("memory_mapping_empty", xc_domain_memory_mapping(NULL, DOM, 0xf1000, 0xfeba0, 0, 1));
	show("ioport_mapping", xc_domain_ioport_mapping(NULL, DOM, 0xc000, 0xc040, 0x20, 1));
	ret = xc_physdev_map_pirq(NULL, DOM, 10, &pirq);
	printf("map_pirq ret=%d errno=%d pirq=%d\n", ret, ret ? errno : 0, pirq);
	show("map_pirq_null", xc_physdev_map_pirq(NULL, DOM, 10, NULL));
	show("map_pirq_other_gsi", xc_physdev_map_pirq(NULL, DOM, 11, &(int){ -1 }));
	show("bind_pt_pci_irq", xc_domain_bind_pt_pci_irq(NULL, DOM, pirq, 0, 5, 0));
	/* MSI-X entry 4 of the table in BAR 3 (febd0000). */
	ret = xc_physdev_map_pirq_msi(NULL, DOM, -1, &msi, 4 << 3, 0, 4, 0xfebd0000);
	printf("map_pirq_msi ret=%d errno=%d pirq=%d\n", ret, ret ? errno : 0, msi);
	show("update_msi_irq", xc_domain_update_msi_irq(NULL, DOM, 0x41, msi, 0, 0xf1000000));
	show("unmap_pirq_theirs", xc_physdev_unmap_pirq(NULL, DOM, theirs));
	show("update_msi_irq_theirs", xc_domain_update_msi_irq(NULL, DOM, 0x42, theirs, 0, 0xf1000000));
	show("unbind_msi_irq", xc_domain_unbind_msi_irq(NULL, DOM, 0x41, msi, 0));
	show("unmap_pirq_msi", xc_physdev_unmap_pirq(NULL, DOM, msi));
	show("unbind_pt_irq", xc_domain_unbind_pt_irq(NULL, DOM, pirq, PT_IRQ_TYPE_PCI, 0, 5, 0, 0));
	show("unmap_pirq", xc_physdev_unmap_pirq(NULL, DOM, pirq));
	show("ioport_unmapping", xc_domain_ioport_mapping(NULL, DOM, 0xc000, 0xc040, 0x20, 0));
	show("memory_unmapping", xc_domain_memory_mapping(NULL, DOM, 0xf0000, 0xfeb80, 0x20, 0));
	return threads();
}

/* fallback passes a recognisable handle and distinct arguments, so a
 * libxenctrl behind the shim (fake_libxenctrl.c) shows they arrive intact. */
static int fallback(void)
{
	xc_interface *xch = (xc_interface *)(uintptr_t)0x5a5a000;
	int pirq = -1, msi = -1;

	show("memory_mapping", xc_domain_memory_mapping(xch, DOM, 0xf0000, 0xfeb80, 0x20, 1));
	show("ioport_mapping", xc_domain_ioport_mapping(xch, DOM, 0xc000, 0xc040, 0x20, 1));
	show("map_pirq", xc_physdev_map_pirq(xch, DOM, 10, &pirq));
	show("map_pirq_msi", xc_physdev_map_pirq_msi(xch, DOM, -1, &msi, 4 << 3, 0x10003, 4, 0xfebd0000));
	show("unmap_pirq", xc_physdev_unmap_pirq(xch, DOM, 100));
	show("bind_pt_pci_irq", xc_domain_bind_pt_pci_irq(xch, DOM, 101, 2, 5, 3));
	show("unbind_pt_irq", xc_domain_unbind_pt_irq(xch, DOM, 102, PT_IRQ_TYPE_PCI, 2, 6, 1, 9));
	show("update_msi_irq", xc_domain_update_msi_irq(xch, DOM, 0x41, 103, 0x1200, 0xf1000000));
	show("unbind_msi_irq", xc_domain_unbind_msi_irq(xch, DOM, 0x42, 104, 0x1300));
	printf("pirqs %d %d\n", pirq, msi);
	return 0;
}

#define DEV "/sys/bus/pci/devices/0000:00:04.0/"

/* show_read prints the first line an fd reads (or the open's errno). */
static void show_read(const char *name, int fd)
{
	char buf[128];
	ssize_t n;

	if (fd < 0) {
		printf("%s fd=-1 errno=%d\n", name, errno);
		return;
	}
	n = read(fd, buf, sizeof buf - 1);
	buf[n > 0 ? n : 0] = 0;
	buf[strcspn(buf, "\n")] = 0;
	printf("%s read=%s\n", name, buf);
	close(fd);
}

static void show_rw(const char *name, ssize_t r)
{
	printf("%s ret=%zd errno=%d\n", name, r, r < 0 ? errno : 0);
}

/* files opens, reads, writes and maps as QEMU's xen_pt does: paths by
 * name, config read with pread and written with pwrite, the MSI-X table
 * (BAR 3 at febd0000) mapped through /dev/mem. */
static int files(void)
{
	uint32_t v = 0;
	uint16_t cmd = 0;
	unsigned char *p;
	int fd, mem;

	show_read("vendor", open(DEV "vendor", O_RDONLY));
	show_read("irq", openat(AT_FDCWD, DEV "irq", O_RDONLY | O_CLOEXEC));
	show_read("resource", open(DEV "resource", O_RDONLY));
	show_read("class", open(DEV "class", O_RDONLY));
	show_read("vendor_for_writing", open(DEV "vendor", O_WRONLY));
	show_read("vendor_create", open(DEV "vendor", O_RDONLY | O_CREAT, 0600));
	show_read("other_device", open("/sys/bus/pci/devices/0000:00:03.0/vendor", O_RDONLY));
	show_read("unknown_file", open(DEV "no_such_attribute", O_RDONLY)); /* the real open: ENOENT */

	fd = open(DEV "config", O_RDWR);
	printf("config_open ok=%d cloexec=%d\n", fd >= 0, fd >= 0 ? fcntl(fd, F_GETFD) & FD_CLOEXEC : -1);
	show_rw("config_pread", pread(fd, &v, 4, 0));
	printf("config_id %08x\n", v);
	show_rw("config_pread_ext", pread(fd, &v, 4, 0x100));
	pread(fd, &cmd, 2, 4);
	cmd |= 0x4; /* bus master: a bit pciback lets a guest drive */
	show_rw("config_pwrite_command", pwrite(fd, &cmd, 2, 4));
	show_rw("config_pwrite_vendor", pwrite(fd, &(uint16_t){ 0xdead }, 2, 0));
	show_rw("config_pwrite_past_end", pwrite(fd, &v, 4, 4094));
	show_rw("config_write", write(fd, &v, 4));
	close(fd);

	/* Hot-plug cycles: QEMU opens config for writing at each realize and
	 * closes it at unplug, behind the shim's back. Forty of them, each
	 * config fd under a number of its own (a /dev/null kept open pushes
	 * the next one up), more than the shim's table holds: the closed
	 * ones must be reclaimed, or the later opens fail. */
	{
		int ok = 0, distinct = 0;
		unsigned char seen[1024] = { 0 };

		for (int i = 0; i < 40; i++) {
			open("/dev/null", O_RDONLY);
			fd = open(DEV "config", O_RDWR);
			if (fd >= 0 && pwrite(fd, &cmd, 2, 4) == 2)
				ok++;
			if (fd >= 0 && fd < 1024 && !seen[fd]++)
				distinct++;
			close(fd);
		}
		printf("config_cycles ok=%d distinct=%d\n", ok, distinct);
	}

	mem = open("/dev/mem", O_RDWR);
	printf("devmem_open ok=%d\n", mem >= 0);
	p = mmap(NULL, 5 * 16, PROT_READ, MAP_SHARED | MAP_LOCKED, mem, 0xfebd0000);
	if (p == MAP_FAILED)
		printf("msix_table errno=%d\n", errno);
	else
		printf("msix_table first=%02x%02x%02x%02x\n", p[0], p[1], p[2], p[3]);
	p = mmap(NULL, 4096, PROT_READ, MAP_SHARED, mem, 0xfeb80000);
	printf("msix_outside errno=%d\n", p == MAP_FAILED ? errno : 0);
	p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, mem, 0xfebd0000);
	printf("msix_writable errno=%d\n", p == MAP_FAILED ? errno : 0);
	close(mem);
	return 0;
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc == 3 && strcmp(argv[1], "broker") == 0)
		return broker(atoi(argv[2]));
	if (argc == 2 && strcmp(argv[1], "threads") == 0)
		return threads();
	if (argc == 2 && strcmp(argv[1], "fallback") == 0)
		return fallback();
	if (argc == 2 && strcmp(argv[1], "files") == 0)
		return files();
	fprintf(stderr, "usage: shim_test_client broker THEIRS | threads | fallback | files\n");
	return 2;
}
