package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/dmsandbox/dmsandbox/pci/audit"
)

// The audit command: check and read the broker's audit log.
func init() {
	register(command{Name: "audit", Summary: "verify or tail the broker's audit log", Run: auditCmd})
}

const auditUsage = `usage: dmsandbox audit verify [--contains HASH] FILE|DIR...
                                            check the hash chain across the files, in order;
                                            --contains: a record hash kept elsewhere (the syslog
                                            copy) must be in the chain, so a cut tail is detected
       dmsandbox audit tail [-n N] [-f] [FILE|DIR] print records for people (default dir ` + defaultAuditDir + `)
exit codes: 0 chain intact; 1 chain broken (edited, removed, inserted or reordered record) or unreadable; 2 usage`

func auditCmd(args []string) int {
	if len(args) == 0 {
		fmt.Fprintln(os.Stderr, auditUsage)
		return ExitUsage
	}
	switch args[0] {
	case "verify":
		return auditVerify(args[1:])
	case "tail":
		return auditTail(args[1:])
	case "help", "-h", "--help":
		fmt.Println(auditUsage)
		return ExitOK
	}
	fmt.Fprintln(os.Stderr, auditUsage)
	return ExitUsage
}

// expand turns directories into their log files, in chain order.
func expand(paths []string) ([]string, error) {
	var out []string
	for _, p := range paths {
		st, err := os.Stat(p)
		if err != nil {
			return nil, err
		}
		if !st.IsDir() {
			out = append(out, p)
			continue
		}
		files, err := audit.Files(p)
		if err != nil {
			return nil, err
		}
		if len(files) == 0 {
			return nil, fmt.Errorf("%s: no audit files", p)
		}
		out = append(out, files...)
	}
	return out, nil
}

func auditVerify(args []string) int {
	fs := flag.NewFlagSet("audit verify", flag.ContinueOnError)
	contains := fs.String("contains", "", "hash of a record that must be in the chain")
	if err := fs.Parse(args); err != nil {
		return ExitUsage
	}
	args = fs.Args()
	if len(args) == 0 {
		fmt.Fprintln(os.Stderr, auditUsage)
		return ExitUsage
	}
	files, err := expand(args)
	if err != nil {
		fmt.Fprintln(os.Stderr, "dmsandbox audit:", err)
		return ExitFailure
	}
	rep, err := audit.Verify(files...)
	if err != nil {
		fmt.Fprintln(os.Stderr, "dmsandbox audit: BROKEN:", err)
		return ExitFailure
	}
	if *contains != "" && !rep.Has(*contains) {
		fmt.Fprintf(os.Stderr, "dmsandbox audit: BROKEN: no record with hash %s: records were cut from the end (the chain ends at record %d)\n", *contains, rep.LastN)
		return ExitFailure
	}
	start := "from the first record"
	if rep.Partial {
		start = fmt.Sprintf("from record %d (earlier files not given)", rep.FirstN)
	}
	fmt.Printf("ok: %d records in %d files, chain intact %s to record %d\nhead %s\n", rep.Records, rep.Files, start, rep.LastN, rep.Head)
	return ExitOK
}

func auditTail(args []string) int {
	fs := flag.NewFlagSet("audit tail", flag.ContinueOnError)
	n := fs.Int("n", 20, "records to show")
	follow := fs.Bool("f", false, "keep printing new records")
	if err := fs.Parse(args); err != nil {
		return ExitUsage
	}
	paths := fs.Args()
	if len(paths) == 0 {
		paths = []string{defaultAuditDir}
	}
	var shown uint64
	for {
		files, err := expand(paths)
		if err != nil {
			fmt.Fprintln(os.Stderr, "dmsandbox audit:", err)
			return ExitFailure
		}
		var recs []*audit.Record
		for _, f := range files {
			r, err := audit.ReadFile(f)
			recs = append(recs, r...)
			if err != nil && !errors.Is(err, audit.ErrChain) {
				fmt.Fprintln(os.Stderr, "dmsandbox audit:", err)
				return ExitFailure
			}
		}
		start := 0
		if shown == 0 && len(recs) > *n {
			start = len(recs) - *n
		}
		for _, r := range recs[start:] {
			if r.N > shown {
				fmt.Println(audit.Format(r))
				shown = r.N
			}
		}
		if !*follow {
			return ExitOK
		}
		time.Sleep(500 * time.Millisecond)
	}
}
