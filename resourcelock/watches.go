package resourcelock

// The shared-watch registry: one watch per Lease name for all the callers
// of a locker, with reference counts, a linger after the last caller, and
// what a closed watch learned of its herd, for the next one. Watch-lists,
// which send the Lease first, are watchlist.go's.
//
// Lock order: watchRegistry.mu, then leaseWatch.mu. Nothing that stops a
// stream or cancels a request runs under either.

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/leaselock/leaselock/internal/lockmetrics"
)

// WatchLinger is how long a locker keeps the watch of a Lease open after
// its last waiter left, so that a replica that takes the same lock again and
// again does not open a watch for every acquisition. It is real time, not
// the locker's clock: it bounds a connection's life, it judges no lease,
// and a fake clock that never moves must not keep connections open.
const WatchLinger = time.Second

// minSyncWait is the least time a watch-list is given to send the Lease
// before the locker gives up on watch-lists; see watchRegistry.sync.
const minSyncWait = 250 * time.Millisecond

// watchRegistry keeps the open watches of one locker's Leases.
type watchRegistry struct {
	// client watches; nil when the locker does not watch.
	client    client.WithWatch
	namespace string
	clock     clock.Clock
	// syncWait is how long a watch-list is given to send the Lease.
	syncWait time.Duration
	metrics  *lockmetrics.Set
	// log is the locker's logger, for calls whose ctx carries none.
	log logr.Logger

	// lists remembers a watch-list that the server rejected, or the
	// client ignored; watches, a watch the server refused (the watch verb
	// not granted, say). Either is not asked for again for a while.
	lists, watches refusal
	// pollLogged is set once a call was told that waiters poll.
	pollLogged atomic.Bool

	mu sync.Mutex // guards open, herds and closed
	// open is the watch of each Lease that callers wait on, or that
	// lingers after them.
	open map[string]*entry
	// herds keeps what a closed watch of each Lease learned about its
	// waiters, for the next watch of it.
	herds  map[string]herd
	closed bool
}

// entry is one open watch and its users.
type entry struct {
	lw *leaseWatch
	// refs counts the AcquireLock calls using the watch; at zero it
	// lingers, and linger ends it.
	refs   int
	linger *time.Timer
}

func newWatchRegistry(wc client.WithWatch, namespace string, c clock.Clock, retryInterval time.Duration, m *lockmetrics.Set, log logr.Logger) *watchRegistry {
	return &watchRegistry{
		client: wc, namespace: namespace, clock: c, syncWait: max(retryInterval, minSyncWait), metrics: m, log: log,
		open: make(map[string]*entry), herds: make(map[string]herd),
	}
}

// enabled reports whether callers may open watches.
func (reg *watchRegistry) enabled() bool {
	if reg.client == nil || reg.watches.active(reg.clock.Now()) {
		return false
	}
	reg.mu.Lock()
	defer reg.mu.Unlock()
	return !reg.closed
}

// existing returns the healthy watch of name, with a reference the caller
// must drop, or nil. A watch-list that was lingering is replaced by a plain
// watch (see unlist): a second call takes it up, so the Lease is busy.
func (reg *watchRegistry) existing(name string) *leaseWatch {
	reg.mu.Lock()
	defer reg.mu.Unlock()
	e := reg.open[name]
	if e == nil || !e.lw.isHealthy() {
		return nil
	}
	if e.refs == 0 && e.lw.unlistable() {
		go reg.unlist(e.lw)
	}
	e.refs++
	if e.linger != nil {
		e.linger.Stop()
		e.linger = nil
	}
	return e.lw
}

