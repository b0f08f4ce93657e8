/*
 * dmsb_shim.c — the libxenctrl passthrough shim (Xen only).
 *
 * Preloaded into an unmodified Xen QEMU (LD_PRELOAD), it defines the nine
 * libxenctrl calls hw/xen/xen_pt*.c makes for PCI passthrough and forwards
 * each one, as one request frame of the broker session protocol
 * (pci/broker/c/dmsb.h, docs/broker-protocol.md), over the session socket
 * the launcher left open in QEMU. QEMU keeps -xen-domid-restrict: it never
 * needs the privileged hypercalls itself, the broker checks and makes them.
 *
 *   QEMU xen_pt ── xc_physdev_map_pirq() ──▶ shim ── MAP_PIRQ seq=n ──▶ broker
 *                ◀── 0, *pirq / -1, errno ── shim ◀── reply seq=n ───── (audit)
 *
 * Modes, chosen once on first use:
 *   - broker:   DMSANDBOX_BROKER_FD names an fd that is a SOCK_SEQPACKET
 *               socket. HELLO is exchanged first (version checked); if it
 *               fails, every call fails (fail closed, never a fallback).
 *               A variable that is set but malformed, or names an fd that
 *               is not a SOCK_SEQPACKET socket, is broken too (EBADF).
 *   - fallback: the variable is absent: each call goes to the next
 *               definition of the symbol
 *               (dlsym(RTLD_NEXT)), i.e. the real libxenctrl, so the library
 *               is harmless when preloaded without a broker. If no later
 *               object defines it (libxenctrl not loaded), the call returns
 *               -1 with errno ENOSYS.
 *
 * The files QEMU's xen_pt opens itself (sysfs, /dev/mem) are
 * dmsb_shim_files.c's: it asks for them over the same session.
 *
 * Threads: one mutex around each exchange (the protocol allows one request
 * in flight per session). No allocation and no stdio: a frame lives on the
 * stack.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <xenctrl.h>

#include "dmsb.h"
#include "shim.h"

#define SHIM_ENV "DMSANDBOX_BROKER_FD"

enum shim_mode { MODE_UNKNOWN, MODE_FALLBACK, MODE_BROKER, MODE_BROKEN };

static pthread_mutex_t shim_mu = PTHREAD_MUTEX_INITIALIZER;
static enum shim_mode shim_mode; /* guarded by shim_mu */
static int shim_fd = -1;
static uint32_t shim_seq;
static int shim_broken_errno; /* errno every call returns once MODE_BROKEN */

/* parse_fd reads a non-negative decimal fd number; -1 if malformed. */
static int parse_fd(const char *s)
{
	long v = 0;

	if (s == NULL || *s == '\0')
		return -1;
	for (; *s; s++) {
		if (*s < '0' || *s > '9')
			return -1;
		v = v * 10 + (*s - '0');
		if (v > 1 << 20)
			return -1;
	}
	return (int)v;
}

static int send_all(const void *buf, size_t len)
{
	ssize_t n;

	do
		n = send(shim_fd, buf, len, MSG_NOSIGNAL);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return errno;
	return (size_t)n == len ? 0 : EPROTO;
}

/*
 * reply_status checks that reply (n bytes) answers h and returns 0, the
 * broker's status, or a negative errno for a framing failure.
 */
static int reply_status(const unsigned char *reply, ssize_t n, const struct dmsb_header *h,
			struct dmsb_header *rh, struct dmsb_reply_prefix *rp, void *res, size_t reslen)
{
	if (n == 0)
		return -ECONNRESET; /* the broker closed the session */
	if ((size_t)n < sizeof *rh + sizeof *rp || n > DMSB_MAX_FRAME)
		return -EPROTO;
	memcpy(rh, reply, sizeof *rh);
	memcpy(rp, reply + sizeof *rh, sizeof *rp);
	/* One request in flight: anything but the reply to it is a broken peer. */
	if (rh->magic != DMSB_MAGIC || rh->version != DMSB_VERSION || rh->flags != DMSB_FLAG_REPLY ||
	    rh->op != h->op || rh->seq != h->seq || rh->length != (size_t)n - sizeof *rh)
		return -EPROTO;
	if (rp->status < 0)
		return -EPROTO;
	if (rp->status != 0)
		return rp->status;
	if (reslen != 0) {
		if ((size_t)n != sizeof *rh + sizeof *rp + reslen)
			return -EPROTO;
		memcpy(res, reply + sizeof *rh + sizeof *rp, reslen);
	}
	return 0;
}

