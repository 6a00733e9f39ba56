package main

// The exit codes: part of the command's interface, listed in the README's
// "The leaselock command".

import (
	"errors"
	"fmt"
)

const (
	// exitError is any failure of status or unlock, as kubectl exits.
	exitError = 1
	// exitHeld: run gave up, the lock was still held by another holder
	// after --wait. EX_TEMPFAIL of sysexits.h, as flock-like tools exit:
	// try again later.
	exitHeld = 75
	// exitLost: run lost its lock while the command ran, and stopped the
	// command. 124, as timeout(1) exits when it had to stop its command.
	exitLost = 124
	// exitFailed: run failed before its command could run (a bad flag, no
	// connection, a forbidden request), as env(1), timeout(1) and docker run
	// exit.
	exitFailed = 125
	// exitCannotRun: the command was found but could not be started.
	exitCannotRun = 126
	// exitNotFound: the command was not found.
	exitNotFound = 127
	// exitSignalBase plus a signal's number is the code of a command that
	// a signal killed, as shells report it, and of a run that a signal
	// interrupted while it waited for its lock.
	exitSignalBase = 128
)

// codedError is an error with the code the process exits with; err is
// printed unless it is nil.
type codedError struct {
	code int
	err  error
}

func (e *codedError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit status %d", e.code)
	}
	return e.err.Error()
}

func (e *codedError) Unwrap() error { return e.err }

// withCode returns err with code, or nil for a nil err and code 0.
func withCode(code int, err error) error {
	if err == nil && code == 0 {
		return nil
	}
	return &codedError{code: code, err: err}
}

// exitCode returns the code to exit with after err, which a command of
// failCode returned: its own code when it has one, else failCode.
func exitCode(err error, failCode int) int {
	if err == nil {
		return 0
	}
	var ce *codedError
	if errors.As(err, &ce) {
		return ce.code
	}
	return failCode
}

// silent reports whether err has nothing to print: nil, or the exit code
// of a command passed through.
func silent(err error) bool {
	var ce *codedError
	return err == nil || errors.As(err, &ce) && ce.err == nil
}
