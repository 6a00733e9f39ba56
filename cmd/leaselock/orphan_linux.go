package main

import (
	"os/exec"
	"syscall"
)

// setOrphanSignal has the kernel kill the command if leaselock dies first
// (SIGKILL, out of memory): no one would renew its lock, and another process
// could take the lock while it still runs.
func setOrphanSignal(cmd *exec.Cmd) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
}