/*
 * recv_reply receives one datagram into buf and, if fdp is not NULL, the
 * one fd it may carry (SCM_RIGHTS, close-on-exec). Any fd that arrives
 * when none is expected, or more than one, is closed and the reply is
 * EPROTO: a peer must never leave descriptors in QEMU by surprise.
 */
static ssize_t recv_reply(unsigned char *buf, size_t len, int *fdp)
{
	union {
		struct cmsghdr h;
		char b[CMSG_SPACE(2 * sizeof(int))];
	} cm;
	struct iovec iov = { buf, len };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cm.b, .msg_controllen = sizeof cm.b };
	struct cmsghdr *c;
	int got = -1, extra = 0;
	ssize_t n;

	do
		n = recvmsg(shim_fd, &mh, MSG_CMSG_CLOEXEC);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;
	for (c = CMSG_FIRSTHDR(&mh); c != NULL; c = CMSG_NXTHDR(&mh, c)) {
		size_t i, nfd;

		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
			continue;
		nfd = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (i = 0; i < nfd; i++) {
			int fd;

			memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
			if (got < 0 && fdp != NULL) {
				got = fd;
			} else {
				close(fd);
				extra = 1;
			}
		}
	}
	if (extra || (mh.msg_flags & MSG_CTRUNC)) {
		if (got >= 0)
			close(got);
		return -EPROTO;
	}
	if (fdp != NULL)
		*fdp = got;
	return n;
}

/*
 * exchange sends op with body and waits for the reply of the same seq.
 * Returns 0 or the broker's status (a positive errno); a transport or
 * framing failure is returned as a negative errno. Copies the op's result
 * (only on status 0) to res. fdp, if not NULL, receives the fd a
 * successful reply must carry. Called with shim_mu held.
 */
static int exchange(uint16_t op, const void *body, uint32_t len, void *res, size_t reslen, int *fdp)
{
	/* +1: a reply longer than any valid frame is seen as too long. */
	unsigned char frame[DMSB_MAX_FRAME], reply[DMSB_MAX_FRAME + 1];
	struct dmsb_header h = { DMSB_MAGIC, DMSB_VERSION, op, 0, ++shim_seq, len, 0 };
	struct dmsb_header rh;
	struct dmsb_reply_prefix rp;
	ssize_t n;
	int err, fd = -1, st;

	memcpy(frame, &h, sizeof h);
	memcpy(frame + sizeof h, body, len);
	if ((err = send_all(frame, sizeof h + len)) != 0)
		return -err;
	n = recv_reply(reply, sizeof reply, fdp != NULL ? &fd : NULL);
	if (n < 0)
		return (int)n;
	st = reply_status(reply, n, &h, &rh, &rp, res, reslen);
	if (st == 0 && fdp != NULL && fd < 0)
		st = -EPROTO; /* success without the promised fd */
	if (st != 0 && fd >= 0) {
		close(fd);
		fd = -1;
	}
	if (fdp != NULL)
		*fdp = fd;
	return st;
}

/*
 * choose decides the mode on first use. Called with shim_mu held. Why
 * SO_TYPE: an inherited number that is not our socket (closed, reused by
 * QEMU for something else) must never receive frames.
 */
static void choose(void)
{
	struct dmsb_hello hello = { DMSB_VERSION, 0 };
	struct dmsb_hello_reply hr;
	int type = 0, st;
	socklen_t tl = sizeof type;
	const char *env = getenv(SHIM_ENV);
	int fd = parse_fd(env);

	if (env == NULL) {
		shim_mode = MODE_FALLBACK;
		return;
	}
	if (fd < 0 || getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tl) != 0 || type != SOCK_SEQPACKET) {
		/* Fail closed: the variable promises a broker; a malformed
		 * number or an fd that is not the session socket must not
		 * send QEMU back to libxenctrl (or to the wrong peer). */
		shim_mode = MODE_BROKEN;
		shim_broken_errno = EBADF;
		return;
	}
	shim_fd = fd;
	st = exchange(DMSB_HELLO, &hello, sizeof hello, &hr, sizeof hr, NULL);
	if (st != 0) {
		/* Fail closed: a broker was promised; never fall back to libxenctrl. */
		shim_mode = MODE_BROKEN;
		shim_broken_errno = st < 0 ? -st : st;
		return;
	}
	shim_mode = MODE_BROKER;
}