// watch starts watching lease, from the version in which it was read so
// that no change after that read is missed, and returns the watch with a
// reference the caller must drop. It returns nil when the client cannot
// watch or the watch fails to start: the caller polls.
func (reg *watchRegistry) watch(ctx context.Context, lease *coordinationv1.Lease) *leaseWatch {
	if !reg.enabled() {
		return nil
	}
	if lw := reg.existing(lease.Name); lw != nil {
		return lw
	}
	lw, err := reg.start(ctx, lease.Name, lease, &metav1.ListOptions{ResourceVersion: lease.ResourceVersion})
	if err != nil {
		// A cancelled call says nothing of what the server serves.
		if ctx.Err() == nil && !transient(err) {
			reg.noWatches(logFor(ctx, reg.log), err)
		}
		return nil
	}
	return reg.register(lw)
}

// start sends the watch of the Lease name with the given options and starts
// following it; lease is the Lease as known before the watch starts, nil
// when the watch will send it.
func (reg *watchRegistry) start(ctx context.Context, name string, lease *coordinationv1.Lease, raw *metav1.ListOptions) (*leaseWatch, error) {
	// The watch outlives the call that opens it, so it must not end with
	// that call's ctx; but the call does not wait for the server to answer
	// past its ctx either (a server that queues requests may take long).
	callCtx := ctx
	ctx = context.WithoutCancel(ctx)
	wctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(callCtx, cancel)
	w, err := reg.send(wctx, name, raw)
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
	reg.mu.Lock()
	h, ok := reg.herds[name]
	reg.mu.Unlock()
	if !ok {
		h = newHerd()
	}
	lw := newLeaseWatch(ctx, reg.clock, name, streams{w: w, cancel: cancel}, ptr.Deref(raw.SendInitialEvents, false), lease, h)
	go reg.stream(lw, w)
	return lw, nil
}

// send sends the watch of the Lease name with the given options, on top of
// a field selector on the name and bookmarks.
func (reg *watchRegistry) send(ctx context.Context, name string, raw *metav1.ListOptions) (watch.Interface, error) {
	raw.AllowWatchBookmarks = true
	w, err := reg.client.Watch(ctx, &coordinationv1.LeaseList{}, &client.ListOptions{
		Namespace:     reg.namespace,
		FieldSelector: fields.OneTermEqualSelector("metadata.name", name),
		Raw:           raw,
	})
	if err != nil {
		if ctx.Err() == nil {
			reg.metrics.APIError(name, err)
		}
		return nil, err
	}
	return w, nil
}

// stream applies the events of w to lw, and ends lw when w ends on its own.
func (reg *watchRegistry) stream(lw *leaseWatch, w watch.Interface) {
	if lw.pump(w) {
		reg.end(lw, true)
	}
}

// register makes lw the watch of its Lease for the locker's other callers,
// unless another call registered one meanwhile: then lw ends and the caller
// gets a reference to the other, or nil if that one has ended. A watch that
// ended before it was registered (its connection dropped) is not: its end
// could not forget it, and nothing else would. Nor is one of a closed
// registry: it ends, and the caller gets nil.
func (reg *watchRegistry) register(lw *leaseWatch) *leaseWatch {
	reg.mu.Lock()
	switch {
	case reg.closed || reg.open[lw.name] != nil:
		// Close ran while lw was being opened, or another call won. lw
		// served no waiter: it leaves the herd's record alone.
		closed := reg.closed
		s, _, _ := lw.kill()
		reg.mu.Unlock()
		if s.w != nil {
			s.stop()
		}
		if closed {
			return nil
		}
		return reg.existing(lw.name)
	case !lw.isHealthy():
		reg.mu.Unlock()
		return nil
	}
	reg.open[lw.name] = &entry{lw: lw, refs: 1}
	reg.mu.Unlock()
	return lw
}

// drop removes a caller's reference to lw; the last one starts the linger,
// after which the watch ends.
func (reg *watchRegistry) drop(lw *leaseWatch) {
	reg.mu.Lock()
	defer reg.mu.Unlock()
	e := reg.open[lw.name]
	if e == nil || e.lw != lw {
		return // it ended
	}
	if e.refs--; e.refs > 0 {
		return
	}
	e.linger = time.AfterFunc(WatchLinger, func() {
		// End it in the same critical section that finds it idle, so that
		// no acquire takes it up (existing) between the two.
		reg.mu.Lock()
		var s streams
		if reg.open[lw.name] == e && e.refs == 0 {
			s = reg.endLocked(lw, true)
		}
		reg.mu.Unlock()
		if s.w != nil {
			s.stop()
		}
	})
}

