// Package audit is the broker's append-only, hash-chained, durable record of
// every request a session made and what the broker decided.
//
// On disk a log is a directory of files named audit-<N>.log, where N (20
// digits) is the index of the first record in the file; lexical order is
// chain order. Each file holds one JSON record per line, format version 1:
//
//	{"v":1,"n":42,"time":"...","session":3,"domid":7,"pid":1234,"uid":0,
//	 "op":"memory_mapping","args":"...","verdict":"deny","errno":34,
//	 "err":"...","latency_ns":5123,"prev":"<hex>","hash":"<hex>"}
//
// hash is SHA-256 over the line's bytes up to (not including) the
// `,"hash":` suffix, so it covers prev: every record commits to the whole
// chain before it. prev of record 1 is 64 zeros. Rotation starts a new file
// whose first record's prev is the hash of the previous file's last
// record, so the chain runs across files. Verify detects an edited,
// removed, inserted or reordered record; it cannot detect the loss of the
// newest records unless the last hash was kept elsewhere (the optional
// syslog copy carries every hash for that reason).
//
// Durability: Append returns once the record is on stable storage when
// the log is Durable. Concurrent appenders share fsyncs (group commit): the
// first waiter writes and syncs everything queued so far, the others wait
// for it, so n concurrent sessions cost far fewer than n fsyncs.
package audit
