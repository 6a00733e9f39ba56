package resourcelock

// What a locker remembers of the Leases it wrote and read: the version of
// each Lease it holds, so that a release deletes it without reading it
// first, and when it first saw each Lease another locker holds, for the
// unchanged-for-a-duration rule of expiry.

import (
	"sync"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	"k8s.io/apimachinery/pkg/types"
)

// maxTracked bounds the record of what a locker saw (observed). Dropping
// such an entry delays a takeover (the observation starts again); it
// changes no outcome. The record of the locks a locker holds is no cache:
// at maxTracked entries it drops only those whose Lease has expired, and
// otherwise grows with the locks held at once (see forgetExpired).
const maxTracked = 1024

type version struct {
	uid             types.UID
	resourceVersion string
}

func versionOf(lease *coordinationv1.Lease) version {
	return version{uid: lease.UID, resourceVersion: lease.ResourceVersion}
}

type holding struct{ name, lockerID string }

type acquisition struct {
	version
	// at is the renewTime this locker wrote, read from its clock before the
	// write was sent.
	at time.Time
	// lease is the Lease as the write returned it, which a renewal updates
	// without reading it first.
	lease *coordinationv1.Lease
}

type observation struct {
	version
	since time.Time
}

// records is a locker's memory of Leases; its zero value is not usable,
// build one with newRecords.
type records struct {
	mu sync.Mutex // guards held and observed
	// held is each Lease this locker acquired and has not released.
	held map[holding]acquisition
	// observed is when this locker first saw each Lease that another
	// locker holds, in the version it saw.
	observed map[string]observation
}

func newRecords() *records {
	return &records{held: make(map[holding]acquisition), observed: make(map[string]observation)}
}

// acquired records that lockerID holds lease since at, and drops the
// observation of it. At maxTracked held locks it first drops those whose
// Lease expired (at plus d is past).
func (r *records) acquired(lockerID string, lease *coordinationv1.Lease, at time.Time, d time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.observed, lease.Name)
	k := holding{lease.Name, lockerID}
	if _, ok := r.held[k]; !ok && len(r.held) >= maxTracked {
		r.forgetExpired(at, d)
	}
	r.held[k] = acquisition{version: versionOf(lease), at: at, lease: lease}
}

// forgetExpired drops every held lock whose Lease of duration d has expired
// at now: a lock its caller never released. What the record does for a lock
// still held (a refresh that fails keeps it; a release deletes without a
// read) must not depend on how many others the locker holds. r.mu must be
// held.
func (r *records) forgetExpired(now time.Time, d time.Duration) {
	for k, a := range r.held {
		if now.After(a.at.Add(d)) {
			delete(r.held, k)
		}
	}
}

// heldBy returns what this locker recorded of lockerID's hold on name.
func (r *records) heldBy(name, lockerID string) (acquisition, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	a, ok := r.held[holding{name, lockerID}]
	return a, ok
}

// released forgets lockerID's hold on name, and returns what it was.
func (r *records) released(name, lockerID string) (acquisition, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	k := holding{name, lockerID}
	a, ok := r.held[k]
	delete(r.held, k)
	return a, ok
}

// observe returns when this locker first saw lease in its current version.
func (r *records) observe(lease *coordinationv1.Lease, now time.Time) time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	v := versionOf(lease)
	o, ok := r.observed[lease.Name]
	if ok && o.version == v {
		return o.since
	}
	if !ok && len(r.observed) >= maxTracked {
		dropOne(r.observed)
	}
	r.observed[lease.Name] = observation{version: v, since: now}
	return now
}

func (r *records) forgetObserved(name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.observed, name)
}

func dropOne[K comparable, V any](m map[K]V) {
	for k := range m {
		delete(m, k)
		return
	}
}