/*
 * shim_call runs one exchange under the mutex. Returns 1 if the call was
 * forwarded (*ret holds libxenctrl's return value, errno set on -1), 0 if
 * the caller must fall back. fdp as for exchange.
 */
int shim_call(uint16_t op, const void *body, uint32_t len, void *res, size_t reslen, int *fdp, int *ret)
{
	int st;

	pthread_mutex_lock(&shim_mu);
	if (shim_mode == MODE_UNKNOWN)
		choose();
	switch (shim_mode) {
	case MODE_FALLBACK:
		pthread_mutex_unlock(&shim_mu);
		return 0;
	case MODE_BROKEN:
		st = shim_broken_errno;
		break;
	default:
		st = exchange(op, body, len, res, reslen, fdp);
		if (st < 0) {
			/* Transport or framing failure: the session is unusable. */
			st = -st;
			shim_mode = MODE_BROKEN;
			shim_broken_errno = st;
		}
	}
	pthread_mutex_unlock(&shim_mu);
	*ret = st == 0 ? 0 : -1;
	if (st != 0)
		errno = st; /* after the unlock, which may clobber errno */
	return 1;
}

/* call: the xc_* calls expect no fd. */
#define call(op, body, len, res, reslen, ret) shim_call(op, body, len, res, reslen, NULL, ret)

/* shim_forwarding reports (choosing the mode if need be) whether calls
 * go to the broker rather than to libxenctrl. */
int shim_forwarding(void)
{
	int fwd;

	pthread_mutex_lock(&shim_mu);
	if (shim_mode == MODE_UNKNOWN)
		choose();
	fwd = shim_mode != MODE_FALLBACK;
	pthread_mutex_unlock(&shim_mu);
	return fwd;
}

/*
 * next resolves the real libxenctrl symbol once. Benign race: two threads
 * may both look it up and store the same pointer.
 */
static void *next(void **cache, const char *name)
{
	void *p = __atomic_load_n(cache, __ATOMIC_ACQUIRE);

	if (p == NULL) {
		p = dlsym(RTLD_NEXT, name);
		__atomic_store_n(cache, p, __ATOMIC_RELEASE);
	}
	return p;
}