// busy replaces a watch-list with a plain watch at once (see unlist), for a
// waiter that will see many changes before its turn.
func (reg *watchRegistry) busy(lw *leaseWatch) {
	if lw.unlistable() {
		go reg.unlist(lw)
	}
}

// unlist replaces a watch-list with a plain watch of the Lease from the last
// version it sent: the lock is busy, and the watch will likely stay open for
// many changes. A server that compresses responses compresses each event of
// a watch-list on its own (the WatchListCompression feature, for any client
// that accepts gzip, as Go's transport does by default): for events of a
// few hundred bytes that costs CPU on both ends for every change, where the
// plain watch costs one request, once.
//
// The watch-list goes on until the plain watch is open, so waiters never
// see an older Lease than they would have. The plain watch sends again the
// changes the watch-list sent meanwhile; the watch skips them. If the plain
// watch fails, the watch-list stays.
func (reg *watchRegistry) unlist(lw *leaseWatch) {
	if !reg.enabled() {
		return
	}
	rv, ctx, cancel, ok := lw.replacing()
	if !ok {
		return
	}
	w, err := reg.send(ctx, lw.name, &metav1.ListOptions{ResourceVersion: rv})
	if err != nil {
		w = nil
	}
	old, ok := lw.replace(streams{w: w, cancel: cancel})
	if !ok {
		cancel()
		if w != nil {
			w.Stop()
		}
		return
	}
	old.stop()
	go reg.stream(lw, w)
}

// deleted tells the watch of name, if any, that this locker deleted the
// Lease with uid, before the watch shows it: the locker's next acquire of
// name need not wait for the event.
func (reg *watchRegistry) deleted(name string, uid types.UID) {
	reg.mu.Lock()
	e := reg.open[name]
	reg.mu.Unlock()
	if e != nil {
		e.lw.deletedBy(uid)
	}
}

// end ends lw, and records what it learned of the herd when record is set.
// It runs once: the pump of a watch ended from outside sees its stream stop
// and calls end again, which then does nothing (its record would overwrite
// a newer watch's).
func (reg *watchRegistry) end(lw *leaseWatch, record bool) {
	reg.mu.Lock()
	s := reg.endLocked(lw, record)
	reg.mu.Unlock()
	if s.w != nil {
		s.stop()
	}
}

// endLocked forgets lw and marks it dead in one critical section under both
// locks, as register looks: otherwise register could find it still healthy
// after end found it not yet registered, and keep a dead watch that nothing
// would forget. It returns the streams to stop once reg.mu is let go.
func (reg *watchRegistry) endLocked(lw *leaseWatch, record bool) streams {
	s, h, ok := lw.kill()
	if !ok {
		return streams{}
	}
	if e := reg.open[lw.name]; e != nil && e.lw == lw {
		if e.linger != nil {
			e.linger.Stop()
		}
		delete(reg.open, lw.name)
	}
	if record {
		h.ended = reg.clock.Now()
		if _, ok := reg.herds[lw.name]; !ok && len(reg.herds) >= maxTracked {
			dropOne(reg.herds)
		}
		reg.herds[lw.name] = h
	}
	return s
}

// close ends every watch and opens no more.
func (reg *watchRegistry) close() {
	reg.mu.Lock()
	reg.closed = true
	var open []streams
	for _, e := range reg.open {
		if s := reg.endLocked(e.lw, true); s.w != nil {
			open = append(open, s)
		}
	}
	reg.mu.Unlock()
	for _, s := range open {
		s.stop()
	}
}
