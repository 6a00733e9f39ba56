package main

// What a signal's sender and leaselock's death mean for the command, by
// what the operating system tells.

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// sentToCommandToo reports whether sig most likely came from leaselock's
// terminal, which sent it to the command as well: a terminal sends SIGINT
// (Ctrl-C) and SIGHUP to its whole foreground process group, and the
// command is in leaselock's. Sent twice, a second Ctrl-C would make many
// programs quit without cleaning up. A kill aimed at leaselock alone while
// it runs in the foreground of a terminal is not passed on: use SIGTERM,
// which a terminal never sends.
func sentToCommandToo(sig syscall.Signal) bool {
	if sig != syscall.SIGINT && sig != syscall.SIGHUP {
		return false
	}
	pgrp := syscall.Getpgrp()
	for _, fd := range []int{0, 1, 2} {
		if fg, err := unix.IoctlGetInt(fd, unix.TIOCGPGRP); err == nil && fg == pgrp {
			return true
		}
	}
	return false
}
