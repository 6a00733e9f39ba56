package resourcelock

import (
	"context"
	"math/rand/v2"
	"strconv"
	"sync"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
)

// WatchLinger is how long a locker keeps the watch of a Lease open after
// its last waiter left, so that a replica that takes the same lock again and
// again does not open a watch for every acquisition. It is real time, not
// the locker's clock: it bounds a connection's life, it judges no lease.
const WatchLinger = time.Second

const (

	// minGap and maxGap bound the gap between the head starts of waiters
	// that have waited a different number of handoffs; see herdDelay.
	minGap   = time.Millisecond
	firstGap = 2 * time.Millisecond
	maxGap   = 10 * time.Millisecond

	// headTie is the tie-break of a call whose Creates have not collided;
	// see tieWindow.
	headTie = minGap / 4

	// maxSpread bounds the tie-break of a waiter in a cohort bigger than
	// the queue its watch knows; see herdDelay.
	maxSpread = 32 * time.Millisecond

	// minSyncWait is the least time a watch-list is given to send the
	// Lease before the locker gives up on watch-lists; see syncWatch.
	minSyncWait = 250 * time.Millisecond

	// watchListRecheck is how long a locker that gave up on watch-lists
	// reads before it asks for one again: a watch-list answered late (the
	// server queued it, or had a slow second) says little of the next, and
	// a server that refuses them costs one refused request per recheck.
	watchListRecheck = 5 * time.Minute

	// maxConfirm bounds how long a releaser waits for its watch to show its
	// own deletion before it starts its head start; see herdDelay.
	maxConfirm = 50 * time.Millisecond
)

// leaseWatch follows one Lease through a watch, for every waiter of one
// locker: they wake when it changes instead of polling it.
type leaseWatch struct {
	rl   *ResourceLocker
	name string
	// ctx carries the values of the call that opened the watch, not its
	// cancellation: the watch outlives that call.
	ctx context.Context

	mu sync.Mutex
	// w is the watch whose events apply; cancel ends its request.
	w      watch.Interface
	cancel context.CancelFunc
	// next cancels the plain watch that unlist is sending; replay holds
	// meanwhile the resourceVersions of the changes the watch-list sent,
	// which the plain watch sends again.
	next   context.CancelFunc
	replay []string
	// list is set while w is a watch-list (see syncWatch), whose events
	// the server may compress one by one; see unlist.
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
	// deletedAt is when lease became nil, in real time.
	deletedAt time.Time
	// changed is closed, and replaced, whenever lease changes or the watch
	// ends.
	changed chan struct{}
	// refs counts the AcquireLock calls using the watch; at zero it lingers.
	refs   int
	linger *time.Timer
	// rounds is the handoffs the last winner waited, read from its Lease.
	rounds int
	herd
}

// herd is what a watch learns about the waiters of its Lease, to tune
// herdDelay; a watch that closes leaves it to the next one (see
// ResourceLocker.herds).
type herd struct {
	gap time.Duration
	// queue estimates how many lockers take turns at the Lease: one more
	// than the most handoffs a recent winner waited. queueAge counts the
	// Leases seen since; after twice queue of them the estimate starts again
	// from the last winner, so lockers that left stop counting.
	queue, queueAge int
	// ended is when the watch that learned this closed.
	ended time.Time
}

// contendedFor is how long after its watch closed a Lease that lockers took
// turns at counts as contended: the next acquire of it watches before it
// creates (see ResourceLocker.contended).
const contendedFor = time.Minute

// contended reports whether other lockers took turns at the Lease name with
// this one shortly before: replicas that reconcile the same events ask again
// together, and all but one of their Creates would fail. Such an acquire
// watches the Lease first, and creates it only when the watch shows it
// absent, after a random delay that lets one of them go first.
func (rl *ResourceLocker) contended(name string) bool {
	if rl.watchable() == nil || rl.watchListsOff() || rl.retryTimeout <= 0 {
		return false
	}
	rl.mu.Lock()
	defer rl.mu.Unlock()
	h, ok := rl.herds[name]
	return ok && h.queue > 1 && time.Since(h.ended) < contendedFor
}

