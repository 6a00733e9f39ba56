package main

// The command's processes as the operating system has them: its process
// group, whether a signal came from a terminal, and what leaselock's death
// does to it.

import (
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// process is the command's process, and its process group when it has one
// of its own: a signal then reaches whatever the command started too (a
// shell script's children).
type process struct {
	proc  *os.Process
	group bool
}

// signal sends sig to the process's group, or to the process, through
// os.Process, which never signals another process that reused its PID.
func (p process) signal(sig syscall.Signal) error {
	if p.group {
		return syscall.Kill(-p.proc.Pid, sig)
	}
	return p.proc.Signal(sig)
}

// killLeftovers sends SIGKILL to what is left of the process's group after the
// process exited: nothing when it had no group of its own.
func (p process) killLeftovers() {
	if p.group {
		_ = syscall.Kill(-p.proc.Pid, syscall.SIGKILL)
	}
}

// inTerminalForeground reports whether leaselock's process group is the
// foreground group of the terminal on its stdin, stdout or stderr. The
// command must then stay in that group to read the terminal and get its
// Ctrl-C; otherwise it gets a group of its own.
func inTerminalForeground() bool {
	pgrp := syscall.Getpgrp()
	for _, fd := range []int{0, 1, 2} {
		if fg, err := unix.IoctlGetInt(fd, unix.TIOCGPGRP); err == nil && fg == pgrp {
			return true
		}
	}
	return false
}

// sentToCommandToo reports whether sig most likely came from leaselock's
// terminal, which sent it to the command as well: a terminal sends SIGINT
// (Ctrl-C) and SIGHUP to its whole foreground process group, and the
// command is in leaselock's. Sent twice, a second Ctrl-C would make many
// programs quit without cleaning up. A kill aimed at leaselock alone while
// it runs in the foreground of a terminal is not passed on: use SIGTERM,
// which a terminal never sends.
func sentToCommandToo(sig syscall.Signal) bool {
	return (sig == syscall.SIGINT || sig == syscall.SIGHUP) && inTerminalForeground()
}
