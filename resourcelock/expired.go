package resourcelock

// The removal of Leases that holders left behind: a holder that crashed,
// or whose release failed, leaves its Lease until the name is locked
// again, which for per-object names may be never.

import (
	"context"
	"errors"
	"fmt"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// removePage is how many Leases RemoveExpired lists at a time.
const removePage = 500

// RemoveExpired deletes the Leases of this locker's namespace that carry
// ManagedByLabel and expired more than age ago on this locker's clock (by
// their renewTime, else acquireTime, else creation, plus their duration).
// Each Delete carries the UID and resourceVersion listed, as a takeover and
// a release do, so a Lease renewed or taken over since is left alone. It
// returns how many it deleted.
//
// It lists through the locker's client, which should read from the API
// server: a manager's GetClient() would start an informer of every Lease
// in the cluster (withlock's NewForCluster gives its locker a client of its
// own). It needs list and delete on Leases in the namespace. age is a margin for
// clocks that disagree, and must not be negative; a Lease whose holder's
// clock runs more than age behind this one's could be removed while held.
func (rl *ResourceLocker) RemoveExpired(ctx context.Context, age time.Duration) (int, error) {
	switch {
	case rl == nil:
		return 0, errNilLocker
	case rl.client == nil:
		return 0, errNilClient
	case rl.err != nil:
		return 0, rl.err
	case age < 0:
		return 0, fmt.Errorf("resourcelock: remove expired Leases: invalid age %v: must not be negative", age)
	}
	removed := 0
	var errs []error
	page := ""
	for {
		var list coordinationv1.LeaseList
		err := rl.client.List(ctx, &list, client.InNamespace(rl.namespace),
			client.MatchingLabels{ManagedByLabel: managedByValue}, client.Limit(removePage), client.Continue(page))
		if err != nil {
			errs = append(errs, fmt.Errorf("resourcelock: remove expired Leases in %s: list: %w", rl.namespace, err))
			break
		}
		now := rl.clock.Now()
		for i := range list.Items {
			lease := &list.Items[i]
			if !now.After(expiry(lease).Add(age)) {
				continue
			}
			err := rl.leases.delete(ctx, lease.Name, versionOf(lease))
			switch {
			case err == nil:
				removed++
			case apierrors.IsNotFound(err), apierrors.IsConflict(err):
				// Released, renewed or taken over since the list.
			default:
				errs = append(errs, fmt.Errorf("resourcelock: remove expired Lease %s/%s: %w", rl.namespace, lease.Name, err))
			}
		}
		if page = list.Continue; page == "" || ctx.Err() != nil {
			break
		}
	}
	return removed, errors.Join(errs...)
}

// expiry is when lease expired or expires by its own times (expiresAt),
// or by its creation plus its duration when it has none.
func expiry(lease *coordinationv1.Lease) time.Time {
	if at := expiresAt(lease); !at.IsZero() {
		return at
	}
	return lease.CreationTimestamp.Add(time.Duration(ptr.Deref(lease.Spec.LeaseDurationSeconds, 0)) * time.Second)
}
