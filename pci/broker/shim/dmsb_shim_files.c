/*
 * dmsb_shim_files.c — the files Xen QEMU's passthrough code opens itself.
 *
 * hw/xen/xen-host-pci-device.c reads a passed-through device from sysfs:
 * /sys/bus/pci/devices/BDF/{resource,vendor,device,irq,class} read-only
 * and config read-write (pread/pwrite for the device's config space);
 * hw/xen/xen_pt_msi.c maps the MSI-X table read-only through /dev/mem. A
 * confined QEMU has an empty /sys, no /dev/mem and no privilege, so in
 * broker mode this file intercepts those opens and asks the broker:
 *
 *   open("/sys/bus/pci/devices/0000:00:05.0/irq")  ── OPEN_FILE {bdf, irq} ──▶ broker
 *                                                   ◀── reply + fd (O_RDONLY) ──
 *   pwrite(config fd, 2 bytes @4)                   ── CONFIG_WRITE (filter) ──▶ broker
 *   open("/dev/mem"); mmap(off = table address)     ── OPEN_FILE {any, msix_bar, addr} ──▶
 *                                                   ◀── fd of resourceN, BAR base ──
 *
 * Every fd the broker hands out is read-only, opened by the broker after
 * it checked the device belongs to the session: reads are native (the
 * kernel lets a root-opened config fd read all 4096 bytes), writes to
 * config space go through the broker's write filter one aligned 1/2/4
 * byte piece at a time, and a write to any other handed fd fails (EBADF).
 *
 * In fallback mode (no DMSANDBOX_BROKER_FD) nothing is intercepted.
 * Paths outside /sys/bus/pci/devices/ and /dev/mem are never touched: the
 * check is a string compare before anything else.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include "dmsb.h"
#include "shim.h"

#define SYSFS_PCI "/sys/bus/pci/devices/"
#define MAX_TRACKED 32

/* A handed config fd (pwrite goes to the broker) or the /dev/mem stand-in
 * (mmap asks the broker for the BAR). Identified by number and inode:
 * QEMU closes these fds without telling us, and a reused number must not
 * inherit the role. */
struct tracked {
	int fd;
	int kind; /* 0 free, KIND_CONFIG, KIND_DEVMEM */
	dev_t dev;
	ino_t ino;
	uint32_t bdf;
};

enum { KIND_CONFIG = 1, KIND_DEVMEM = 2 };

static pthread_mutex_t files_mu = PTHREAD_MUTEX_INITIALIZER;
static struct tracked tracked[MAX_TRACKED]; /* guarded by files_mu */
/* any_tracked: set once something is tracked, so that QEMU's every
 * pwrite and mmap (disk I/O, guest RAM) skips the lock until then. */
static int any_tracked;

static const struct {
	const char *name;
	uint32_t file;
} sysfs_files[] = {
	{ "config", DMSB_FILE_CONFIG },
	{ "resource", DMSB_FILE_RESOURCE },
	{ "vendor", DMSB_FILE_VENDOR },
	{ "device", DMSB_FILE_DEVICE },
	{ "subsystem_vendor", DMSB_FILE_SUBSYSTEM_VENDOR },
	{ "subsystem_device", DMSB_FILE_SUBSYSTEM_DEVICE },
	{ "class", DMSB_FILE_CLASS },
	{ "irq", DMSB_FILE_IRQ },
};

