package withlock

// Waits on the locker's clock: a sleep, and a ctx that ends at a time.

import (
	"context"
	"errors"
	"sync"
	"time"

	"k8s.io/utils/clock"
)

// withClockDeadline returns a copy of parent that is cancelled with cause
// when clk reaches at, and a stop function that releases it and reports
// whether that time was reached. stop must be called; it cancels the
// returned ctx.
func withClockDeadline(parent context.Context, clk clock.Clock, at time.Time, cause error) (context.Context, func() (reached bool)) {
	ctx, cancel := context.WithCancelCause(parent)
	d := at.Sub(clk.Now())
	if d <= 0 {
		// A fake clock's timer of d <= 0 would fire only when stepped.
		cancel(cause)
		return ctx, func() bool { return true }
	}
	timer := clk.NewTimer(d)
	var waiting sync.WaitGroup
	// reached is set by the goroutine alone, and read after it ended.
	var reached bool
	waiting.Go(func() {
		select {
		case <-timer.C():
			reached = true
			cancel(cause)
		case <-ctx.Done():
		}
	})
	return ctx, func() bool {
		timer.Stop()
		cancel(nil)
		waiting.Wait()
		return reached
	}
}

// sleep waits d on l's clock, or returns ctx's error when ctx ends first.
func sleep(ctx context.Context, l *Locker, d time.Duration) error {
	t := l.rl.Clock().NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctxErr(ctx)
	case <-t.C():
		return nil
	}
}

// ctxErr is ctx.Err(), and the cause of ctx with it when that is another
// error (ErrLockLost, or a sibling's error under errgroup.WithContext):
// errors.Is sees context.Canceled as well as the cause.
func ctxErr(ctx context.Context) error {
	err := ctx.Err()
	if cause := context.Cause(ctx); cause != err {
		return errors.Join(err, cause)
	}
	return err
}
