package resourcelock

// What an acquisition does when a step goes wrong: a race lost to another
// writer, a request that failed, a Lease that cannot be read; and the
// error a call that gives up returns.

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// raced goes on with next after another writer won a race (AlreadyExists,
// Conflict, NotFound): at once, but not for ever past the deadline. A Lease
// that changes under every write must not hold the caller much longer than
// the retry timeout; a few races in a row are normal (a takeover that meets
// a delete, then a create), even for a try-lock. Past them the call gives
// up with the contract's ErrLockHeld, which wraps the last race.
func (a *acquirer) raced(race error, next step) (step, error) {
	if a.races++; a.races <= maxRaces || a.rl.clock.Now().Before(a.deadline) {
		return next, nil
	}
	held := &HeldError{Namespace: a.rl.namespace, Name: a.name, LockerID: a.lockerID, Waited: a.rl.clock.Since(a.start), race: race}
	if a.lease != nil {
		held.Holder = holder(a.lease)
	}
	return stepGiveUp, held
}

// failed handles an error of a request of the given kind: the call gives
// up on a cancel, on an error a retry cannot mend, and at the deadline;
// otherwise it backs off and reads again. A write that was sent and failed
// without a rejection may have taken effect: giving up then releases the
// Lease.
func (a *acquirer) failed(ctx context.Context, err error, kind sent) (step, error) {
	if kind == sentWrite && (ctx.Err() != nil || !rejected(err) && !unsent(err)) {
		a.uncertain = true
	}
	if ctx.Err() != nil {
		return stepGiveUp, ctx.Err()
	}
	now := a.rl.clock.Now()
	if !transient(err) || !now.Before(a.deadline) {
		return stepGiveUp, err
	}
	if err := a.rl.sleep(ctx, min(a.backoff.Step(), a.deadline.Sub(now))); err != nil {
		return stepGiveUp, err
	}
	return stepRead, nil
}

// readFailed goes on after a read failed for a reason a retry may mend.
// A call that does not hold the lock creates the Lease, after a back-off,
// since the outcome tells whether the lock is free; past the deadline it
// does so once, and that Create's outcome ends the call (see unreadable).
// A read that could not finish then leaves the call at most lastRequest
// past its deadline, holding the lock if it was free. A holder reads again
// (its Create could only fail).
func (a *acquirer) readFailed(ctx context.Context, err error) (step, error) {
	if ctx.Err() != nil || !transient(err) || a.standing != notHolder {
		return a.failed(ctx, err, sentRead)
	}
	a.unread = err
	if now := a.rl.clock.Now(); now.Before(a.deadline) {
		if err := a.rl.sleep(ctx, min(a.backoff.Step(), a.deadline.Sub(now))); err != nil {
			return stepGiveUp, err
		}
	}
	return stepCreate, nil
}

// unreadable goes on after a Create found the Lease that the call could
// not read: it polls until the deadline, and then gives up with a
// HeldError that says why the holder is not known.
func (a *acquirer) unreadable(ctx context.Context) (step, error) {
	now := a.rl.clock.Now()
	if a.firstHeld.IsZero() {
		a.firstHeld = now
	}
	if !now.Before(a.deadline) {
		return stepGiveUp, &HeldError{Namespace: a.rl.namespace, Name: a.name, LockerID: a.lockerID, Waited: now.Sub(a.start), unread: a.unread}
	}
	if err := a.rl.sleep(ctx, a.rl.pollWait(now, time.Time{}, a.deadline)); err != nil {
		return stepGiveUp, err
	}
	return stepRead, nil
}

// named returns err, the reason the call gives up, with the lock, lockerID
// and the holder the call last saw in it. A HeldError names them already.
func (a *acquirer) named(err error) error {
	if _, ok := errors.AsType[*HeldError](err); ok {
		return err
	}
	held := ""
	if a.lease != nil && holder(a.lease) != "" && holder(a.lease) != a.lockerID {
		held = fmt.Sprintf(" (held by %q until %s)", holder(a.lease), formatUntil(a.until))
	}
	return fmt.Errorf("%s: %w%s", acquireOp(a.rl.namespace, a.name, a.lockerID), err, held)
}