// watchable returns the client to watch Leases with, or nil.
func (rl *ResourceLocker) watchable() client.WithWatch {
	if rl.noWatch || rl.closed.Load() {
		return nil
	}
	if rl.watcher != nil {
		return rl.watcher
	}
	w, _ := rl.client.(client.WithWatch)
	return w
}

// existingWatch returns the healthy watch of name, with a reference the
// caller must drop, or nil.
func (rl *ResourceLocker) existingWatch(name string) *leaseWatch {
	rl.mu.Lock()
	defer rl.mu.Unlock()
	lw := rl.watches[name]
	if lw == nil {
		return nil
	}
	lw.mu.Lock()
	defer lw.mu.Unlock()
	if !lw.healthy {
		return nil
	}
	lw.hold()
	return lw
}

// openWatch starts watching lease, from the version in which it was read so
// that no change after that read is missed, and returns the watch with a
// reference the caller must drop. It returns nil when the client cannot
// watch or the watch fails to start: the caller polls.
func (rl *ResourceLocker) openWatch(ctx context.Context, lease *coordinationv1.Lease) *leaseWatch {
	wc := rl.watchable()
	if wc == nil {
		return nil
	}
	if lw := rl.existingWatch(lease.Name); lw != nil {
		return lw
	}
	lw, err := rl.startWatch(ctx, wc, lease.Name, lease, &metav1.ListOptions{ResourceVersion: lease.ResourceVersion})
	if err != nil {
		return nil
	}
	return rl.register(lw)
}

// syncWatch starts watching the Lease name as it is now: the server sends
// the Lease first, then a bookmark (a watch-list, the WatchList feature), so
// a caller that lost a Create learns the holder without reading the Lease.
// It returns the watch, with a reference the caller must drop, once the
// watch has shown the Lease or its absence. It returns nil when the client
// cannot watch or the watch fails; the caller then reads the Lease. A server
// that refuses a watch-list (other than for a transient error), or a client
// that does not answer one within the retry interval or minSyncWait,
// whichever is longer (controller-runtime's fake client ignores it), is not
// asked again by this locker for watchListRecheck.
func (rl *ResourceLocker) syncWatch(ctx context.Context, name string) *leaseWatch {
	wc := rl.watchable()
	if wc == nil || rl.watchListsOff() {
		return nil
	}
	if lw := rl.existingWatch(name); lw != nil {
		return lw
	}
	lw, err := rl.startWatch(ctx, wc, name, nil, &metav1.ListOptions{
		SendInitialEvents:    ptr.To(true),
		ResourceVersionMatch: metav1.ResourceVersionMatchNotOlderThan,
	})
	if err != nil {
		// A cancelled call says nothing of what the server serves.
		if ctx.Err() == nil && !transient(err) {
			rl.noWatchLists(ctx, err)
		}
		return nil
	}
	timeout := time.NewTimer(max(rl.retryInterval, minSyncWait))
	defer timeout.Stop()
	for {
		s := lw.state()
		if !s.healthy {
			return nil
		}
		if s.synced {
			return rl.register(lw)
		}
		select {
		case <-ctx.Done():
			lw.end()
			return nil
		case <-timeout.C:
			rl.noWatchLists(ctx, errWatchListUnanswered)
			lw.end()
			return nil
		case <-s.changed:
		}
	}
}

// noWatchLists turns watch-lists off for the locker for watchListRecheck,
// and logs why the first time.
func (rl *ResourceLocker) noWatchLists(ctx context.Context, why error) {
	rl.watchListsOffUntil.Store(rl.clock.Now().Add(watchListRecheck).UnixNano())
	if !rl.watchListsOffLogged.Swap(true) {
		logf.FromContext(ctx).V(1).Info("watch-lists not served: waiters read the Lease before they watch it, and ask again every "+watchListRecheck.String(),
			"namespace", rl.namespace, "reason", why.Error())
	}
}

