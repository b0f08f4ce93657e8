package main

import (
	"fmt"

	"github.com/dmsandbox/dmsandbox/pci/broker"
)

// dmDomainName is the name DM mode gives the broker for domain domid
// (name-keyed authorisations match on it), or "" for none. argv is
// libxl's -name, parsed the way QEMU parses it; libxl passes the name
// unescaped, so a name with a comma would reach the broker cut short
// ("sys-net,debug-threads=on" read as "sys-net") and could match another
// domain's authorisations. The name counts only if it is the one libxl
// recorded for the domain in xenstore (/local/domain/N/name) and passes
// broker.CheckDomainName; else the session has no name and only
// domid-keyed authorisations apply (logged).
func dmDomainName(domid int, argv string, logf func(string, ...any)) string {
	name, err := xenstoreDomainName(domid, argv)
	if err != nil {
		if argv != "" {
			logf("domain %d: broker session without the domain's name: %v", domid, err)
		}
		return ""
	}
	return name
}

func xenstoreDomainName(domid int, argv string) (string, error) {
	if err := broker.CheckDomainName(argv); err != nil {
		return "", err
	}
	xs, closeXS, err := openXenstore()
	if err != nil {
		return "", fmt.Errorf("cannot check -name %q against xenstore: %w", argv, err)
	}
	defer closeXS()
	path := fmt.Sprintf("/local/domain/%d/name", domid)
	recorded, err := xs.Read(path)
	if err != nil {
		return "", fmt.Errorf("cannot check -name %q against xenstore: %w", argv, err)
	}
	if recorded != argv {
		return "", fmt.Errorf("-name %q is not the domain's name in xenstore (%s = %q)", argv, path, recorded)
	}
	return recorded, nil
}
