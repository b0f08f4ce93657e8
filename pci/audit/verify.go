package audit

import (
	"fmt"
)

// Report is what Verify found in a chain that checked out.
type Report struct {
	Files   int
	Records uint64
	FirstN  uint64
	LastN   uint64
	// Head is the hash of the last record: compare it with a copy kept
	// elsewhere (syslog) to detect a cut tail.
	Head string
	// Partial: the first record does not start the chain (older files
	// were archived); its prev is trusted, not checked.
	Partial bool

	hashes map[string]bool
}

// Has reports whether a record with this hash is in the verified chain:
// given the hash of the newest record copied elsewhere (syslog), a false
// answer means records were cut from the end.
func (r Report) Has(hash string) bool { return r.hashes[hash] }

// Verify checks files, in the given order, as one chain: every line's own
// hash (an edit), every prev against the hash before it and every n
// against n-1 (a removal, insertion or reordering, within and across
// files). The first error names the file, line and record.
func Verify(files ...string) (Report, error) {
	rep := Report{hashes: map[string]bool{}}
	var prevHash string
	var prevN uint64
	first := true
	for _, path := range files {
		recs, err := ReadFile(path)
		if err != nil {
			return rep, err
		}
		rep.Files++
		for i, r := range recs {
			where := fmt.Sprintf("%s:%d", path, i+1)
			if first {
				first = false
				rep.FirstN = r.N
				if r.N != 1 || r.Prev != genesis {
					rep.Partial = true
				}
			} else {
				if r.Prev != prevHash {
					return rep, fmt.Errorf("%s: %w: record %d does not follow record %d (removed, inserted or reordered record)", where, ErrChain, r.N, prevN)
				}
				if r.N != prevN+1 {
					return rep, fmt.Errorf("%s: %w: record %d follows record %d", where, ErrChain, r.N, prevN)
				}
			}
			prevHash, prevN = r.Hash, r.N
			rep.hashes[r.Hash] = true
			rep.Records++
		}
	}
	rep.LastN, rep.Head = prevN, prevHash
	return rep, nil
}
