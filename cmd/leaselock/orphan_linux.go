package main

import (
	"os/exec"
	"syscall"
)

// setOrphanSignal has the kernel kill the command if leaselock dies first
// (SIGKILL, out of memory): no one would renew its lock, and another process
// could take the lock while it still runs. Only the command's own process:
// what it started runs on. cmd.SysProcAttr must be set.
func setOrphanSignal(cmd *exec.Cmd) {
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
}