// watchListsOff reports whether the locker gave up on watch-lists less
// than watchListRecheck ago.
func (rl *ResourceLocker) watchListsOff() bool {
	until := rl.watchListsOffUntil.Load()
	return until != 0 && rl.clock.Now().UnixNano() < until
}

// startWatch sends the watch of the Lease name with the given options, on
// top of a field selector on the name and bookmarks, and starts following
// it. lease is the Lease as known before the watch starts, nil when the
// watch will send it; the watch is synced when lease is given.
func (rl *ResourceLocker) startWatch(ctx context.Context, wc client.WithWatch, name string, lease *coordinationv1.Lease, raw *metav1.ListOptions) (*leaseWatch, error) {
	// The watch outlives the call that opens it, so it must not end with
	// that call's ctx; but the call does not wait for the server to answer
	// past its ctx either (a server that queues requests may take long).
	callCtx := ctx
	ctx = context.WithoutCancel(ctx)
	wctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(callCtx, cancel)
	w, err := rl.watch(wctx, wc, name, raw)
	if !stop() {
		// The call ended while the watch was being opened, and cancelled it.
		if err == nil {
			w.Stop()
		}
		cancel()
		return nil, callCtx.Err()
	}
	if err != nil {
		cancel()
		return nil, err
	}
	lw := &leaseWatch{
		rl: rl, name: name, ctx: ctx, w: w, cancel: cancel, list: ptr.Deref(raw.SendInitialEvents, false),
		lease: lease, synced: lease != nil, healthy: true, changed: make(chan struct{}),
		refs: 1, herd: herd{gap: firstGap},
	}
	if lease == nil {
		// Lockers that watch a Lease they will find absent are likely to
		// have asked together: their head starts count from now.
		lw.deletedAt = time.Now()
	}
	rl.mu.Lock()
	if h, ok := rl.herds[name]; ok {
		lw.herd = h
	}
	rl.mu.Unlock()
	go lw.pump(w)
	return lw, nil
}

// watch sends the watch of the Lease name with the given options, on top of
// a field selector on the name and bookmarks.
func (rl *ResourceLocker) watch(ctx context.Context, wc client.WithWatch, name string, raw *metav1.ListOptions) (watch.Interface, error) {
	raw.AllowWatchBookmarks = true
	w, err := wc.Watch(ctx, &coordinationv1.LeaseList{}, &client.ListOptions{
		Namespace:     rl.namespace,
		FieldSelector: fields.OneTermEqualSelector("metadata.name", name),
		Raw:           raw,
	})
	if err != nil {
		if ctx.Err() == nil {
			rl.metrics.APIError(name, err)
		}
		return nil, err
	}
	return w, nil
}

// register makes lw the watch of its Lease for the locker's other callers,
// unless another call registered one meanwhile: then lw closes and the
// caller gets a reference to the other, or nil if that one has ended. A
// watch that ended before it was registered (its connection dropped) is not:
// its end could not forget it, and nothing else would. Nor is one of a
// closed locker: it closes, and the caller gets nil.
func (rl *ResourceLocker) register(lw *leaseWatch) *leaseWatch {
	rl.mu.Lock()
	if rl.closed.Load() {
		// Close ran while lw was being opened.
		rl.mu.Unlock()
		lw.discard()
		return nil
	}
	if rl.watches[lw.name] == nil {
		lw.mu.Lock()
		healthy := lw.healthy
		if healthy {
			rl.watches[lw.name] = lw
		}
		lw.mu.Unlock()
		rl.mu.Unlock()
		if !healthy {
			return nil
		}
		return lw
	}
	rl.mu.Unlock()
	lw.discard()
	return rl.existingWatch(lw.name)
}

