package resourcelock

// ReleaseLock's loop, and the release of a Lease that a failed AcquireLock
// may have won.

import (
	"context"
	"errors"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
)

// release deletes the Lease name if lockerID holds it. It deletes the
// version this locker recorded at once; without a record, or when the Lease
// changed since, it reads the Lease and decides again.
func (rl *ResourceLocker) release(ctx context.Context, name, lockerID string) error {
	a, known := rl.records.released(name, lockerID)
	v := a.version
	log := logFor(ctx, rl.log).WithValues("lock", name, "namespace", rl.namespace, "holder", lockerID)
	deadline := rl.clock.Now().Add(rl.retryTimeout)
	// No request runs past the call's end (see lastRequest).
	ctx, cancel := rl.bound(ctx, deadline.Add(lastRequest))
	defer cancel()
	backoff := rl.backoff()
	for {
		var err error
		if !known {
			lease, gerr := rl.leases.get(ctx, name)
			err = gerr
			switch {
			case err != nil:
				rl.metrics.APIError(name, err)
			case lease == nil:
				return nil
			case holder(lease) != lockerID:
				if holder(lease) != "" && !a.at.IsZero() {
					rl.metrics.ReleaseTakenOver(name)
					log.Info("lock was taken over before release", "holderNow", holder(lease))
				}
				return nil
			default:
				v, known = versionOf(lease), true
			}
		}
		if known {
			err = rl.leases.delete(ctx, name, v)
			switch {
			case err == nil:
				rl.watches.deleted(name, v.uid)
				if !a.at.IsZero() {
					rl.metrics.Hold(name, rl.clock.Since(a.at))
				}
				log.V(1).Info("released lock")
				return nil
			case apierrors.IsNotFound(err):
				return nil
			case apierrors.IsConflict(err):
				// The Lease changed since lockerID acquired it: read it and
				// decide again.
				rl.metrics.APIError(name, err)
				known = false
				continue
			}
			rl.metrics.APIError(name, err)
		}
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		now := rl.clock.Now()
		if ctx.Err() == nil && transient(err) && now.Before(deadline) {
			err = rl.sleep(ctx, min(backoff.Step(), deadline.Sub(now)))
		}
		if err != nil {
			return fmt.Errorf("%s: %w", releaseOp(rl.namespace, name, lockerID), ownTimeout(ctx, err))
		}
	}
}

// giveUp ends a failed AcquireLock. When a write may have made lockerID the
// holder without the call seeing it, it releases the Lease on a context of
// its own, so the caller's cancellation does not leak the lock, and within
// the call's end, so that a server that does not answer does not hold the
// caller: the Lease then stays until it expires, and the error says so.
func (a *acquirer) giveUp(ctx context.Context, err error) error {
	if !a.uncertain {
		return err
	}
	rctx, cancel := a.rl.detached(ctx, a.end())
	defer cancel()
	if rerr := a.rl.release(rctx, a.name, a.lockerID); rerr != nil {
		return errors.Join(err, fmt.Errorf("%w; a write of this call may have taken the lock, which then stays until its Lease expires", rerr))
	}
	return err
}
