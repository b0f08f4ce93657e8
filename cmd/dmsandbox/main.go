// Command dmsandbox runs a device model (QEMU) confined, and brokers the
// privileged operations PCI passthrough needs.
//
// One binary serves every role. Each role is a subcommand registered by its
// own file in this package (see command.go). When argv[1] starts with "-",
// the binary was executed in place of QEMU (libxl's device_model_override)
// and runs in DM mode. argv[1] == "init" is reserved for runc's re-exec of
// the container init and never reaches the subcommand table.
package main

import (
	"fmt"
	"os"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

// run dispatches argv and returns the process exit status.
func run(args []string) int {
	if len(args) == 0 {
		usage(os.Stderr)
		return ExitUsage
	}
	name := args[0]
	switch name {
	case "-h", "--help", "help":
		usage(os.Stdout)
		return ExitOK
	}
	if len(name) > 1 && name[0] == '-' {
		if dm, ok := commands["dm"]; ok {
			return dm.Run(args)
		}
		fmt.Fprintf(os.Stderr, "dmsandbox: unknown flag %q (DM mode not built in)\n", name)
		return ExitUsage
	}
	cmd, ok := commands[name]
	if !ok {
		fmt.Fprintf(os.Stderr, "dmsandbox: unknown command %q; see 'dmsandbox help'\n", name)
		return ExitUsage
	}
	return cmd.Run(args[1:])
}
