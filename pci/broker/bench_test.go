package broker

import (
	"testing"

	"golang.org/x/sys/unix"
)

// Go benchmarks of the session round trip; `dmsandbox broker bench`
// (make bench-broker) prints percentiles, ratios and the concurrent
// durable-audit rows. Compare BenchmarkRawRoundTrip with the others from
// the same run.

func BenchmarkRawRoundTrip(b *testing.B) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer unix.Close(fds[0])
	go func() {
		defer unix.Close(fds[1])
		buf := make([]byte, 512)
		for {
			n, err := unix.Read(fds[1], buf)
			if err != nil || n == 0 {
				return
			}
			unix.Write(fds[1], buf[:HeaderSize+ReplyPrefix+8])
		}
	}()
	req := EncodeRequest(1, &ConfigRead{Size: 4})
	buf := make([]byte, 512)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		unix.Write(fds[0], req)
		unix.Read(fds[0], buf)
	}
}

func benchConfigRead(b *testing.B, durable bool) {
	r := &rig{t: b, root: captured, dir: b.TempDir(), durable: durable}
	r.start()
	defer r.stop()
	_, c := r.session(dom, e1000e)
	defer c.Close()
	req := &ConfigRead{BDF: WireBDF(e1000e), Size: 4}
	var res ConfigReadReply
	before := r.audit.Stats()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := c.Do(req, &res); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if durable {
		st := r.audit.Stats()
		b.ReportMetric(float64(st.Records-before.Records)/float64(max(st.Syncs-before.Syncs, 1)), "records/fsync")
	}
}

func BenchmarkConfigReadAuditBuffered(b *testing.B) { benchConfigRead(b, false) }
func BenchmarkConfigReadAuditDurable(b *testing.B)  { benchConfigRead(b, true) }
