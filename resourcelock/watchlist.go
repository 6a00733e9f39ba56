package resourcelock

// Watch-lists: a watch that sends the Lease first (the WatchList feature),
// so that a waiter learns the holder without reading the Lease, and the
// locker's memory of a server or client that does not serve them.

import (
	"context"
	"time"

	"github.com/go-logr/logr"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

// watchListRecheck is how long a locker that gave up on watch-lists
// reads before it asks for one again: a watch-list answered late (the
// server queued it, or had a slow second) says little of the next, and
// a server that refuses them costs one refused request per recheck.
const watchListRecheck = 5 * time.Minute

// contended reports whether other lockers took turns at the Lease name with
// this one shortly before (see herd.contended), where the registry can
// watch it first with a watch-list.
func (reg *watchRegistry) contended(name string) bool {
	if !reg.enabled() || reg.listsOff() {
		return false
	}
	reg.mu.Lock()
	defer reg.mu.Unlock()
	h, ok := reg.herds[name]
	return ok && h.contended(reg.clock.Now())
}

// sync starts watching the Lease name as it is now: the server sends the
// Lease first, then a bookmark (a watch-list, the WatchList feature), so a
// caller learns the holder without reading the Lease. It returns the watch,
// with a reference the caller must drop, once the watch has shown the Lease
// or its absence. It returns nil when the client cannot watch or the watch
// fails; the caller then reads the Lease. A server that refuses a
// watch-list (other than for a transient error), or a client that does not
// answer one within syncWait (controller-runtime's fake client ignores it),
// is not asked again for watchListRecheck.
func (reg *watchRegistry) sync(ctx context.Context, name string) *leaseWatch {
	if !reg.enabled() || reg.listsOff() {
		return nil
	}
	if lw := reg.existing(name); lw != nil {
		return lw
	}
	lw, err := reg.start(ctx, name, nil, &metav1.ListOptions{
		SendInitialEvents:    ptr.To(true),
		ResourceVersionMatch: metav1.ResourceVersionMatchNotOlderThan,
	})
	if err != nil {
		// A cancelled call says nothing of what the server serves.
		if ctx.Err() == nil && !transient(err) {
			reg.noWatchLists(logFor(ctx, reg.log), err)
			if apierrors.IsForbidden(err) { // the watch verb is not granted
				reg.noWatches(logFor(ctx, reg.log), err)
			}
		}
		return nil
	}
	// Real time, like WatchLinger: it bounds a request.
	timeout := time.NewTimer(reg.syncWait)
	defer timeout.Stop()
	for {
		s := lw.state()
		if !s.healthy {
			return nil
		}
		if s.synced {
			return reg.register(lw)
		}
		select {
		case <-ctx.Done():
			reg.end(lw, false) // it served no waiter: the herd's record stays
			return nil
		case <-timeout.C:
			reg.noWatchLists(logFor(ctx, reg.log), errWatchListUnanswered)
			reg.end(lw, false)
			return nil
		case <-s.changed:
		}
	}
}

// noWatchLists turns watch-lists off for watchListRecheck, and logs why the
// first time.
func (reg *watchRegistry) noWatchLists(log logr.Logger, why error) {
	if reg.lists.refused(reg.clock.Now(), watchListRecheck) {
		log.V(1).Info("watch-lists not served: waiters read the Lease before they watch it, and ask again every "+watchListRecheck.String(),
			"namespace", reg.namespace, "reason", why.Error())
	}
}

// listsOff reports whether the registry gave up on watch-lists less than
// watchListRecheck ago.
func (reg *watchRegistry) listsOff() bool {
	return reg.lists.active(reg.clock.Now())
}
