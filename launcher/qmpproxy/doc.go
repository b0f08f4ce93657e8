// Package qmpproxy serves libxl's QMP sockets on QEMU's behalf and treats
// QEMU's side as untrusted.
//
// libxl connects to /var/run/xen/qmp-libxl-N (or, under dm_restrict,
// the listening socket it pre-opened) once per exchange. The proxy owns
// that listener from before QEMU starts, so a connection libxl makes
// right after QEMU writes "running" waits in the backlog instead of
// failing. Each client connection gets a fresh connection to QEMU's
// management monitor (QEMU serves one monitor client at a time; the
// proxy queues clients for a bounded time rather than letting one wait
// forever):
//
//	libxl                     proxy                          QEMU monitor
//	  connect ───────────────▶ accept; take backend (≤ QueueTimeout)
//	                           dial ────────────────────────▶
//	                           ◀──── greeting (≤ ReplyTimeout, ≤ MaxReply bytes)
//	  ◀──────────────────────── greeting, as QEMU sent it
//	  {"execute":C,...} ──────▶ frame (≤ MaxCommand), parse, allowlist,
//	                           device_add xen-pci-passthrough: Hook.Grant
//	                           canonical re-encoding, id ───▶
//	                           replaced by the proxy's own
//	                           ◀──── events (passed on), then the reply
//	  ◀──────────────────────── reply, client's id restored
//	                           (query-chardev: pty names rewritten)
//	  ... until libxl hangs up or is idle for IdleTimeout
//
// A command outside the allowlist, an oversized or malformed message, or
// a QEMU that does not answer within ReplyTimeout gets the client an
// error reply (or, when the stream cannot be resynchronised, a closed
// connection); QEMU is never killed for it, so the guest keeps running.
//
// QEMU finishes a command whose client has gone (it timed out, or hung
// up) and sends the reply on whatever connection its chardev has by then:
// before the greeting, or after it while the next client's command is in
// flight — and libxl numbers every connection's commands the same way, so
// the client's id cannot tell them apart. Every command therefore reaches
// QEMU under an id unique to this process ("dmsandbox-cmd-N"); a reply
// of another id is dropped (logged, at most 16 per connection) and the
// client's own id is put back into the one that matches.
package qmpproxy