// deleted tells the watch of name, if any, that this locker deleted the
// Lease with uid, before the watch shows it: the locker's next acquire of
// name need not wait for the event. If the watch has already moved past that
// Lease (another holder created the next one), it is left alone: a stale
// "deleted" would send the next acquire into a Create that must fail.
func (rl *ResourceLocker) deleted(name string, uid types.UID) {
	rl.mu.Lock()
	lw := rl.watches[name]
	rl.mu.Unlock()
	if lw == nil {
		return
	}
	lw.mu.Lock()
	defer lw.mu.Unlock()
	if lw.lease != nil && lw.lease.UID == uid {
		lw.update(nil)
		lw.unconfirmed = true
	}
}

// pump applies the events of w until it ends or a plain watch replaces it
// (see unlist). A watch that ends on its own ends lw.
func (lw *leaseWatch) pump(w watch.Interface) {
	defer w.Stop()
	for ev := range w.ResultChan() {
		if !lw.apply(w, ev) {
			break
		}
	}
	lw.mu.Lock()
	current := lw.w == w
	lw.mu.Unlock()
	if current {
		lw.end()
	}
}

// apply applies one event of w, and reports false when w should stop: an
// error event, or w is no longer the watch whose events apply.
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
	if ok && ev.Type != watch.Bookmark && lease.Name == lw.name {
		switch {
		case lw.next != nil: // the plain watch will send it again
			lw.replay = append(lw.replay, lease.ResourceVersion)
		case len(lw.replay) > 0 && lw.replay[0] == lease.ResourceVersion:
			lw.replay = lw.replay[1:]
			return true // the watch-list sent it
		default:
			lw.replay = nil
		}
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

// unlist replaces a watch-list with a plain watch of the Lease from the last
// version it sent, once a second AcquireLock call takes up the watch: the
// lock is busy, and the watch will likely stay open for many changes. A
// server that compresses responses compresses each event of a watch-list on
// its own (the WatchListCompression feature, for any client that accepts
// gzip, as Go's transport does by default): for events of a few hundred
// bytes that costs CPU on both ends for every change, where the plain watch
// costs one request, once.
//
// The watch-list goes on until the plain watch is open, so waiters never
// see an older Lease than they would have. The plain watch sends again the
// changes since rv that the watch-list sent meanwhile; apply skips them. If
// the plain watch fails, the watch-list stays.
func (lw *leaseWatch) unlist() {
	wc := lw.rl.watchable()
	lw.mu.Lock()
	if !lw.healthy || wc == nil { // ended, or the locker closed
		lw.mu.Unlock()
		return
	}
	rv := lw.rv
	ctx, cancel := context.WithCancel(lw.ctx)
	lw.next, lw.replay = cancel, nil
	lw.mu.Unlock()

	w, err := lw.rl.watch(ctx, wc, lw.name, &metav1.ListOptions{ResourceVersion: rv})

	lw.mu.Lock()
	lw.next = nil
	if err != nil || !lw.healthy {
		lw.replay = nil
		lw.mu.Unlock()
		cancel()
		if err == nil {
			w.Stop()
		}
		return
	}
	old, oldCancel := lw.w, lw.cancel
	lw.w, lw.cancel = w, cancel
	lw.mu.Unlock()
	old.Stop()
	oldCancel()
	go lw.pump(w)
}

// end marks the watch dead and forgets it, so the next waiter opens another,
// which starts from what this one learned of the herd. It runs once: the
// pump of a watch ended from outside sees its stream stop, and calls end
// again, which then does nothing (its record of the herd would overwrite a
// newer watch's).
func (lw *leaseWatch) end() { lw.stop(true) }

// discard ends a watch that lost the race to register: it served no
// waiter, so it leaves the herd's record to the watch that won.
func (lw *leaseWatch) discard() { lw.stop(false) }

// stop ends the watch, and records what it learned of the herd when record
// is set.
//
// It forgets the watch and marks it dead in one critical section under
// both locks, as register looks: otherwise register could find it still
// healthy after stop found it not yet registered, and keep a dead watch
// that nothing would forget. It stops the streams after it lets go of the
// locks: a stream's pump takes lw.mu as it ends.
func (lw *leaseWatch) stop(record bool) {
	rl := lw.rl
	rl.mu.Lock()
	lw.mu.Lock()
	if !lw.healthy {
		lw.mu.Unlock()
		rl.mu.Unlock()
		return
	}
	lw.healthy = false
	lw.wake()
	if rl.watches[lw.name] == lw {
		delete(rl.watches, lw.name)
	}
	if record {
		h := lw.herd
		h.ended = time.Now()
		if _, ok := rl.herds[lw.name]; !ok && len(rl.herds) >= maxTracked {
			dropOne(rl.herds)
		}
		rl.herds[lw.name] = h
	}
	next, w, cancel := lw.next, lw.w, lw.cancel
	lw.mu.Unlock()
	rl.mu.Unlock()
	if next != nil {
		next()
	}
	w.Stop()
	cancel()
}

// set records the Lease as now known (nil: deleted) and wakes the waiters.
func (lw *leaseWatch) set(lease *coordinationv1.Lease) {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	lw.update(lease)
}

// update is set with lw.mu held.
func (lw *leaseWatch) update(lease *coordinationv1.Lease) {
	lw.lease, lw.unconfirmed = lease, false
	lw.seq++
	if lease == nil {
		lw.deletedAt = time.Now()
	} else {
		if n, err := strconv.Atoi(lease.Annotations[HandoffsAnnotation]); err == nil {
			lw.rounds = n
			if lw.queueAge++; n+1 >= lw.queue || lw.queueAge > 2*lw.queue {
				lw.queue, lw.queueAge = n+1, 0
			}
		}
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

// hold adds a reference; lw.mu must be held. A watch-list that was
// lingering is replaced by a plain watch (see unlist).
func (lw *leaseWatch) hold() {
	if lw.refs == 0 && lw.list && lw.synced && lw.rv != "" {
		lw.list = false
		go lw.unlist()
	}
	lw.refs++
	if lw.linger != nil {
		lw.linger.Stop()
		lw.linger = nil
	}
}

// busy replaces a watch-list with a plain watch (see unlist) at once, for
// a waiter that will see many changes before its turn.
func (lw *leaseWatch) busy() {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	if lw.list && lw.synced && lw.rv != "" {
		lw.list = false
		go lw.unlist()
	}
}

// drop removes the caller's reference; the last one starts the linger,
// after which the watch closes.
func (lw *leaseWatch) drop() {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	lw.refs--
	if lw.refs > 0 || !lw.healthy {
		return
	}
	lw.linger = time.AfterFunc(WatchLinger, func() {
		// Forget the watch in the same critical section that finds it idle,
		// so that no acquire takes it up (existingWatch) between the two.
		rl := lw.rl
		rl.mu.Lock()
		lw.mu.Lock()
		idle := lw.refs == 0
		if idle && rl.watches[lw.name] == lw {
			delete(rl.watches, lw.name)
		}
		lw.mu.Unlock()
		rl.mu.Unlock()
		if idle {
			lw.end()
		}
	})
}

// herdDelay returns how long (in real time: it paces requests, it judges no
// lease) a waiter that has seen lost handoffs go to others waits before it
// creates a Lease it saw deleted.
//
// Every waiter saw the deletion at about the same moment. The first whose
// delay ends creates the Lease; the others see it arrive on the watch during
// their own delay and go on waiting, instead of sending a Create that would
// fail. The longest waiter should go first: the delay is one gap for every
// handoff fewer than rounds that the waiter has seen, plus a random tie-break
// (tieWindow). rounds is the number of handoffs this locker's last winning
// acquisition waited, which in a steady queue is the number of other waiters,
// so the head of the queue goes at once and each waiter behind it a gap
// later. Every winner records its count on the Lease it creates
// (HandoffsAnnotation), so all waiters share the same rounds. The gap grows
// when a Create collides (two waiters went together) and shrinks when one
// wins cleanly, to fit how fast the watch shows a new Lease. See headStart
// and tieWindow.
//
// A waiter tied with a cohort that the queue estimate does not cover (every
// winner so far waited as many handoffs as the queue was known to hold, as
// when many replicas asked together for the first time) cannot count its
// peers. Its tie-break is spread, which the caller widens from how long its
// Creates that failed took (see acquirer.widen), but at most rounds gaps: a
// locker that asks again after its turn waits that long, and must not go
// before the cohort. herdDelay reports whether the waiter is in such a
// cohort.
func (lw *leaseWatch) herdDelay(lost, collisions int, spread time.Duration) (time.Duration, bool) {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	tie := tieWindow(lw.gap, collisions, peers(lost, lw.rounds, lw.queue))
	cohort := tied(lost, lw.rounds) && lw.queue <= lw.rounds+1
	if cohort {
		tie = max(tie, min(spread, time.Duration(lw.rounds)*lw.gap))
	}
	return headStart(lw.rounds-lost, lw.gap, tie, time.Since(lw.deletedAt)), cohort
}

// tieWindow is the random part of a head start: headTie for a call whose
// Creates have not collided, doubling with each collision up to the least
// gap, and half a gap more for each peer (see peers). Waiters a gap apart
// need no tie-break, and the head of the queue should not wait for one; a
// wider gap (fewer Creates that collide) must not slow it down, so its
// tie-break does not grow with the gap. Waiters that collided are tied with
// others and spread out. Peers cannot be ordered at all: spread over half a
// gap each, the first of them to go is usually alone, and the others see
// its Lease before their own delay ends.
func tieWindow(gap time.Duration, collisions, peers int) time.Duration {
	return headTie<<min(collisions, 2) + time.Duration(peers)*gap/2
}

// peers estimates how many other waiters are tied with one that lost lost
// handoffs. Lockers that asked together, as replicas do that all saw the
// same event, lose every handoff together, so handoffs waited cannot order
// them. The last winner of such a cohort had waited rounds handoffs, so
// rounds+1 of a cohort as big as the queue have had their turn, and
// queue-2-rounds others still wait. Its peers have lost one handoff more
// than it had, or, when it waited none (the first of the cohort, whose
// Create came first), none either: they arrived while it held the lock. A
// waiter that lost any other count has no known peers: the head of a queue
// served in order has lost as many as the last winner, who had waited.
func peers(lost, rounds, queue int) int {
	if !tied(lost, rounds) {
		return 0
	}
	return max(queue-2-rounds, 0)
}

// tied reports whether a waiter that lost lost handoffs, when the last
// winner had waited rounds, is tied with a cohort; see peers.
func tied(lost, rounds int) bool {
	return lost == rounds+1 || lost == 0 && rounds == 0
}

// headStart is the delay of a waiter with ahead handoffs fewer than the
// last winner waited, seen after the deletion, with a random tie-break of up
// to tie. The head start counts from the deletion, not from the call: a
// waiter that arrives when the Lease has long been gone, after the waiters
// that saw it go had their turn, creates it at once.
//
// A waiter that has lost two handoffs or more beyond the last winner's count
// (ahead < -1) was passed over: a waiter that arrived after it went first.
// It goes at once, without a tie-break, so that it does not lose to the
// heads that come after it; a tie-break widened by its own collisions would
// make it lose again and again.
func headStart(ahead int, gap, tie, seen time.Duration) time.Duration {
	if ahead < -1 {
		return 0
	}
	d := time.Duration(max(ahead, 0))*gap + time.Duration(rand.Int64N(int64(tie)+1))
	return max(d-seen, 0)
}

// collided widens the gap after this locker's delayed Create lost a race.
func (lw *leaseWatch) collided() {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	lw.gap = min(lw.gap*3/2, maxGap)
}

// won narrows the gap after a delayed Create that won. It narrows by far
// less than a collision widens it, so the gap settles where about one
// delayed Create in fifteen collides (1.5^p x 0.97^(1-p) = 1): the head of
// the queue almost always goes first, so a wide gap costs a handoff only
// when it does not, while a gap narrower than the time a new Lease takes
// to reach the others makes the next waiter send a Create that fails.
func (lw *leaseWatch) won() {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	lw.gap = max(lw.gap*97/100, minGap)
}
