//go:build !linux

package main

import "os/exec"

// setOrphanSignal does nothing where the kernel cannot signal a child when
// its parent dies: there a command whose leaselock was killed runs on
// without its lock.
func setOrphanSignal(*exec.Cmd) {}