static void *next_sym(void **cache, const char *name)
{
	void *p = __atomic_load_n(cache, __ATOMIC_ACQUIRE);

	if (p == NULL) {
		p = dlsym(RTLD_NEXT, name);
		__atomic_store_n(cache, p, __ATOMIC_RELEASE);
	}
	return p;
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* hexn parses exactly n lower-case hex digits (sysfs names are lower case). */
static int hexn(const char *s, int n, uint32_t *v)
{
	*v = 0;
	for (int i = 0; i < n; i++) {
		int d = hexval(s[i]);

		if (d < 0)
			return -1;
		*v = *v << 4 | (uint32_t)d;
	}
	return 0;
}

/*
 * parse_sysfs recognises SYSFS_PCI "SSSS:BB:DD.F/NAME" exactly. Returns 1
 * with the bdf and file set, 0 for any other path (left to the real open).
 */
static int parse_sysfs(const char *path, uint32_t *bdf, uint32_t *file)
{
	const char *p = path + sizeof SYSFS_PCI - 1;
	uint32_t seg, bus, dev, fn;

	if (strncmp(path, SYSFS_PCI, sizeof SYSFS_PCI - 1) != 0)
		return 0;
	if (hexn(p, 4, &seg) || p[4] != ':' || hexn(p + 5, 2, &bus) || p[7] != ':' || hexn(p + 8, 2, &dev) ||
	    p[10] != '.' || p[11] < '0' || p[11] > '7' || p[12] != '/' || dev > 31)
		return 0;
	fn = (uint32_t)(p[11] - '0');
	for (size_t i = 0; i < sizeof sysfs_files / sizeof sysfs_files[0]; i++) {
		if (strcmp(p + 13, sysfs_files[i].name) == 0) {
			*bdf = DMSB_BDF(seg, bus, dev, fn);
			*file = sysfs_files[i].file;
			return 1;
		}
	}
	return 0;
}

/* stale_slot: slot i's fd was closed (and maybe reused for another
 * file) since it was tracked. Called with files_mu held. */
static int stale_slot(int i)
{
	struct stat st;

	return fstat(tracked[i].fd, &st) != 0 || st.st_dev != tracked[i].dev || st.st_ino != tracked[i].ino;
}

static int track(int fd, int kind, uint32_t bdf)
{
	struct stat st;
	int slot = -1;

	if (fstat(fd, &st) != 0)
		return -1;
	pthread_mutex_lock(&files_mu);
	__atomic_store_n(&any_tracked, 1, __ATOMIC_RELEASE);
	for (int i = 0; i < MAX_TRACKED && slot < 0; i++) {
		/* A slot whose fd number now names another file is stale. */
		if (tracked[i].kind == 0 || tracked[i].fd == fd)
			slot = i;
	}
	/* Full: QEMU closes these fds without telling us (a device unplugged,
	 * a realize that failed), and lookup only frees the slots it meets.
	 * Without this, a domain's hot-plug cycles would fill the table and
	 * every later open would fail. */
	for (int i = 0; i < MAX_TRACKED && slot < 0; i++) {
		if (stale_slot(i))
			slot = i;
	}
	if (slot >= 0)
		tracked[slot] = (struct tracked){ fd, kind, st.st_dev, st.st_ino, bdf };
	pthread_mutex_unlock(&files_mu);
	return slot >= 0 ? 0 : -1;
}

/* lookup returns the kind of fd (0: not ours) and its bdf. */
static int lookup(int fd, uint32_t *bdf)
{
	int kind = 0;

	if (fd < 0 || !__atomic_load_n(&any_tracked, __ATOMIC_ACQUIRE))
		return 0;
	pthread_mutex_lock(&files_mu);
	for (int i = 0; i < MAX_TRACKED; i++) {
		if (tracked[i].kind != 0 && tracked[i].fd == fd) {
			if (!stale_slot(i)) {
				kind = tracked[i].kind;
				*bdf = tracked[i].bdf;
			} else {
				tracked[i].kind = 0; /* closed and reused */
			}
			break;
		}
	}
	pthread_mutex_unlock(&files_mu);
	return kind;
}

/* open_file asks the broker; returns the fd or -1 with errno. */
static int open_file(uint32_t bdf, uint32_t file, uint64_t addr, struct dmsb_open_file_reply *r)
{
	struct dmsb_open_file b = { bdf, file, addr };
	struct dmsb_open_file_reply ignored;
	int ret, fd = -1;

	if (!shim_call(DMSB_OPEN_FILE, &b, sizeof b, r != NULL ? r : &ignored, sizeof *r, &fd, &ret)) {
		errno = ENOSYS; /* not reached: callers check shim_forwarding first */
		return -1;
	}
	return ret == 0 ? fd : -1;
}

/*
 * intercept decides an open. Returns 0 to let the real open run, or 1
 * with *fdp = the fd (or -1 and errno) in broker mode.
 */
static int intercept(const char *path, int flags, int *fdp)
{
	uint32_t bdf, file;
	int fd, acc = flags & O_ACCMODE;

	if (path == NULL)
		return 0;
	if (strcmp(path, "/dev/mem") == 0) {
		if (!shim_forwarding())
			return 0;
		/* A stand-in with an inode of its own: mmap on it is the
		 * only thing that means anything (see mmap64 below). */
		fd = memfd_create("dmsandbox-devmem", (flags & O_CLOEXEC) ? MFD_CLOEXEC : 0);
		if (fd >= 0 && track(fd, KIND_DEVMEM, DMSB_BDF_ANY) != 0) {
			close(fd);
			fd = -1;
			errno = EMFILE;
		}
		*fdp = fd;
		return 1;
	}
	if (!parse_sysfs(path, &bdf, &file) || !shim_forwarding())
		return 0;
	if ((acc != O_RDONLY && file != DMSB_FILE_CONFIG) || (flags & (O_CREAT | O_TRUNC | O_APPEND))) {
		*fdp = -1;
		errno = EACCES;
		return 1;
	}
	fd = open_file(bdf, file, 0, NULL);
	if (fd >= 0 && acc != O_RDONLY && track(fd, KIND_CONFIG, bdf) != 0) {
		close(fd);
		fd = -1;
		errno = EMFILE;
	}
	if (fd >= 0 && !(flags & O_CLOEXEC))
		fcntl(fd, F_SETFD, 0); /* received close-on-exec; QEMU asked otherwise */
	*fdp = fd;
	return 1;
}

static mode_t mode_arg(int flags, va_list ap)
{
	/* glibc's rule: O_TMPFILE contains O_DIRECTORY, so test all of it. */
	return ((flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE) ? va_arg(ap, mode_t) : 0;
}

typedef int (*open_fn)(const char *, int, ...);
typedef int (*openat_fn)(int, const char *, int, ...);
typedef int (*open2_fn)(const char *, int);

static int do_open(void **cache, const char *name, const char *path, int flags, mode_t mode)
{
	open_fn real = (open_fn)next_sym(cache, name);
	int fd;

	if (intercept(path, flags, &fd))
		return fd;
	if (real == NULL) {
		errno = ENOSYS;
		return -1;
	}
	return real(path, flags, mode);
}

/* Each interposed name and its 64-bit twin share one body; the cache of
 * the next definition is per name. */
#define OPEN_WRAPPER(name)                                             \
	SHIM_API int name(const char *path, int flags, ...)            \
	{                                                              \
		static void *cache;                                    \
		va_list ap;                                            \
		mode_t m;                                              \
                                                                       \
		va_start(ap, flags);                                   \
		m = mode_arg(flags, ap);                               \
		va_end(ap);                                            \
		return do_open(&cache, #name, path, flags, m);         \
	}
OPEN_WRAPPER(open64)
OPEN_WRAPPER(open)

/* openat with an absolute path ignores dirfd, as the kernel does. */
static int do_openat(void **cache, const char *name, int dirfd, const char *path, int flags, mode_t mode)
{
	openat_fn real = (openat_fn)next_sym(cache, name);
	int fd;

	if (path != NULL && path[0] == '/' && intercept(path, flags, &fd))
		return fd;
	if (real == NULL) {
		errno = ENOSYS;
		return -1;
	}
	return real(dirfd, path, flags, mode);
}

#define OPENAT_WRAPPER(name)                                           \
	SHIM_API int name(int dirfd, const char *path, int flags, ...) \
	{                                                              \
		static void *cache;                                    \
		va_list ap;                                            \
		mode_t m;                                              \
                                                                       \
		va_start(ap, flags);                                   \
		m = mode_arg(flags, ap);                               \
		va_end(ap);                                            \
		return do_openat(&cache, #name, dirfd, path, flags, m); \
	}
OPENAT_WRAPPER(openat64)
OPENAT_WRAPPER(openat)

/* The _FORTIFY_SOURCE entry points (Debian builds QEMU with them). */
static int do_open2(void **cache, const char *name, const char *path, int flags)
{
	open2_fn real = (open2_fn)next_sym(cache, name);
	int fd;

	if (intercept(path, flags, &fd))
		return fd;
	if (real == NULL) {
		errno = ENOSYS;
		return -1;
	}
	return real(path, flags);
}

#define OPEN2_WRAPPER(name)                                            \
	SHIM_API int name(const char *path, int flags)                 \
	{                                                              \
		static void *cache;                                    \
		return do_open2(&cache, #name, path, flags);           \
	}
OPEN2_WRAPPER(__open64_2)
OPEN2_WRAPPER(__open_2)

typedef int (*openat2_fn)(int, const char *, int);

static int do_openat2(void **cache, const char *name, int dirfd, const char *path, int flags)
{
	openat2_fn real = (openat2_fn)next_sym(cache, name);
	int fd;

	if (path != NULL && path[0] == '/' && intercept(path, flags, &fd))
		return fd;
	if (real == NULL) {
		errno = ENOSYS;
		return -1;
	}
	return real(dirfd, path, flags);
}

#define OPENAT2_WRAPPER(name)                                          \
	SHIM_API int name(int dirfd, const char *path, int flags)      \
	{                                                              \
		static void *cache;                                    \
		return do_openat2(&cache, #name, dirfd, path, flags);  \
	}
OPENAT2_WRAPPER(__openat64_2)
OPENAT2_WRAPPER(__openat_2)

/*
 * config_write sends len bytes at off as naturally aligned 1, 2 and 4
 * byte CONFIG_WRITEs, the only sizes the broker's filter takes. Stops at
 * the first refusal: returns the bytes written before it, or -1 and the
 * broker's errno if none were.
 */
static ssize_t config_write(uint32_t bdf, const void *buf, size_t len, off_t off)
{
	const unsigned char *p = buf;
	size_t done = 0;

	if (off < 0 || off > 4096 || len > 4096 - (size_t)off) {
		errno = EINVAL;
		return -1;
	}
	while (done < len) {
		uint32_t at = (uint32_t)off + done, size = 1, v = 0;
		struct dmsb_config_write w;
		int ret;

		if (at % 4 == 0 && len - done >= 4)
			size = 4;
		else if (at % 2 == 0 && len - done >= 2)
			size = 2;
		memcpy(&v, p + done, size); /* little-endian host, as config space */
		w = (struct dmsb_config_write){ bdf, (uint16_t)at, (uint8_t)size, 0, v, 0 };
		if (!shim_call(DMSB_CONFIG_WRITE, &w, sizeof w, NULL, 0, NULL, &ret)) {
			errno = EBADF;
			ret = -1;
		}
		if (ret != 0)
			return done > 0 ? (ssize_t)done : -1;
		done += size;
	}
	return (ssize_t)done;
}

typedef ssize_t (*pwrite_fn)(int, const void *, size_t, off_t);

static ssize_t do_pwrite(void **cache, const char *name, int fd, const void *buf, size_t len, off_t off)
{
	pwrite_fn real = (pwrite_fn)next_sym(cache, name);
	uint32_t bdf;

	if (lookup(fd, &bdf) == KIND_CONFIG)
		return config_write(bdf, buf, len, off);
	if (real == NULL) {
		errno = ENOSYS;
		return -1;
	}
	return real(fd, buf, len, off);
}

#define PWRITE_WRAPPER(name)                                                   \
	SHIM_API ssize_t name(int fd, const void *buf, size_t len, off_t off)  \
	{                                                                      \
		static void *cache;                                            \
		return do_pwrite(&cache, #name, fd, buf, len, off);            \
	}
PWRITE_WRAPPER(pwrite64)
PWRITE_WRAPPER(pwrite)

/*
 * devmem_map maps the BAR holding the MSI-X table at physical address
 * off: the broker checks the address is in a session device's MSI-X
 * table or PBA and hands the BAR's sysfs resource file. Read-only, as
 * xen_pt_msi.c maps it; MAP_LOCKED is dropped: an I/O mapping is never
 * paged out, and under dm_restrict RLIMIT_MEMLOCK is 0, so it would only
 * make the mmap fail.
 */
typedef void *(*mmap_fn)(void *, size_t, int, int, int, off_t);

static void *devmem_map(mmap_fn real, void *addr, size_t len, int prot, int flags, off_t off)
{
	struct dmsb_open_file_reply r;
	void *p;
	int fd, saved;

	if ((prot & ~PROT_READ) != 0 || !(flags & MAP_SHARED) || off < 0) {
		errno = EACCES;
		return MAP_FAILED;
	}
	fd = open_file(DMSB_BDF_ANY, DMSB_FILE_MSIX_BAR, (uint64_t)off, &r);
	if (fd < 0)
		return MAP_FAILED;
	if ((uint64_t)off < r.base || (uint64_t)off - r.base > r.size || len > r.size - ((uint64_t)off - r.base)) {
		close(fd);
		errno = EINVAL;
		return MAP_FAILED;
	}
	p = real(addr, len, prot, flags & ~MAP_LOCKED, fd, (off_t)((uint64_t)off - r.base));
	saved = errno;
	close(fd);
	errno = saved;
	return p;
}

static void *do_mmap(void **cache, const char *name, void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
	mmap_fn real = (mmap_fn)next_sym(cache, name);
	uint32_t bdf;

	if (real == NULL) {
		errno = ENOSYS;
		return MAP_FAILED;
	}
	if (fd >= 0 && !(flags & MAP_ANONYMOUS) && lookup(fd, &bdf) == KIND_DEVMEM)
		return devmem_map(real, addr, len, prot, flags, off);
	return real(addr, len, prot, flags, fd, off);
}

#define MMAP_WRAPPER(name)                                                                  \
	SHIM_API void *name(void *addr, size_t len, int prot, int flags, int fd, off_t off) \
	{                                                                                   \
		static void *cache;                                                         \
		return do_mmap(&cache, #name, addr, len, prot, flags, fd, off);             \
	}
MMAP_WRAPPER(mmap64)
MMAP_WRAPPER(mmap)
