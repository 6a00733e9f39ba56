package withlock

// The keeping of a lock while its fn runs: the renewals of its Lease, and
// the end of fn's ctx when the lock is lost, taken, or held for its max
// hold. When to act is schedule.go's.

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/leaselock/leaselock/resourcelock"
)

// renewing counts the renewals in this process that have not yet ended,
// their outcome taken: a test that steps a fake clock waits for none.
var renewing atomic.Int32

// keeper keeps the lock of one WithLock while its fn runs, in a goroutine
// of its own that ends before WithLock releases the lock.
type keeper struct {
	l    *Locker
	held *heldLock
	// endFn cancels fn's ctx with a cause.
	endFn context.CancelCauseFunc
	// stop ends the goroutine; its ctx carries the values of the call's
	// ctx but not its cancellation, so that a lock is renewed while fn
	// runs, even after the caller's ctx ended.
	stop context.CancelFunc
	done sync.WaitGroup

	// Set by keep before the goroutine starts, then by the goroutine
	// alone, and read after it ended.
	plan  plan
	ended ending
	cause error
}

// keep starts the keeping of held, just acquired, and returns fn's ctx,
// derived from ctx, and the keeper. keeper.finish must be called once fn
// returned or panicked.
func (l *Locker) keep(ctx context.Context, held *heldLock) (context.Context, *keeper) {
	k := &keeper{l: l, held: held, plan: plan{hold: l.hold(), written: held.acquired}, ended: endedByFn}
	if l.renewing {
		k.plan.period = renewalPeriod(l.rl.LeaseDuration(), l.hold())
	}
	if l.maxHold > 0 {
		k.plan.capAt = held.acquired.Add(l.maxHold)
	}
	fnCtx, endFn := context.WithCancelCause(context.WithValue(ctx, heldKey{}, held))
	kctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	k.endFn, k.stop = endFn, stop
	if how, end := k.plan.end(); !l.rl.Clock().Now().Before(end) {
		// The acquire took the whole hold: fn starts with its ctx ended.
		k.endHold(how, k.endError(how, nil))
		return fnCtx, k
	}
	// The first timer starts before fn runs, so that a test that steps a
	// fake clock once fn runs finds it there.
	at, renew := k.plan.next(rand.Float64())
	c, stopTimer := k.timer(at)
	k.done.Go(func() { k.run(kctx, renew, c, stopTimer) })
	return fnCtx, k
}

// finish stops the keeping, ends fn's ctx, and returns how the keeping
// ended and the error that ended it (nil when fn returned first).
func (k *keeper) finish() (ending, error) {
	k.stop()
	k.done.Wait()
	k.endFn(nil)
	return k.ended, k.cause
}

// run follows the plan until fn returns (ctx ends) or the hold ends: it
// waits for the timer c, which fires at the next renewal when renew is
// set, else at the end of the hold, and then acts.
func (k *keeper) run(ctx context.Context, renew bool, c <-chan time.Time, stopTimer func() bool) {
	for {
		select {
		case <-ctx.Done():
			stopTimer()
			return
		case <-c:
		}
		now := k.l.rl.Clock().Now()
		if how, end := k.plan.end(); !now.Before(end) {
			k.endHold(how, k.endError(how, nil))
			return
		}
		if renew {
			taken, over := k.renewOnce(ctx, now)
			switch {
			case over:
				how, _ := k.plan.end()
				k.endHold(how, k.endError(how, nil))
				return
			case taken != nil:
				k.endHold(endedTaken, k.endError(endedTaken, taken))
				return
			case ctx.Err() != nil:
				return
			}
		}
		var at time.Time
		at, renew = k.plan.next(rand.Float64())
		c, stopTimer = k.timer(at)
	}
}

// timer starts a timer that fires at at on the locker's clock, and
// returns its channel and its Stop. A timer due already fires at once,
// which a fake clock's does only when it is stepped.
func (k *keeper) timer(at time.Time) (<-chan time.Time, func() bool) {
	clk := k.l.rl.Clock()
	d := at.Sub(clk.Now())
	if d <= 0 {
		now := make(chan time.Time, 1)
		now <- clk.Now()
		return now, func() bool { return false }
	}
	t := clk.NewTimer(d)
	return t.C(), t.Stop
}

// renewOnce renews the lock once, sent at now, and moves its expiry and
// token when that succeeds. It returns the error of a renewal that found
// the lock taken (any other failure is planned to be retried), and reports
// over when the hold ended, on the locker's clock, before the renewal
// answered: fn's ctx ends then, whatever the request does. The renewal is
// then cancelled and waited for, so that none is in flight once the keeper
// ended and the lock is released.
func (k *keeper) renewOnce(ctx context.Context, now time.Time) (taken error, over bool) {
	renewing.Add(1)
	defer renewing.Add(-1) // last: after the timer below is stopped
	rl, h := k.l.rl, k.held
	_, end := k.plan.end()
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	result := make(chan error, 1)
	go func() { result <- rl.Renew(rctx, h.name, h.holder) }()
	ended, stopTimer := k.timer(end)
	defer stopTimer()
	var err error
	select {
	case err = <-result:
	case <-ended:
		cancel()
		<-result
		return nil, true
	}
	switch {
	case errors.Is(err, resourcelock.ErrNotHeld):
		return err, false
	case err != nil:
		k.plan = k.plan.failed(now)
		if ctx.Err() == nil {
			k.l.lockLog(ctx, h).V(1).Info("renewal failed; will retry", "error", err, "expires", k.plan.expiry())
		}
		return nil, false
	}
	written, ok := rl.AcquiredAt(h.name, h.holder)
	if !ok {
		// Renew succeeded, so the locker has a record; now is earlier than
		// the renewal's write should it have none.
		written = now
	}
	token, ok := rl.Token(h.name, h.holder)
	if !ok {
		token = h.fencingToken()
	}
	k.plan = k.plan.renewed(written)
	h.renewed(k.plan.expiry(), token)
	return nil, false
}

// endHold ends fn's ctx with cause, for how.
func (k *keeper) endHold(how ending, cause error) {
	k.ended, k.cause = how, cause
	k.endFn(cause)
}

// endError is the error that says how the hold of k's lock ended: for a
// takeover, renewErr is the renewal's error.
func (k *keeper) endError(how ending, renewErr error) error {
	h := k.held
	since := h.acquired.UTC().Format(time.RFC3339Nano)
	switch how {
	case endedTaken:
		return fmt.Errorf("%w: lock %s/%s held by %s since %s was taken by another holder: %w",
			ErrLockLost, h.namespace, h.name, h.holder, since, renewErr)
	case endedMaxHold:
		return fmt.Errorf("%w: lock %s/%s held by %s since %s, for %s", ErrMaxHold,
			h.namespace, h.name, h.holder, since, k.l.maxHold)
	}
	return h.lostError()
}
