package dmargv

// flagOptions take no argument. Every other option of qemu-options.hx
// that this package knows takes exactly one (argOptions); an option in
// neither table takes the next word as its argument unless that word
// starts with '-' (QEMU's own table is not available here, and the words
// pass through in order either way: the guess only decides where the
// next option starts).
var flagOptions = map[string]bool{
	"S": true, "no-shutdown": true, "no-reboot": true, "nodefaults": true, "no-user-config": true,
	"xen-attach": true, "xen-domid-restrict": true, "nographic": true, "daemonize": true,
	"no-acpi": true, "no-hpet": true, "enable-kvm": true, "snapshot": true, "full-screen": true,
	"s": true, "only-migratable": true, "no-fd-bootchk": true, "win2k-hack": true, "usb": true,
	"preconfig": true, "enable-fips": true, "alt-grab": true, "ctrl-grab": true, "no-frame": true,
	"no-quit": true, "version": true, "h": true, "help": true, "nodefconfig": true, "enable-sync-profile": true,
}

// argOptions take one argument.
var argOptions = map[string]bool{
	"xen-domid": true, "chardev": true, "mon": true, "qmp": true, "qmp-pretty": true, "monitor": true,
	"name": true, "vnc": true, "display": true, "serial": true, "parallel": true, "device": true,
	"boot": true, "net": true, "netdev": true, "nic": true, "machine": true, "M": true, "m": true,
	"smp": true, "cpu": true, "accel": true, "drive": true, "blockdev": true, "hda": true, "hdb": true,
	"hdc": true, "hdd": true, "cdrom": true, "fda": true, "fdb": true, "k": true, "kernel": true,
	"initrd": true, "append": true, "spice": true, "vga": true, "soundhw": true, "audiodev": true,
	"incoming": true, "chroot": true, "runas": true, "run-with": true, "sandbox": true, "L": true,
	"plugin": true, "pidfile": true, "D": true, "d": true, "trace": true, "object": true, "global": true,
	"rtc": true, "icount": true, "numa": true, "add-fd": true, "bios": true, "usbdevice": true,
	"readconfig": true, "writeconfig": true, "option-rom": true, "fsdev": true, "virtfs": true,
	"msg": true, "overcommit": true, "action": true, "uuid": true, "smbios": true, "acpitable": true,
	"mem-path": true, "watchdog-action": true, "semihosting-config": true,
	"iscsi": true, "pflash": true, "mtdblock": true, "sd": true,
	"echr": true, "gdb": true, "tb-size": true,
	"dtb": true, "fw_cfg": true, "compat": true, "set": true, "loadvm": true, "seed": true,
}

// takesArg tells whether option name (without leading dashes) consumes
// the next word, given that word (next == "" at the end of argv).
func takesArg(name, next string) bool {
	if flagOptions[name] {
		return false
	}
	if argOptions[name] {
		return true
	}
	return next != "" && next[0] != '-'
}
