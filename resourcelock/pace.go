package resourcelock

// Pacing on the locker's clock: the backoff after a transient error, the
// sleeps and timers every wait of an acquisition or a release uses, and the
// bound of every request they send.

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
)

// lastRequest is how long past its retry deadline a call may run: enough
// for one request of a healthy server, so that a try-lock gets an answer,
// and so does the Create that follows a read that could not finish. No
// request of AcquireLock or ReleaseLock runs past it, whatever the client
// does.
const lastRequest = 2 * time.Second

// bound returns ctx with a deadline at end on the locker's clock (a
// request's context is real time: with a fake clock, end is as far off as
// it is on the fake one).
func (rl *ResourceLocker) bound(ctx context.Context, end time.Time) (context.Context, context.CancelFunc) {
	return context.WithTimeoutCause(ctx, max(end.Sub(rl.clock.Now()), 0), errRequestBound)
}

// detached returns a context with ctx's values that ends at end, or
// lastRequest after ctx is cancelled if that comes first: a request sent
// on it runs to its end when the caller cancels, but not for long.
func (rl *ResourceLocker) detached(ctx context.Context, end time.Time) (context.Context, context.CancelFunc) {
	dctx, cancel := rl.bound(context.WithoutCancel(ctx), end)
	var mu sync.Mutex // guards grace
	var grace *time.Timer
	stop := context.AfterFunc(ctx, func() {
		mu.Lock()
		defer mu.Unlock()
		grace = time.AfterFunc(lastRequest, cancel) // real time: it bounds a request
	})
	return dctx, func() {
		stop()
		mu.Lock()
		if grace != nil {
			grace.Stop()
		}
		mu.Unlock()
		cancel()
	}
}

// ownTimeout returns err, the error of a request sent on rctx (from
// bound), with the end of the call's own bound told apart from the
// caller's deadline: errors.Is must not take the one for the other. Call it
// before rctx is cancelled.
func ownTimeout(rctx context.Context, err error) error {
	if err != nil && errors.Is(err, context.DeadlineExceeded) && errors.Is(context.Cause(rctx), errRequestBound) {
		return fmt.Errorf("%w: %v", errRequestBound, err)
	}
	return err
}

// end is when the call ends whatever its requests do: lastRequest past its
// deadline.
func (a *acquirer) end() time.Time { return a.deadline.Add(lastRequest) }

// readContext bounds a read or the start of a watch. One sent before the
// deadline ends by it, and one sent later by half of lastRequest past it:
// either leaves time for a Create, since a read that cannot finish (from a
// cache that cannot sync, say) must not end the call unanswered.
func (a *acquirer) readContext(ctx context.Context) (context.Context, context.CancelFunc) {
	if end := a.deadline; a.rl.clock.Now().Before(end) {
		return a.rl.bound(ctx, end)
	}
	return a.rl.bound(ctx, a.deadline.Add(lastRequest/2))
}

// writeContext is the context of a Create or Update that may make the
// caller the holder. Once sent, such a write runs to its end even if the
// caller cancels: the client would give up on the request at once, but the
// server may still apply it, after AcquireLock returned, and leave the lock
// held by a caller that was told it failed. So the write is detached from
// the caller's cancellation (not from its values), for lastRequest at
// most, and bounded by the call's end; AcquireLock honours the cancel once
// the outcome is known. It returns errOutOfTime, and the write must not be
// sent, once the call's end has come.
func (a *acquirer) writeContext(ctx context.Context) (context.Context, context.CancelFunc, error) {
	if !a.rl.clock.Now().Before(a.end()) {
		return nil, nil, errOutOfTime
	}
	wctx, cancel := a.rl.detached(ctx, a.end())
	return wctx, cancel, nil
}

// backoff is the pacing of retries after transient errors: firstBackoff,
// doubling with jitter up to the retry interval.
func (rl *ResourceLocker) backoff() wait.Backoff {
	return wait.Backoff{Duration: firstBackoff, Factor: 2, Jitter: 1, Steps: 1 << 30, Cap: rl.retryInterval}
}

// sleep waits d on the locker's clock, or returns ctx.Err() when ctx ends
// first.
func (rl *ResourceLocker) sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := rl.clock.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C():
		return nil
	}
}

// timer starts a timer of d on the locker's clock, and returns its channel
// and its Stop. A timer of d <= 0 fires at once, which a fake clock's does
// only when it is stepped.
func (rl *ResourceLocker) timer(d time.Duration) (<-chan time.Time, func() bool) {
	if d <= 0 {
		now := make(chan time.Time, 1)
		now <- rl.clock.Now()
		return now, func() bool { return false }
	}
	t := rl.clock.NewTimer(d)
	return t.C(), t.Stop
}

// pollWait is how long a waiter sleeps before it reads a held Lease again: the
// retry interval with jitter, cut short by the Lease's expiry and by the
// deadline.
func (rl *ResourceLocker) pollWait(now, until, deadline time.Time) time.Duration {
	d := wait.Jitter(rl.retryInterval, 0.1)
	if !until.IsZero() {
		// A millisecond past the expiry, so that the next read sees it expired.
		d = min(d, until.Sub(now)+time.Millisecond)
	}
	return max(min(d, deadline.Sub(now)), 0)
}
