package resourcelock

// Pacing on the locker's clock: the backoff after a transient error, and
// the sleeps and timers every wait of an acquisition or a release uses.

import (
	"context"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
)

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
