package resourcelock

// Renew: the refresh of a lock its caller holds, as a long critical
// section needs it.

import (
	"context"
	"errors"
	"fmt"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/leaselock/leaselock/internal/lockmetrics"
)

// Renew extends lockerID's hold on the lock name to a lease duration from
// now, and moves its fencing token (see Token). It sends one Update of the
// Lease as this locker last wrote it, carrying that resourceVersion: no
// read while that version is current. A Lease changed since (a Conflict)
// is read once, and renewed if it is still lockerID's.
//
// It returns an error that wraps ErrNotHeld, at once, when lockerID does
// not hold the lock: this locker has no record of an acquisition by it that
// was not released, or the Lease was deleted or has another holder (an
// expired Lease taken over). Other errors (the server unreachable, a
// cancelled ctx) are returned as they are, without a retry: the lock may
// still be held, until its Lease expires, and the caller renews again.
// Every error names the lock and lockerID. ctx bounds the call.
func (rl *ResourceLocker) Renew(ctx context.Context, name, lockerID string) error {
	if err := rl.check(name, lockerID); err != nil {
		return err
	}
	held, ok := rl.records.heldBy(name, lockerID)
	if !ok || held.lease == nil {
		return rl.notHeld(name, lockerID, "this locker has no record of it")
	}
	err := rl.renew(ctx, held.lease, lockerID)
	result := lockmetrics.Renewed
	switch {
	case errors.Is(err, ErrNotHeld):
		result = lockmetrics.RenewLost
	case err != nil:
		result = lockmetrics.RenewFailed
		err = fmt.Errorf("resourcelock: renew lock %s/%s for %q: %w", rl.namespace, name, lockerID, err)
	}
	rl.metrics.Renewal(name, result)
	return err
}

// renew updates lease, as this locker last wrote it, to run a lease
// duration from now; on a Conflict it reads the Lease, and updates it
// again if it is still lockerID's.
func (rl *ResourceLocker) renew(ctx context.Context, lease *coordinationv1.Lease, lockerID string) error {
	for read := false; ; read = true {
		_, err := rl.leases.claim(ctx, lease, lockerID)
		switch {
		case err == nil:
			return nil
		case apierrors.IsNotFound(err):
			return rl.notHeld(lease.Name, lockerID, "its Lease was deleted")
		case !apierrors.IsConflict(err) || read:
			rl.metrics.APIError(lease.Name, err)
			return err
		}
		rl.metrics.APIError(lease.Name, err)
		current, err := rl.leases.get(ctx, lease.Name)
		switch {
		case err != nil:
			rl.metrics.APIError(lease.Name, err)
			return err
		case current == nil:
			return rl.notHeld(lease.Name, lockerID, "its Lease was deleted")
		case holder(current) != lockerID || current.UID != lease.UID:
			return rl.notHeld(lease.Name, lockerID, fmt.Sprintf("its Lease is held by %q", holder(current)))
		}
		lease = current
	}
}

// notHeld is the error of a renewal of a lock that lockerID does not hold.
func (rl *ResourceLocker) notHeld(name, lockerID, why string) error {
	return fmt.Errorf("%w: lock %s/%s, lockerID %q: %s", ErrNotHeld, rl.namespace, name, lockerID, why)
}
