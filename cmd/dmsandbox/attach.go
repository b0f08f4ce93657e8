package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strconv"
	"syscall"
	"text/tabwriter"

	"github.com/dmsandbox/dmsandbox/pci"
	"github.com/dmsandbox/dmsandbox/pci/broker"
)

// attach and detach: the hotplug-script interface (docs/broker.md,
// "Pre-authorisation"). They tell the broker daemon, by domid or by
// domain name, which devices a domain may receive; with `broker run --require-authorization`
// a device model's device_add of any other device is refused. Meant for
// /etc/xen/scripts hooks and QubesOS-style daemons: idempotent, silent on
// success, and the exit status says what happened.
func init() {
	register(command{Name: "attach", Summary: "authorise a PCI device for a domain (broker daemon); --list", Run: attachCmd})
	register(command{Name: "detach", Summary: "withdraw a PCI device from a domain (detaches it if in use)", Run: detachCmd})
}

const attachUsage = `usage: dmsandbox attach --domid N --device BDF [--socket PATH]     authorise BDF for domain N (running now)
       dmsandbox attach --domain NAME --device BDF [--socket PATH] authorise BDF for the domain called NAME,
                                                                   now or once created (xl create with pci=[...])
       dmsandbox detach --domid N|--domain NAME --device BDF      withdraw it (detached if the domain holds it)
       dmsandbox attach --list [--domid N|--domain NAME]           list authorisations (all without a domain)
The broker daemon (` + broker.DefaultControlSocket + ` unless --socket) does the work; nothing is printed on success.
Repeating attach, or detaching what is not attached, succeeds. A domid's authorisations end with the
domain (and with the host's boot); a name's last until detached.
exit codes: 0 done; 1 the broker refused or failed (reason on stderr; e.g. the device is authorised
  for another domain); 2 usage; 3 no broker daemon listening at the socket`

// exitNoBroker is attach/detach's "no daemon" status. The shared
// ExitConfig has the same value; here it has this documented meaning,
// which hotplug scripts branch on (retry later, or fall back).
const exitNoBroker = 3

func attachCmd(args []string) int { return authzCmd("attach", args) }
func detachCmd(args []string) int { return authzCmd("detach", args) }

func authzCmd(name string, args []string) int {
	flags := flag.NewFlagSet(name, flag.ContinueOnError)
	flags.SetOutput(io.Discard) // our usage, not flag's
	socket := flags.String("socket", broker.DefaultControlSocket, "broker control socket")
	domid := flags.String("domid", "", "domain id")
	domain := flags.String("domain", "", "domain name")
	device := flags.String("device", "", "PCI address DDDD:BB:DD.F")
	list := false
	if name == "attach" {
		flags.BoolVar(&list, "list", false, "list authorisations")
	}
	usage := func(why string) int {
		fmt.Fprintf(os.Stderr, "dmsandbox %s: %s\n%s\n", name, why, attachUsage)
		return ExitUsage
	}
	if err := flags.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Println(attachUsage)
			return ExitOK
		}
		return usage(err.Error())
	}
	if flags.NArg() > 0 {
		return usage(fmt.Sprintf("unexpected argument %q", flags.Arg(0)))
	}
	var dom uint32
	if *domid != "" {
		n, err := strconv.ParseUint(*domid, 10, 32)
		if err != nil || n == 0 {
			return usage(fmt.Sprintf("--domid %q: want a guest's domain id (1 or more)", *domid))
		}
		dom = uint32(n)
	}
	if dom != 0 && *domain != "" {
		return usage("--domid and --domain: one or the other")
	}
	if *domain != "" {
		if err := broker.CheckDomainName(*domain); err != nil {
			return usage("--domain: " + err.Error())
		}
	}
	d := broker.Domain{ID: dom, Name: *domain}
	var bdf pci.BDF
	switch {
	case list:
		if *device != "" {
			return usage("--list takes no --device")
		}
	case d.IsZero() || *device == "":
		return usage("--domid (or --domain) and --device are required")
	default:
		var err error
		if bdf, err = pci.ParseBDF(*device); err != nil {
			return usage(err.Error())
		}
	}

	c, err := broker.DialControl(*socket)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ECONNREFUSED) {
			fmt.Fprintf(os.Stderr, "dmsandbox %s: no broker daemon listening at %s: %v\n", name, *socket, err)
			return exitNoBroker
		}
		fmt.Fprintf(os.Stderr, "dmsandbox %s: %v\n", name, err)
		return ExitFailure
	}
	defer c.Shutdown()
	switch {
	case list:
		return printAuthorizations(c, d)
	case name == "attach":
		err = c.Authorize(d, bdf)
	default:
		err = c.Deauthorize(d, bdf)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "dmsandbox %s: %v\n", name, err)
		return ExitFailure
	}
	return ExitOK
}

func printAuthorizations(c *broker.ControlClient, d broker.Domain) int {
	list, err := c.Authorizations(d)
	if err != nil {
		fmt.Fprintln(os.Stderr, "dmsandbox attach:", err)
		return ExitFailure
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	// DOMID and DEVICE first, as scripts read them (contrib's
	// dmsandbox-pci); a name-keyed row has "-" for DOMID and its name in
	// NAME, last so that the older columns keep their places.
	fmt.Fprintln(w, "DOMID\tDEVICE\tSINCE\tSESSION\tNAME")
	for _, a := range list {
		session, domid, dname := "-", "-", "-"
		if a.Session != 0 {
			session = strconv.FormatUint(a.Session, 10)
		}
		if a.Domid != 0 {
			domid = strconv.FormatUint(uint64(a.Domid), 10)
		}
		if a.Name != "" {
			dname = a.Name
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", domid, a.BDF, a.Since.Format("2006-01-02T15:04:05Z"), session, dname)
	}
	w.Flush()
	return ExitOK
}
