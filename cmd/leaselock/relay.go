package main

// The signals sent to leaselock: they end the wait for the lock, and once
// the command runs they are passed on to it.

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"os/signal"
	"sync"
	"syscall"
)

// relayed are the signals the relay takes from the default action (which
// would end leaselock and leave its lock held until it expires).
var relayed = []os.Signal{syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP}

// notIgnored returns the relayed signals that leaselock's process does not
// ignore: one that nohup, or a shell for a background job, made leaselock
// ignore stays ignored, by leaselock and by the command.
func notIgnored() []os.Signal {
	var sigs []os.Signal
	for _, s := range relayed {
		if !signal.Ignored(s) {
			sigs = append(sigs, s)
		}
	}
	return sigs
}

// errInterrupted is the cause of the relay's ctx when a signal ended the
// wait for the lock.
var errInterrupted = errors.New("interrupted by a signal")

// relayState is where the run is: what a signal does.
type relayState int

const (
	// waiting: for the lock; a signal ends the wait.
	waiting relayState = iota
	// interrupted: a signal ended the wait; the command will not start.
	interrupted
	// running: the command runs; signals are passed on to it.
	running
	// ended: the command exited; the lock is being released, and signals
	// are ignored (the release is bounded).
	ended
)

// relay takes the signals of leaselock's process until stop.
type relay struct {
	signals chan os.Signal
	cancel  context.CancelCauseFunc
	// done is closed when the goroutine that reads signals has returned.
	done chan struct{}

	mu    sync.Mutex // guards the fields below
	state relayState
	// sig is the signal that interrupted the wait.
	sig syscall.Signal
	// command is the command's process, while it runs.
	command process
}

// startRelay takes the relayed signals, and returns the relay and a ctx
// that the first signal ends while the run waits for its lock.
func startRelay(parent context.Context) (*relay, context.Context) {
	ctx, cancel := context.WithCancelCause(parent)
	r := &relay{signals: make(chan os.Signal, 4), cancel: cancel, done: make(chan struct{})}
	if sigs := notIgnored(); len(sigs) > 0 {
		signal.Notify(r.signals, sigs...)
	}
	go r.loop()
	return r, ctx
}

func (r *relay) loop() {
	defer close(r.done)
	for s := range r.signals {
		r.handle(s.(syscall.Signal))
	}
}

// handle acts on one signal, as the run's state says.
func (r *relay) handle(sig syscall.Signal) {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch r.state {
	case waiting:
		r.state, r.sig = interrupted, sig
		r.cancel(errInterrupted)
	case running:
		// A command in leaselock's process group got the terminal's
		// signals already; one in a group of its own did not.
		if r.command.group || !sentToCommandToo(sig) {
			_ = r.command.signal(sig)
		}
	}
}

// start starts cmd unless a signal ended the wait (errInterrupted), and
// returns its process; from then on signals are passed on to it, and to its
// process group when group is set (cmd must then have one of its own).
func (r *relay) start(cmd *exec.Cmd, group bool) (process, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.state == interrupted {
		return process{}, errInterrupted
	}
	if err := cmd.Start(); err != nil {
		return process{}, err
	}
	r.state, r.command = running, process{os: cmd.Process, group: group}
	return r.command, nil
}

// commandExited records that the command exited.
func (r *relay) commandExited() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.state, r.command = ended, process{}
}

// signalled returns the signal that ended the wait for the lock, or 0.
func (r *relay) signalled() syscall.Signal {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.sig
}

// stop gives the signals back to their default action, and ends the
// relay's goroutine.
func (r *relay) stop() {
	signal.Stop(r.signals)
	close(r.signals)
	<-r.done
	r.cancel(nil)
}
