package resourcelock

// One Lease watch: the stream of events of one Lease, and what it last
// showed. The registry (watches.go) opens, shares and ends it.

import (
	"context"
	"strconv"
	"sync"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/utils/clock"
)

// leaseWatch follows one Lease through a watch, for every waiter of one
// locker: they wake when it changes instead of polling it.
type leaseWatch struct {
	name string
	// ctx carries the values of the call that opened the watch, not its
	// cancellation: the watch outlives that call.
	ctx   context.Context
	clock clock.PassiveClock

	mu sync.Mutex // guards every field below
	// w is the stream whose events apply; cancel ends its request.
	streams
	// replay holds, while a plain watch replaces a watch-list (streams.next
	// is set), the resourceVersions of the changes the watch-list sent,
	// which the plain watch sends again.
	replay []string
	// list is set while w is a watch-list, whose events the server may
	// compress one by one; see watchRegistry.unlist.
	list bool
	// rv is the resourceVersion of the last event w sent.
	rv string
	// lease is the Lease as last seen, nil once it was deleted.
	lease *coordinationv1.Lease
	// seq counts the changes of lease, so a waiter can tell whether the
	// watch has seen something since it last looked.
	seq uint64
	// synced is set once lease is the Lease as the server has it; a watch
	// that sends the Lease first is not synced until it has.
	synced bool
	// healthy is false once the watch ended; waiters then poll.
	healthy bool
	// unconfirmed is set while lease is nil because this locker deleted it
	// and the watch has not shown the deletion yet.
	unconfirmed bool
	// deletedAt is when lease became nil.
	deletedAt time.Time
	// changed is closed, and replaced, whenever lease changes or the watch
	// ends.
	changed chan struct{}
	// rounds is the handoffs the last winner waited, read from its Lease.
	rounds int
	herd
}

// streams are the requests of a watch: w and its cancel, and next, which
// cancels the plain watch being opened to replace w.
type streams struct {
	w      watch.Interface
	cancel context.CancelFunc
	next   context.CancelFunc
}

// stop ends the requests. It must not run under leaseWatch.mu: a stream's
// pump takes it as it ends.
func (s streams) stop() {
	if s.next != nil {
		s.next()
	}
	s.w.Stop()
	s.cancel()
}

// newLeaseWatch follows the stream w. lease is the Lease as known before
// the stream starts, nil when the stream will send it first (a watch-list);
// the watch is synced when lease is given. h is what an earlier watch of the
// Lease learned.
func newLeaseWatch(ctx context.Context, c clock.PassiveClock, name string, s streams, list bool, lease *coordinationv1.Lease, h herd) *leaseWatch {
	lw := &leaseWatch{
		name: name, ctx: ctx, clock: c, streams: s, list: list,
		lease: lease, synced: lease != nil, healthy: true, changed: make(chan struct{}), herd: h,
	}
	if lease == nil {
		// Lockers that watch a Lease they will find absent are likely to
		// have asked together: their head starts count from now.
		lw.deletedAt = c.Now()
	}
	return lw
}

// pump applies the events of w until it ends, or until w is no longer the
// stream whose events apply (see watchRegistry.unlist). It reports whether
// w was still that stream: then the watch ended with it.
func (lw *leaseWatch) pump(w watch.Interface) bool {
	defer w.Stop()
	for ev := range w.ResultChan() {
		if !lw.apply(w, ev) {
			break
		}
	}
	lw.mu.Lock()
	defer lw.mu.Unlock()
	return lw.w == w
}

// apply applies one event of w, and reports false when w should stop: an
// error event, or w is no longer the stream whose events apply.
func (lw *leaseWatch) apply(w watch.Interface, ev watch.Event) bool {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	if lw.w != w || ev.Type == watch.Error {
		return false
	}
	lease, ok := ev.Object.(*coordinationv1.Lease)
	if ok && lease.ResourceVersion != "" {
		lw.rv = lease.ResourceVersion
	}
	if ok && ev.Type != watch.Bookmark && lease.Name == lw.name && lw.replayed(lease.ResourceVersion) {
		return true
	}
	switch {
	case ev.Type == watch.Bookmark:
		if ok && lease.Annotations[metav1.InitialEventsAnnotationKey] == "true" {
			lw.synced = true
			lw.wake()
		}
	case !ok || lease.Name != lw.name:
		// Not ours (a client that ignores the field selector), or
		// progress only.
	case ev.Type == watch.Deleted:
		lw.update(nil)
	default:
		lw.update(lease)
	}
	return true
}

