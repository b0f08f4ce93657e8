/*
 * fake_libxenctrl.c — a fake libxenctrl for TestShimFallbackReachesLibxenctrl
 * (pci/broker/shim_test.go): the nine passthrough calls with Debian's
 * xenctrl.h signatures, each printing its arguments and returning 0. The
 * test client is linked against the shim first and this library second, so
 * the shim's dlsym(RTLD_NEXT) lands here, as it would on the real library.
 */
#include <inttypes.h>
#include <stdio.h>

#include <xenctrl.h>

int xc_domain_memory_mapping(xc_interface *xch, uint32_t domid, unsigned long first_gfn,
			     unsigned long first_mfn, unsigned long nr_mfns, uint32_t add_mapping)
{
	printf("fake xc_domain_memory_mapping xch=%p dom=%u gfn=%#lx mfn=%#lx nr=%#lx add=%u\n", (void *)xch,
	       domid, first_gfn, first_mfn, nr_mfns, add_mapping);
	return 0;
}

int xc_domain_ioport_mapping(xc_interface *xch, uint32_t domid, uint32_t first_gport, uint32_t first_mport,
			     uint32_t nr_ports, uint32_t add_mapping)
{
	printf("fake xc_domain_ioport_mapping xch=%p dom=%u gport=%#x mport=%#x nr=%#x add=%u\n", (void *)xch,
	       domid, first_gport, first_mport, nr_ports, add_mapping);
	return 0;
}

int xc_physdev_map_pirq(xc_interface *xch, uint32_t domid, int index, int *pirq)
{
	printf("fake xc_physdev_map_pirq xch=%p dom=%u index=%d pirq=%d\n", (void *)xch, domid, index, *pirq);
	*pirq = 77;
	return 0;
}

int xc_physdev_map_pirq_msi(xc_interface *xch, uint32_t domid, int index, int *pirq, int devfn, int bus,
			    int entry_nr, uint64_t table_base)
{
	printf("fake xc_physdev_map_pirq_msi xch=%p dom=%u index=%d pirq=%d devfn=%#x bus=%#x entry=%d table=%#" PRIx64
	       "\n", (void *)xch, domid, index, *pirq, devfn, bus, entry_nr, table_base);
	*pirq = 78;
	return 0;
}

int xc_physdev_unmap_pirq(xc_interface *xch, uint32_t domid, int pirq)
{
	printf("fake xc_physdev_unmap_pirq xch=%p dom=%u pirq=%d\n", (void *)xch, domid, pirq);
	return 0;
}

int xc_domain_bind_pt_pci_irq(xc_interface *xch, uint32_t domid, uint8_t machine_irq, uint8_t bus,
			      uint8_t device, uint8_t intx)
{
	printf("fake xc_domain_bind_pt_pci_irq xch=%p dom=%u irq=%u bus=%u dev=%u intx=%u\n", (void *)xch, domid,
	       machine_irq, bus, device, intx);
	return 0;
}

int xc_domain_unbind_pt_irq(xc_interface *xch, uint32_t domid, uint8_t machine_irq, uint8_t irq_type,
			    uint8_t bus, uint8_t device, uint8_t intx, uint8_t isa_irq)
{
	printf("fake xc_domain_unbind_pt_irq xch=%p dom=%u irq=%u type=%u bus=%u dev=%u intx=%u isa=%u\n",
	       (void *)xch, domid, machine_irq, irq_type, bus, device, intx, isa_irq);
	return 0;
}

int xc_domain_update_msi_irq(xc_interface *xch, uint32_t domid, uint32_t gvec, uint32_t pirq, uint32_t gflags,
			     uint64_t gtable)
{
	printf("fake xc_domain_update_msi_irq xch=%p dom=%u gvec=%#x pirq=%u gflags=%#x gtable=%#" PRIx64 "\n",
	       (void *)xch, domid, gvec, pirq, gflags, gtable);
	return 0;
}

int xc_domain_unbind_msi_irq(xc_interface *xch, uint32_t domid, uint32_t gvec, uint32_t pirq, uint32_t gflags)
{
	printf("fake xc_domain_unbind_msi_irq xch=%p dom=%u gvec=%#x pirq=%u gflags=%#x\n", (void *)xch, domid,
	       gvec, pirq, gflags);
	return 0;
}
