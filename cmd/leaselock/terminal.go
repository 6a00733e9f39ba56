package main

// The command's processes as the operating system has them: its process
// group, whether a signal came from a terminal, and what leaselock's death
// does to it.

import (
	"errors"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// process is the command's process, and its process group when it has one
// of its own: a signal then reaches whatever the command started too (a
// shell script's children).
type process struct {
	os    *os.Process
	group bool
}

// signal sends sig to the process's group, or to the process, through
// os.Process, which never signals another process that reused its PID. A
// group the process left (setsid, setpgid) is gone: the process gets sig
// alone then.
func (p process) signal(sig syscall.Signal) error {
	if p.group {
		if err := syscall.Kill(-p.os.Pid, sig); !errors.Is(err, syscall.ESRCH) {
			return err
		}
	}
	return p.os.Signal(sig)
}

// killLeftovers sends SIGKILL to what is left of the process's group after the
// process exited: nothing when it had no group of its own.
func (p process) killLeftovers() {
	if p.group {
		_ = syscall.Kill(-p.os.Pid, syscall.SIGKILL)
	}
}

// onTerminal reports whether leaselock's stdin, stdout or stderr is its
// controlling terminal. The command must then stay in leaselock's process
// group: job control (Ctrl-Z, fg, bg) treats the two as one job, and the
// command can read the terminal when leaselock is in its foreground.
// Otherwise the command gets a group of its own.
func onTerminal() bool {
	for _, fd := range []int{0, 1, 2} {
		if _, err := unix.IoctlGetInt(fd, unix.TIOCGPGRP); err == nil {
			return true
		}
	}
	return false
}

// inTerminalForeground reports whether leaselock's process group is the
// foreground group of the terminal on its stdin, stdout or stderr.
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
