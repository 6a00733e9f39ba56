package main

// The command under the lock: started, waited for, and stopped when the
// lock is lost.

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"syscall"
	"time"

	"k8s.io/utils/clock"
)

// runResult is how the command ended.
type runResult struct {
	// started is set once the command was started.
	started bool
	// code is the command's exit code, 128+N when signal N killed it.
	code int
	// stopped is set when run stopped the command because the lock was
	// lost; killed when it had to send SIGKILL.
	stopped, killed bool
	// startErr is why the command could not be started.
	startErr error
}

func (r runResult) String() string {
	switch {
	case r.killed:
		return fmt.Sprintf("the command was killed after the grace period, exit code %d", r.code)
	case r.stopped:
		return fmt.Sprintf("the command was sent SIGTERM and exited with code %d", r.code)
	}
	return fmt.Sprintf("the command exited with code %d", r.code)
}

// runCommand starts cmd through the relay, which passes signals on to it,
// and waits for it to exit. When ctx ends first (the lock is lost) it sends
// cmd SIGTERM, and SIGKILL after grace on clk; then SIGKILL to what cmd
// started and left. A lock lost, or a wait ended by a signal, before cmd
// could start leaves cmd unstarted.
//
// Unless leaselock runs on a terminal, cmd gets a process group of its own,
// and the signals reach the whole group.
func runCommand(ctx context.Context, r *relay, cmd *exec.Cmd, grace time.Duration, clk clock.Clock) runResult {
	if ctx.Err() != nil {
		return runResult{}
	}
	group := !onTerminal()
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: group}
	setOrphanSignal(cmd)
	command, err := r.start(cmd, group)
	if err != nil {
		if errors.Is(err, errInterrupted) {
			return runResult{}
		}
		return runResult{startErr: err}
	}
	defer r.commandExited()
	res := runResult{started: true}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case err := <-exited:
		res.code = exitCodeOf(err)
		return res
	case <-ctx.Done():
	}
	res.stopped = true
	_ = command.signal(syscall.SIGTERM)
	t := clk.NewTimer(grace)
	defer t.Stop()
	select {
	case err := <-exited:
		res.code = exitCodeOf(err)
	case <-t.C():
		res.killed = true
		_ = command.signal(syscall.SIGKILL)
		res.code = exitCodeOf(<-exited)
	}
	// What the command started must not outlive its lock either.
	command.killLeftovers()
	return res
}

// exitCodeOf returns the exit code of a command whose Wait returned err, as
// a shell gives it: 128+N when signal N killed it.
func exitCodeOf(err error) int {
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		if err != nil {
			// Wait failed without an exit status: the stdio copies are
			// the only other source, and run passes files through.
			return exitCannotRun
		}
		return 0
	}
	if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return exitSignalBase + int(ws.Signal())
	}
	return ee.ExitCode()
}
