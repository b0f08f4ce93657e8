/*
 * example_client.c — a minimal C client of the broker session protocol,
 * the way the libxenctrl shim talks to the broker. Used by the Go test
 * TestCClient (pci/broker/c_client_test.go), which hands it a session as
 * fd 3 with device 0000:00:04.0 of domain 7 attached.
 *
 * Build: gcc -Wall -Werror -I pci/broker/c -o client pci/broker/c/example_client.c
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "dmsb.h"

static int fd = 3;
static uint32_t seq;

/* call sends one request and waits for its reply; returns the status
 * (0 or an errno) and copies the result, if any, to res. */
static int call(uint16_t op, const void *body, uint32_t len, void *res, size_t reslen)
{
	unsigned char frame[DMSB_MAX_FRAME], reply[DMSB_MAX_FRAME + 1];
	struct dmsb_header h = { DMSB_MAGIC, DMSB_VERSION, op, 0, ++seq, len, 0 };
	struct dmsb_header rh;
	struct dmsb_reply_prefix rp;
	ssize_t n;

	memcpy(frame, &h, sizeof h);
	memcpy(frame + sizeof h, body, len);
	if (send(fd, frame, sizeof h + len, MSG_NOSIGNAL) < 0)
		return -errno;
	n = recv(fd, reply, sizeof reply, 0);
	if (n < (ssize_t)(sizeof rh + sizeof rp))
		return -EPROTO;
	memcpy(&rh, reply, sizeof rh);
	memcpy(&rp, reply + sizeof rh, sizeof rp);
	if (rh.magic != DMSB_MAGIC || !(rh.flags & DMSB_FLAG_REPLY) || rh.seq != seq || rh.length != n - sizeof rh)
		return -EPROTO;
	if (rp.status == 0 && res && (size_t)n >= sizeof rh + sizeof rp + reslen)
		memcpy(res, reply + sizeof rh + sizeof rp, reslen);
	return rp.status;
}

int main(void)
{
	struct dmsb_hello hello = { DMSB_VERSION, 0 };
	struct dmsb_hello_reply hr = { 0 };
	struct dmsb_config_read cr = { DMSB_BDF(0, 0, 4, 0), 0, 4, 0 };
	struct dmsb_config_read_reply crr = { 0 };
	struct dmsb_memory_mapping mm = { 7, 1, 0xf0000, 0xfeb9f, 2 }; /* straddles BAR 0 and 1 */
	struct dmsb_map_pirq mp = { 7, 10, -1, 0 };
	struct dmsb_pirq_reply pr = { 0 };
	int st;

	st = call(DMSB_HELLO, &hello, sizeof hello, &hr, sizeof hr);
	printf("hello status=%d domid=%u ndevices=%u device0=%#x\n", st, hr.domid, hr.ndevices, hr.devices[0]);
	st = call(DMSB_CONFIG_READ, &cr, sizeof cr, &crr, sizeof crr);
	printf("config_read status=%d value=%#x\n", st, crr.value);
	st = call(DMSB_MEMORY_MAPPING, &mm, sizeof mm, NULL, 0);
	printf("memory_mapping status=%d (EXDEV=%d)\n", st, EXDEV);
	st = call(DMSB_MAP_PIRQ, &mp, sizeof mp, &pr, sizeof pr);
	printf("map_pirq status=%d pirq=%d\n", st, pr.pirq);
	st = call(99, &hello, sizeof hello, NULL, 0);
	printf("unknown_op status=%d (ENOSYS=%d)\n", st, ENOSYS);
	return 0;
}
