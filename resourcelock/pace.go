package resourcelock

// Pacing on the locker's clock: the backoff after a transient error, the
// sleeps and timers every wait of an acquisition or a release uses, and the
// bound of every request they send.

import (
	"context"
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
	return context.WithTimeout(ctx, max(end.Sub(rl.clock.Now()), 0))
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
