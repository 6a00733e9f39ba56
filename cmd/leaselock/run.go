package main

// leaselock run: its flags, their checks, and the run from the lock's
// acquire to the exit code.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"
	"k8s.io/utils/clock"

	"github.com/leaselock/leaselock/resourcelock"
	"github.com/leaselock/leaselock/withlock"
)

// forever stands for "until the lock is free": --wait's default.
const forever = 100 * 365 * 24 * time.Hour

// The environment the command gets.
const (
	envName      = "LEASELOCK_NAME"
	envNamespace = "LEASELOCK_NAMESPACE"
	envHolder    = "LEASELOCK_HOLDER"
	envToken     = "LEASELOCK_TOKEN"
)

type runOptions struct {
	name string
	argv []string
	// wait is how long to wait for a held lock; forever unless --wait is
	// given.
	wait time.Duration
	// lease is the Lease's duration.
	lease time.Duration
	// grace is the time between SIGTERM and SIGKILL when the lock is
	// lost.
	grace    time.Duration
	identity string
	clock    clock.Clock
}

func newRunCommand(g *globals) *cobra.Command {
	o := &runOptions{clock: clock.RealClock{}}
	cmd := &cobra.Command{
		Use:   "run NAME [flags] -- COMMAND [ARGS...]",
		Short: "Run a command while holding the lock NAME",
		Long: `Run takes the lock NAME (a Lease of that name in the namespace), runs COMMAND
with its stdin, stdout and stderr, renews the lock while it runs, and releases
the lock when it exits. It exits with the command's exit code.

The command gets LEASELOCK_NAME, LEASELOCK_NAMESPACE, LEASELOCK_HOLDER (the
holder ID in the Lease) and LEASELOCK_TOKEN (the fencing token: store it with
each write to a system outside the cluster, and have that system refuse a
write whose token is smaller than the largest it stored).

SIGINT, SIGTERM and SIGHUP are passed on to the command, except a SIGINT or
SIGHUP that the terminal sent to the command too; the lock is released after
the command exits. While run waits for the lock, such a signal ends the wait.

If the lock is lost while the command runs (its renewals failed until the
lease could expire, or another process took it by force), the command gets
SIGTERM, and SIGKILL after --grace; run then exits with 124.

Exit codes: the command's own (128+N when signal N killed it); 75 when the
lock was still held after --wait; 124 when the lock was lost; 125 when run
itself failed; 126 when the command could not be started; 127 when it was not
found.`,
		Example: `  # Run a migration once, whichever replica gets there first.
  leaselock run db-migration -- ./migrate up

  # Give up at once (exit 75) when another run holds the lock.
  leaselock run nightly-report --wait 0 -- ./report.sh`,
		Args: cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.complete(cmd, args); err != nil {
				return err
			}
			return o.run(cmd.Context(), g)
		},
	}
	f := cmd.Flags()
	f.DurationVar(&o.wait, "wait", forever, "how long to wait for the lock when another holds it; 0 gives up at once")
	f.DurationVar(&o.lease, "lease", resourcelock.DefaultLeaseDuration, "the lease: how long the lock outlives a run that stopped renewing it (at least 1s, in whole seconds)")
	f.DurationVar(&o.grace, "grace", 0, "time between SIGTERM and SIGKILL when the lock is lost, at most half of --lease; the command is told to stop at least this long before its lease could expire (default: a fifth of --lease)")
	f.StringVar(&o.identity, "identity", "", "the first part of the holder ID that the Lease shows (default: $POD_NAME, else the hostname)")
	// Shown in the help instead of forever's hours.
	f.Lookup("wait").DefValue = "until free"
	return cmd
}

// complete reads the arguments and checks every flag, before any request.
func (o *runOptions) complete(cmd *cobra.Command, args []string) error {
	switch dash := cmd.ArgsLenAtDash(); {
	case dash == 0:
		return errors.New("want the lock's NAME before --")
	case dash > 1:
		return fmt.Errorf("one lock name before --, got %d: %q", dash, args[:dash])
	}
	o.name, o.argv = args[0], args[1:]
	if !cmd.Flags().Changed("grace") {
		o.grace = o.lease / 5
	}
	return o.validate()
}

