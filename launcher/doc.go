// Package launcher builds the sandbox a device model runs in and supervises it.
//
// The flow is one ordered function, Launch (launch.go): validate the Spec,
// take the name lock, build (or reuse) the minimal root, create the cgroup
// with every limit, start the reaper that cleans up if the launcher dies,
// start the program through runc's libcontainer, wait for QMP, then relay
// signals and the exit status. Each mechanism lives in its own file:
//
//	config.go     the versioned config file and its built-in defaults
//	spec.go       Spec: what to run, validated
//	rootfs.go     the minimal read-only root, cached by content identity
//	cgroup.go     the only cgroup writer (containerd/cgroups v3, v1 and v2)
//	container.go  the only importer of runc's libcontainer
//	fds.go        which fds the program gets, and who owns them
//	qmp.go        the management QMP socket and readiness
//	reaper.go     cleanup that survives a SIGKILL of the launcher
//	state.go      the runtime directory /run/dmsandbox/NAME and its lock
//	inspect.go    the confinement in force, read from outside
package launcher
