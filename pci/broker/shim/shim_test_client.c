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
 *
 * Prints one line per call: "name ret=R errno=E [pirq=P]".
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc == 3 && strcmp(argv[1], "broker") == 0)
		return broker(atoi(argv[2]));
	if (argc == 2 && strcmp(argv[1], "threads") == 0)
		return threads();
	if (argc == 2 && strcmp(argv[1], "fallback") == 0)
		return fallback();
	fprintf(stderr, "usage: shim_test_client broker THEIRS | threads | fallback\n");
	return 2;
}