// validate rejects what cannot work, with the flag it comes from.
func (o *runOptions) validate() error {
	if err := resourcelock.ValidateLockName(o.name); err != nil {
		return err
	}
	switch {
	case o.wait < 0:
		return fmt.Errorf("--wait %v: want 0 or more", o.wait)
	case o.lease < time.Second:
		return fmt.Errorf("--lease %v: want at least 1s, a Lease holds whole seconds", o.lease)
	case o.grace < 0:
		return fmt.Errorf("--grace %v: want 0 or more", o.grace)
	case !utf8.ValidString(o.identity):
		return fmt.Errorf("--identity %q: not valid UTF-8", o.identity)
	case o.grace > o.lease/2:
		return fmt.Errorf("--grace %v: want at most half of --lease %v: the command is told to stop --grace before its lease could expire, and a longer grace would leave the renewals no time", o.grace, o.lease)
	}
	return nil
}

// margin is how long before its lease could expire the command is told to
// stop: enough for --grace to run out before another process can take the
// lock, and never less than withlock's default.
func (o *runOptions) margin() time.Duration { return max(o.grace, o.lease/5) }

// run resolves the command, takes the lock, runs the command under it, and
// returns the error whose code the process exits with.
func (o *runOptions) run(ctx context.Context, g *globals) error {
	path, err := lookPath(o.argv[0])
	if err != nil {
		return err
	}
	cfg, ns, err := g.target()
	if err != nil {
		return err
	}
	if err := reach(ctx, cfg); err != nil {
		return err
	}
	log := g.logger()
	locker, err := withlock.NewForConfig(cfg, ns,
		withlock.WithLogger(log),
		withlock.WithIdentity(o.identity),
		withlock.WithSafetyMargin(o.margin()),
		// A run is short: a Lease a run left behind is taken over by the
		// next, and status shows it; unlock removes it.
		withlock.WithLeftoverRemoval(-1),
		withlock.WithResourceLockerOptions(
			resourcelock.WithLeaseDuration(o.lease),
			resourcelock.WithRetryTimeout(o.wait)))
	if err != nil {
		return err
	}
	defer func() { _ = locker.Close() }()

	r, waitCtx := startRelay(ctx)
	defer r.stop()
	log.Info("taking lock", "lock", o.name, "namespace", ns)
	var ran runResult
	err = locker.WithLock(waitCtx, o.name, func(ctx context.Context) error {
		holder, _ := withlock.Holder(ctx)
		token, _ := withlock.Token(ctx)
		cmd := exec.Command(path, o.argv[1:]...)
		cmd.Args[0] = o.argv[0]
		cmd.Stdin, cmd.Stdout, cmd.Stderr = g.streams.In, g.streams.Out, g.streams.ErrOut
		cmd.Env = append(os.Environ(), envName+"="+o.name, envNamespace+"="+ns, envHolder+"="+holder, envToken+"="+token)
		ran = runCommand(ctx, r, cmd, o.grace, o.clock)
		return nil
	})
	return o.exit(ns, ran, r.signalled(), err)
}

// exit returns the error of a run whose command ended as ran, whose wait
// a signal sig ended (0 for none), and whose WithLock returned err: its
// code is the command's, unless the lock was lost or the command never ran.
func (o *runOptions) exit(ns string, ran runResult, sig syscall.Signal, err error) error {
	lock := ns + "/" + o.name
	switch {
	case ran.started && errors.Is(err, withlock.ErrLockLost):
		return withCode(exitLost, fmt.Errorf("lock %s lost while the command ran (%s): %w", lock, ran, err))
	case errors.Is(err, withlock.ErrLockLost):
		return withCode(exitLost, fmt.Errorf("lock %s lost before the command started, which did not run: %w", lock, err))
	case ran.started && err != nil:
		// The command's work is done; the Lease stays until it expires.
		return withCode(ran.code, err)
	case ran.started:
		return withCode(ran.code, nil)
	case ran.startErr != nil:
		return withCode(exitCannotRun, ran.startErr)
	case sig != 0 && err == nil:
		// The signal came after the acquire, before the start.
		return withCode(exitSignalBase+int(sig), fmt.Errorf("interrupted by %s before the command started, which did not run; lock %s released", unix.SignalName(sig), lock))
	case sig != 0:
		// err may say that a Lease stays, after a write the signal cut off.
		return withCode(exitSignalBase+int(sig), fmt.Errorf("interrupted by %s while waiting for lock %s: %w", unix.SignalName(sig), lock, err))
	case errors.Is(err, resourcelock.ErrLockHeld):
		return withCode(exitHeld, err)
	}
	return withCode(exitFailed, err)
}

// lookPath finds the command as a shell would, before the lock is taken:
// a command that cannot run exits 127 or 126 without having held it.
func lookPath(file string) (string, error) {
	path, err := exec.LookPath(file)
	switch {
	case err == nil:
		return path, nil
	case errors.Is(err, exec.ErrNotFound):
		return "", withCode(exitNotFound, err)
	}
	return "", withCode(exitCannotRun, err)
}
