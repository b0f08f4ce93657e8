package main

import (
	"fmt"
	"runtime/debug"
)

// version is set at link time by the Makefile (-X main.version=...).
var version = "dev"

func init() {
	register(command{Name: "version", Summary: "print the version", Run: func([]string) int {
		v := version
		if bi, ok := debug.ReadBuildInfo(); ok && v == "dev" {
			for _, s := range bi.Settings {
				if s.Key == "vcs.revision" {
					v += "+" + s.Value
				}
			}
		}
		fmt.Println("dmsandbox", v)
		return ExitOK
	}})
}
