/*
 * shim.h — what the shim's two halves share: dmsb_shim.c owns the session
 * (mode, mutex, framing); dmsb_shim_files.c intercepts the files QEMU
 * opens itself and asks the broker for them through shim_call.
 */
#ifndef DMSB_SHIM_H
#define DMSB_SHIM_H

#include <stddef.h>
#include <stdint.h>

#define SHIM_API __attribute__((visibility("default")))

/* shim_forwarding: 1 if calls go to a broker (or fail closed), 0 in
 * fallback mode (no DMSANDBOX_BROKER_FD). Chooses the mode on first use. */
int shim_forwarding(void);

/* shim_call: one request and its reply. Returns 0 in fallback mode; else
 * 1 with *ret = 0 or -1 (errno set). fdp, if not NULL, receives the fd a
 * successful reply carries. */
int shim_call(uint16_t op, const void *body, uint32_t len, void *res, size_t reslen, int *fdp, int *ret);

#endif
