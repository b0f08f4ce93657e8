package main

import (
	"fmt"
	"io"
	"sort"
)

// Exit codes shared by every subcommand. They are part of the CLI contract
// (documented in README.md): scripts branch on them.
const (
	ExitOK       = 0   // success
	ExitFailure  = 1   // the operation was tried and failed
	ExitUsage    = 2   // bad flags or arguments; nothing was done
	ExitConfig   = 3   // the config file is unreadable or invalid; nothing was done
	ExitConflict = 4   // the name/device is already in use; nothing was done
	ExitSetup    = 5   // the sandbox could not be built; everything was undone
	ExitSignaled = 128 // plus the signal number, when the confined program died of a signal
)

// command is one subcommand. Each file of this package that implements a
// role registers its command from an init function, so adding a role never
// edits a shared switch.
type command struct {
	Name    string
	Summary string
	Hidden  bool // internal plumbing, not listed in usage
	Run     func(args []string) int
}

var commands = map[string]command{}

func register(c command) {
	if c.Name == "init" {
		// runc re-executes the binary as "init" inside the container.
		panic("dmsandbox: the subcommand name init is reserved for runc")
	}
	if _, dup := commands[c.Name]; dup {
		panic("dmsandbox: duplicate subcommand " + c.Name)
	}
	commands[c.Name] = c
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: dmsandbox COMMAND [ARGS...]")
	fmt.Fprintln(w, "       dmsandbox -qemu-option ...   (DM mode: executed in place of QEMU)")
	fmt.Fprintln(w)
	names := make([]string, 0, len(commands))
	for n := range commands {
		if n != "dm" && !commands[n].Hidden {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-10s %s\n", n, commands[n].Summary)
	}
}
