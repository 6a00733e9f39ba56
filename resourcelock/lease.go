package resourcelock

// Lease I/O: the requests that read and write one Lease, and the judgement
// of when a Lease expires. Nothing here waits, retries, or knows of other
// waiters.

import (
	"context"
	"strconv"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

const managedByValue = "leaselock"

// leaseClient reads and writes the Leases of one namespace, and records
// what it wrote and saw in records.
type leaseClient struct {
	client    client.Client
	namespace string
	// duration is written into every Lease, in whole seconds.
	duration time.Duration
	clock    clock.PassiveClock
	records  *records
}

// get reads the Lease; a missing Lease is (nil, nil).
func (lc *leaseClient) get(ctx context.Context, name string) (*coordinationv1.Lease, error) {
	lease := &coordinationv1.Lease{}
	err := lc.client.Get(ctx, client.ObjectKey{Namespace: lc.namespace, Name: name}, lease)
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return lease, nil
}

// create creates the Lease name held by lockerID. handoffs is how many
// handoffs to other waiters the caller waited through, recorded for the next
// waiters (HandoffsAnnotation). Its caller gives it a ctx that outlives its
// own cancellation, as it does claim: see acquirer.writeContext.
func (lc *leaseClient) create(ctx context.Context, name, lockerID string, handoffs int) (*coordinationv1.Lease, error) {
	now := metav1.NewMicroTime(lc.clock.Now())
	lease := &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{
			Name:        name,
			Namespace:   lc.namespace,
			Labels:      map[string]string{ManagedByLabel: managedByValue},
			Annotations: map[string]string{HandoffsAnnotation: strconv.Itoa(handoffs)},
		},
		Spec: coordinationv1.LeaseSpec{
			HolderIdentity:       ptr.To(lockerID),
			LeaseDurationSeconds: ptr.To(int32(lc.duration / time.Second)),
			AcquireTime:          &now,
			RenewTime:            &now,
		},
	}
	if err := lc.client.Create(ctx, lease); err != nil {
		return nil, err
	}
	lc.records.acquired(lockerID, lease, now.Time, lc.duration)
	return lease, nil
}

// claim updates lease, as read, to be held by lockerID: a renewal when it
// holds it already, a takeover otherwise. The update carries the
// resourceVersion read, so a Lease changed since fails with a Conflict.
func (lc *leaseClient) claim(ctx context.Context, lease *coordinationv1.Lease, lockerID string) (*coordinationv1.Lease, error) {
	lease = lease.DeepCopy()
	now := metav1.NewMicroTime(lc.clock.Now())
	spec := &lease.Spec
	if ptr.Deref(spec.HolderIdentity, "") != lockerID {
		spec.HolderIdentity = ptr.To(lockerID)
		spec.AcquireTime = &now
		spec.LeaseTransitions = ptr.To(ptr.Deref(spec.LeaseTransitions, 0) + 1)
	}
	spec.RenewTime = &now
	spec.LeaseDurationSeconds = ptr.To(int32(lc.duration / time.Second))
	if err := lc.client.Update(ctx, lease); err != nil {
		return nil, err
	}
	lc.records.acquired(lockerID, lease, now.Time, lc.duration)
	return lease, nil
}

// delete deletes the Lease name if it is still in version v: the server
// checks both the UID and the resourceVersion, so a Lease that another
// holder took over or created again fails with a Conflict.
func (lc *leaseClient) delete(ctx context.Context, name string, v version) error {
	lease := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: lc.namespace}}
	return lc.client.Delete(ctx, lease, client.Preconditions{UID: &v.uid, ResourceVersion: &v.resourceVersion})
}

// expired reports whether lease is free to take over at now, and when it
// expires if it is not.
func (lc *leaseClient) expired(lease *coordinationv1.Lease, now time.Time) (bool, time.Time) {
	spec := lease.Spec
	if ptr.Deref(spec.HolderIdentity, "") == "" || ptr.Deref(spec.LeaseDurationSeconds, 0) <= 0 {
		lc.records.forgetObserved(lease.Name)
		return true, time.Time{}
	}
	d := time.Duration(*spec.LeaseDurationSeconds) * time.Second
	until := expiresAt(lease)
	if !until.IsZero() && now.After(until) {
		lc.records.forgetObserved(lease.Name)
		return true, until
	}
	// The holder's clock may run ahead of ours, or the Lease has no time at
	// all: it is expired once we have seen it unchanged for a full duration.
	seen := lc.records.observe(lease, now).Add(d)
	if until.IsZero() || seen.Before(until) {
		until = seen
	}
	return !now.Before(seen), until
}

// expiresAt is when lease expires by its own times: its renewTime, else its
// acquireTime, plus its duration; the zero time when it has neither.
func expiresAt(lease *coordinationv1.Lease) time.Time {
	d := time.Duration(ptr.Deref(lease.Spec.LeaseDurationSeconds, 0)) * time.Second
	switch spec := lease.Spec; {
	case spec.RenewTime != nil:
		return spec.RenewTime.Add(d)
	case spec.AcquireTime != nil:
		return spec.AcquireTime.Add(d)
	}
	return time.Time{}
}

// holder returns the Lease's holderIdentity, "" for none.
func holder(lease *coordinationv1.Lease) string {
	return ptr.Deref(lease.Spec.HolderIdentity, "")
}