// replayed keeps count of the changes that a plain watch replacing a
// watch-list sends again, and reports whether the change in version rv is
// one of them, already applied. lw.mu must be held.
func (lw *leaseWatch) replayed(rv string) bool {
	switch {
	case lw.next != nil: // the plain watch will send it again
		lw.replay = append(lw.replay, rv)
	case len(lw.replay) > 0 && lw.replay[0] == rv:
		lw.replay = lw.replay[1:]
		return true
	default:
		lw.replay = nil
	}
	return false
}

// set records the Lease as now known (nil: deleted) and wakes the waiters.
func (lw *leaseWatch) set(lease *coordinationv1.Lease) {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	lw.update(lease)
}

// deletedBy tells the watch that this locker deleted the Lease with uid,
// before the watch shows it. If the watch has already moved past that Lease
// (another holder created the next one), it is left alone: a stale
// "deleted" would send the next acquire into a Create that must fail.
func (lw *leaseWatch) deletedBy(uid types.UID) {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	if lw.lease != nil && lw.lease.UID == uid {
		lw.update(nil)
		lw.unconfirmed = true
	}
}

// update is set with lw.mu held.
func (lw *leaseWatch) update(lease *coordinationv1.Lease) {
	lw.lease, lw.unconfirmed = lease, false
	lw.seq++
	if lease == nil {
		lw.deletedAt = lw.clock.Now()
	} else if n, err := strconv.Atoi(lease.Annotations[HandoffsAnnotation]); err == nil {
		lw.rounds = n
		lw.sawWinner(n)
	}
	lw.wake()
}

// wake wakes the waiters; lw.mu must be held.
func (lw *leaseWatch) wake() {
	close(lw.changed)
	lw.changed = make(chan struct{})
}

// watchState is what a leaseWatch knows at one moment.
type watchState struct {
	lease       *coordinationv1.Lease
	seq         uint64
	synced      bool
	healthy     bool
	unconfirmed bool
	changed     <-chan struct{}
}

// state returns what the watch knows now, with a channel closed at the next
// change.
func (lw *leaseWatch) state() watchState {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	return watchState{lw.lease, lw.seq, lw.synced, lw.healthy, lw.unconfirmed, lw.changed}
}

// kill marks the watch dead and wakes its waiters. It returns the streams
// to stop, once the caller let go of its locks, and what the watch learned
// of the herd; false if the watch was dead already.
func (lw *leaseWatch) kill() (streams, herd, bool) {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	if !lw.healthy {
		return streams{}, herd{}, false
	}
	lw.healthy = false
	lw.wake()
	return lw.streams, lw.herd, true
}

// isHealthy reports whether the watch still follows its Lease.
func (lw *leaseWatch) isHealthy() bool {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	return lw.healthy
}

// unlistable reports, once, that the watch is a synced watch-list, which a
// plain watch from its last version can replace.
func (lw *leaseWatch) unlistable() bool {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	if !lw.list || !lw.synced || lw.rv == "" {
		return false
	}
	lw.list = false
	return true
}

// replacing starts replacing the stream: it returns the version to watch
// from and the context of the new request, whose cancel stops it, or false
// when the watch has ended. The changes the old stream sends meanwhile are
// kept for replayed.
func (lw *leaseWatch) replacing() (string, context.Context, context.CancelFunc, bool) {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	if !lw.healthy {
		return "", nil, nil, false
	}
	ctx, cancel := context.WithCancel(lw.ctx)
	lw.next, lw.replay = cancel, nil
	return lw.rv, ctx, cancel, true
}

// replace makes s the stream whose events apply, and returns the old one to
// stop; if opening s failed (s.w is nil) or the watch has ended meanwhile,
// it keeps the old stream and reports false.
func (lw *leaseWatch) replace(s streams) (streams, bool) {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	lw.next = nil
	if s.w == nil || !lw.healthy {
		lw.replay = nil
		return streams{}, false
	}
	old := lw.streams
	old.next = nil
	lw.streams = s
	return old, true
}

// headStart returns the head start of a waiter in place t at the deletion
// the watch shows; see herd.delayFor.
func (lw *leaseWatch) headStart(t turns) (time.Duration, bool) {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	return lw.delayFor(lw.rounds, t, lw.clock.Since(lw.deletedAt))
}

// collided widens the gap after this locker's delayed Create lost a race.
func (lw *leaseWatch) collided() {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	lw.herd.collided()
}

// won narrows the gap after this locker's delayed Create won.
func (lw *leaseWatch) won() {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	lw.herd.won()
}