/* FALLBACK calls the real fn with args, or fails with ENOSYS. */
#define FALLBACK(fn, ...)                                                   \
	do {                                                                \
		static void *cache;                                         \
		typeof(&fn) real = (typeof(&fn))next(&cache, #fn);          \
		if (real == NULL) {                                         \
			errno = ENOSYS;                                     \
			return -1;                                          \
		}                                                           \
		return real(__VA_ARGS__);                                   \
	} while (0)

SHIM_API int xc_domain_memory_mapping(xc_interface *xch, uint32_t domid, unsigned long first_gfn,
				      unsigned long first_mfn, unsigned long nr_mfns, uint32_t add_mapping)
{
	struct dmsb_memory_mapping b = { domid, add_mapping, first_gfn, first_mfn, nr_mfns };
	int ret;

	/* libxenctrl returns 0 for an empty range before any hypercall; the
	 * broker would refuse it (EINVAL), so answer as libxenctrl does. */
	if (nr_mfns == 0 && shim_forwarding())
		return 0;
	if (call(DMSB_MEMORY_MAPPING, &b, sizeof b, NULL, 0, &ret))
		return ret;
	FALLBACK(xc_domain_memory_mapping, xch, domid, first_gfn, first_mfn, nr_mfns, add_mapping);
}

SHIM_API int xc_domain_ioport_mapping(xc_interface *xch, uint32_t domid, uint32_t first_gport,
				      uint32_t first_mport, uint32_t nr_ports, uint32_t add_mapping)
{
	struct dmsb_ioport_mapping b = { domid, add_mapping, first_gport, first_mport, nr_ports, 0 };
	int ret;

	if (call(DMSB_IOPORT_MAPPING, &b, sizeof b, NULL, 0, &ret))
		return ret;
	FALLBACK(xc_domain_ioport_mapping, xch, domid, first_gport, first_mport, nr_ports, add_mapping);
}

SHIM_API int xc_physdev_map_pirq(xc_interface *xch, uint32_t domid, int index, int *pirq)
{
	struct dmsb_map_pirq b = { domid, index, 0, 0 };
	struct dmsb_pirq_reply r;
	int ret;

	/* As libxenctrl: no out-parameter is EINVAL before any hypercall. */
	if (pirq == NULL) {
		errno = EINVAL;
		return -1;
	}
	b.pirq = *pirq;
	if (call(DMSB_MAP_PIRQ, &b, sizeof b, &r, sizeof r, &ret)) {
		if (ret == 0)
			*pirq = r.pirq;
		return ret;
	}
	FALLBACK(xc_physdev_map_pirq, xch, domid, index, pirq);
}

SHIM_API int xc_physdev_map_pirq_msi(xc_interface *xch, uint32_t domid, int index, int *pirq, int devfn,
				     int bus, int entry_nr, uint64_t table_base)
{
	struct dmsb_map_pirq_msi b = { domid, index, 0, devfn, bus, entry_nr, table_base };
	struct dmsb_pirq_reply r;
	int ret;

	if (pirq == NULL) {
		errno = EINVAL;
		return -1;
	}
	b.pirq = *pirq;
	if (call(DMSB_MAP_PIRQ_MSI, &b, sizeof b, &r, sizeof r, &ret)) {
		if (ret == 0)
			*pirq = r.pirq;
		return ret;
	}
	FALLBACK(xc_physdev_map_pirq_msi, xch, domid, index, pirq, devfn, bus, entry_nr, table_base);
}

SHIM_API int xc_physdev_unmap_pirq(xc_interface *xch, uint32_t domid, int pirq)
{
	struct dmsb_unmap_pirq b = { domid, pirq };
	int ret;

	if (call(DMSB_UNMAP_PIRQ, &b, sizeof b, NULL, 0, &ret))
		return ret;
	FALLBACK(xc_physdev_unmap_pirq, xch, domid, pirq);
}

SHIM_API int xc_domain_bind_pt_pci_irq(xc_interface *xch, uint32_t domid, uint8_t machine_irq, uint8_t bus,
				       uint8_t device, uint8_t intx)
{
	struct dmsb_bind_pt_pci_irq b = { domid, machine_irq, bus, device, intx };
	int ret;

	if (call(DMSB_BIND_PT_PCI_IRQ, &b, sizeof b, NULL, 0, &ret))
		return ret;
	FALLBACK(xc_domain_bind_pt_pci_irq, xch, domid, machine_irq, bus, device, intx);
}

SHIM_API int xc_domain_unbind_pt_irq(xc_interface *xch, uint32_t domid, uint8_t machine_irq, uint8_t irq_type,
				     uint8_t bus, uint8_t device, uint8_t intx, uint8_t isa_irq)
{
	struct dmsb_unbind_pt_irq b = { domid, machine_irq, irq_type, bus, device, intx, isa_irq, 0 };
	int ret;

	if (call(DMSB_UNBIND_PT_IRQ, &b, sizeof b, NULL, 0, &ret))
		return ret;
	FALLBACK(xc_domain_unbind_pt_irq, xch, domid, machine_irq, irq_type, bus, device, intx, isa_irq);
}

SHIM_API int xc_domain_update_msi_irq(xc_interface *xch, uint32_t domid, uint32_t gvec, uint32_t pirq,
				      uint32_t gflags, uint64_t gtable)
{
	struct dmsb_update_msi_irq b = { domid, gvec, pirq, gflags, gtable };
	int ret;

	if (call(DMSB_UPDATE_MSI_IRQ, &b, sizeof b, NULL, 0, &ret))
		return ret;
	FALLBACK(xc_domain_update_msi_irq, xch, domid, gvec, pirq, gflags, gtable);
}

SHIM_API int xc_domain_unbind_msi_irq(xc_interface *xch, uint32_t domid, uint32_t gvec, uint32_t pirq,
				      uint32_t gflags)
{
	struct dmsb_unbind_msi_irq b = { domid, gvec, pirq, gflags };
	int ret;

	if (call(DMSB_UNBIND_MSI_IRQ, &b, sizeof b, NULL, 0, &ret))
		return ret;
	FALLBACK(xc_domain_unbind_msi_irq, xch, domid, gvec, pirq, gflags);
}
