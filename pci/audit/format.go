package audit

import (
	"fmt"
	"io"
	"log/syslog"
	"time"

	"golang.org/x/sys/unix"
)

// Format renders a record on one line for people (dmsandbox audit tail).
func Format(r *Record) string {
	errno := ""
	if r.Errno != 0 {
		errno = " " + unix.ErrnoName(unix.Errno(r.Errno))
		if errno == " " {
			errno = fmt.Sprintf(" errno=%d", r.Errno)
		}
	}
	msg := ""
	if r.Err != "" {
		msg = " (" + r.Err + ")"
	}
	return fmt.Sprintf("%s #%d s%d dom%d pid=%d uid=%d %-15s %-9s%s %s %v%s",
		r.Time.Local().Format("2006-01-02 15:04:05.000"), r.N, r.Session, r.Domid, r.PID, r.UID,
		r.Op, r.Verdict, errno, r.Args, time.Duration(r.LatencyNS), msg)
}

// Syslog returns a writer that copies each record line to the local
// syslog (journald reads it) as authpriv.info, tagged dmsandbox-audit.
func Syslog() (io.Writer, error) {
	w, err := syslog.New(syslog.LOG_AUTHPRIV|syslog.LOG_INFO, "dmsandbox-audit")
	if err != nil {
		return nil, fmt.Errorf("audit: syslog: %w", err)
	}
	return w, nil
}
