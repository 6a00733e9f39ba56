package resourcelock

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apivalidation "k8s.io/apimachinery/pkg/api/validation"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/leaselock/leaselock/internal/lockmetrics"
	"github.com/leaselock/leaselock/internal/nilness"
)

// ManagedByLabel marks the Leases this package creates, so that
// `kubectl get lease -l app.kubernetes.io/managed-by=leaselock` lists them.
const ManagedByLabel = "app.kubernetes.io/managed-by"

// HandoffsAnnotation records, on a Lease this package creates, how many
// handoffs to other holders its holder waited through. Waiters read it to
// order themselves: the longest waiter creates the next Lease first.
const HandoffsAnnotation = "leaselock.io/handoffs-waited"

const (
	managedByValue = "leaselock"

	// detachedTimeout bounds a request AcquireLock sends on a context
	// detached from the caller's cancellation: a write already sent (see
	// writeContext), and the release when it gives up after a write whose
	// outcome it could not see.
	detachedTimeout = 5 * time.Second

	// maxTracked bounds the maps a locker keeps of what it saw (observed,
	// herds). Dropping such an entry costs a request or delays a takeover
	// (the observation starts again); it changes no outcome. The record of
	// the locks a locker holds is no cache: at maxTracked entries it drops
	// only those whose Lease has expired, and otherwise grows with the
	// locks held at once (see forgetExpired).
	maxTracked = 1024

	// maxRaces is how many races in a row AcquireLock resolves past its
	// deadline before it gives up with the last one.
	maxRaces = 4

	// firstBackoff is the first wait after a transient server error; it
	// doubles, with jitter, up to the retry interval.
	firstBackoff = 20 * time.Millisecond
)

// ResourceLocker acquires and releases distributed locks backed by Kubernetes
// Lease resources. Each lock is a single Lease object in the configured
// namespace. The locker creates the Lease on acquire and deletes it on
// release, so no Lease resources linger after normal operation.
//
// A ResourceLocker is safe for concurrent use. The zero value is not usable:
// its methods return an error; build one with NewResourceLocker.
type ResourceLocker struct {
	client        client.Client
	namespace     string
	leaseDuration time.Duration
	retryInterval time.Duration
	retryTimeout  time.Duration
	clock         clock.Clock
	metrics       *lockmetrics.Set
	registerer    prometheus.Registerer
	byName        bool
	// err is the reason the arguments to NewResourceLocker cannot work; every
	// call returns it before sending a request.
	err error

	mu sync.Mutex
	// held remembers each Lease this locker acquired, so that a release
	// deletes it without reading it first.
	held map[holding]acquisition
	// watches follow the Leases this locker's callers wait for.
	watches map[string]*leaseWatch
	// herds keeps what a closed watch of each Lease learned about its
	// waiters, for the next watch of it: replicas that reconcile events
	// seconds apart ask together again, after the watch closed.
	herds map[string]herd
	// watcher is the client to watch with, when set by WithWatchClient;
	// noWatch turns watching off.
	watcher client.WithWatch
	noWatch bool
	// watchListsOffUntil is when, in UnixNano on the locker's clock, the
	// locker asks for a watch that sends the Lease first again after the
	// server rejected, or the client ignored, one (see syncWatch); 0 while
	// none was. watchListsOffLogged is set once that was logged.
	watchListsOffUntil  atomic.Int64
	watchListsOffLogged atomic.Bool
	// closed is set by Close, under mu: the locker opens no more watches.
	closed atomic.Bool

	// observed remembers when this locker first saw each Lease that another
	// locker holds, in the version it saw, for the unchanged-for-a-duration
	// rule.
	observed map[string]observation
}

type holding struct{ name, lockerID string }

type version struct {
	uid             types.UID
	resourceVersion string
}

type acquisition struct {
	version
	// at is the renewTime this locker wrote, read from its clock before the
	// write was sent.
	at time.Time
}

type observation struct {
	version
	since time.Time
}

// NewResourceLocker creates a ResourceLocker that manages Lease resources in
// the given namespace. Configure behaviour with functional options; the
// defaults are tuned for short-lived locks that protect a single API call.
//
// A nil client or an invalid namespace is not reported here (the signature
// has no error) but by every AcquireLock and ReleaseLock call, before any
// request is sent.
func NewResourceLocker(c client.Client, namespace string, opts ...Option) *ResourceLocker {
	rl := &ResourceLocker{
		client:        c,
		namespace:     namespace,
		leaseDuration: DefaultLeaseDuration,
		retryInterval: DefaultRetryInterval,
		retryTimeout:  DefaultRetryTimeout,
		clock:         clock.RealClock{},
		registerer:    metrics.Registry,
		held:          make(map[holding]acquisition),
		observed:      make(map[string]observation),
		watches:       make(map[string]*leaseWatch),
		herds:         make(map[string]herd),
	}
	for _, opt := range opts {
		if opt != nil {
			opt(rl)
		}
	}
	rl.metrics = lockmetrics.For(rl.registerer, rl.byName)
	switch {
	case nilness.Is(c):
		rl.err = errNilClient
	default:
		rl.err = validateNamespace(namespace)
	}
	return rl
}

// Namespace returns the namespace that holds this locker's Leases: "" for
// a nil or zero-value locker, whose calls return an error.
func (rl *ResourceLocker) Namespace() string {
	if rl == nil {
		return ""
	}
	return rl.namespace
}

// LeaseDuration returns the duration written into each Lease this locker
// acquires, after rounding: 0 for a nil or zero-value locker, whose calls
// return an error.
func (rl *ResourceLocker) LeaseDuration() time.Duration {
	if rl == nil {
		return 0
	}
	return rl.leaseDuration
}

// Clock returns the clock that judges expiry: the real clock for a nil or
// zero-value locker, whose calls return an error.
func (rl *ResourceLocker) Clock() clock.Clock {
	if rl == nil || rl.clock == nil {
		return clock.RealClock{}
	}
	return rl.clock
}

// AcquiredAt returns the renewTime that lockerID's last successful
// AcquireLock of name wrote, on this locker's clock, while the lock is not
// yet released. Other lockers see the Lease expire no earlier than this time
// plus LeaseDuration (as far as their clocks agree with this one). It reports
// false when this locker has no record of the acquisition, and for a nil
// locker.
func (rl *ResourceLocker) AcquiredAt(name, lockerID string) (time.Time, bool) {
	if rl == nil {
		return time.Time{}, false
	}
	rl.mu.Lock()
	defer rl.mu.Unlock()
	a, ok := rl.held[holding{name, lockerID}]
	return a.at, ok
}

var _ io.Closer = (*ResourceLocker)(nil)

// Close ends the watches the locker keeps open and opens no more: calls
// waiting on a watch, and every later call, poll the Lease at the retry
// interval instead. Locks stay held, and AcquireLock and ReleaseLock go on
// working. Close is safe while calls are in flight and more than once; it
// returns nil, and an error only to be an io.Closer. Close a locker that
// is no longer used: otherwise its watches end only WatchLinger after the
// last call that used them.
func (rl *ResourceLocker) Close() error {
	if rl == nil {
		return nil
	}
	rl.mu.Lock()
	rl.closed.Store(true)
	open := slices.Collect(maps.Values(rl.watches))
	rl.mu.Unlock()
	for _, lw := range open {
		lw.end()
	}
	return nil
}

// AcquireLock tries to acquire a Lease-backed lock identified by name.
//
// The algorithm has three cases:
//   - Lease does not exist — create it and return (lock acquired).
//   - Lease exists but is expired — update it to claim ownership.
//   - Lease exists and is still valid — wait and retry until the timeout, then
//     return ErrLockHeld.
//
// Create and Update conflicts (another replica raced us) are retried
// transparently within the timeout window. The wait between retries is
// context-aware: if ctx is cancelled, AcquireLock returns ctx.Err()
// immediately instead of blocking (a write already in flight first runs to
// its end; see below).
//
// When the client can watch (see WithWatchClient), a waiter watches the Lease
// and retries as soon as it is deleted or changes; otherwise it polls at the
// retry interval. Either way it also wakes when the Lease expires.
//
// A Lease already held by lockerID counts as acquired and its renewTime is
// refreshed, so a retry after a lost response is safe. Where this locker
// acquired that Lease for lockerID in an earlier call and it has not expired
// (the caller holds the lock already), a refresh that fails or is cancelled
// leaves the lock held, as it was before the call: the caller still holds
// it, and releases it.
//
// When the lock stays held, the error is a *HeldError naming the holder and
// its expiry; when other lockers' writes kept beating this one's past the
// timeout, it is a *HeldError that wraps the last Conflict or AlreadyExists.
// Transient server errors (5xx, 429, timeouts, lost connections) are retried
// with jittered backoff inside the window; other errors (Forbidden, Invalid)
// return at once, wrapped so that apierrors.IsForbidden and friends still
// hold. If AcquireLock gives up after a write whose response it did not see,
// it deletes the Lease if that write made it the holder, so a cancelled or
// failed call leaves no Lease of its own behind. A cancel (or deadline) that
// arrives while a Create or Update is in flight lets that write finish, since
// the server might apply it after the client gave up: it takes milliseconds,
// and is cut off after 5s even against a server that does not answer. Then
// AcquireLock releases the Lease if the write won it and returns ctx.Err().
//
// name must be a valid Lease name (a lowercase RFC 1123 subdomain) and
// lockerID must be non-empty UTF-8; otherwise AcquireLock returns an error
// before sending any request.
//
// lockerID names one holder. Callers that pass the same lockerID at once
// hold the lock together, since each counts the other's Lease as its own:
// give each concurrent holder an ID of its own (withlock makes one per
// call).
func (rl *ResourceLocker) AcquireLock(ctx context.Context, name, lockerID string) error {
	if err := rl.check(name, lockerID); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	log := logf.FromContext(ctx).WithValues("lock", name, "namespace", rl.namespace, "holder", lockerID)
	start := rl.clock.Now()
	var o outcome
	err := rl.acquire(ctx, name, lockerID, start, &o)
	now := rl.clock.Now()
	var waited time.Duration
	if !o.firstHeld.IsZero() {
		waited = now.Sub(o.firstHeld)
	}
	result := lockmetrics.Acquired
	switch {
	case errors.Is(err, ErrLockHeld):
		result = lockmetrics.Held
	case ctx.Err() != nil && errors.Is(err, ctx.Err()):
		result = lockmetrics.Cancelled
	case err != nil:
		result = lockmetrics.Error
	}
	rl.metrics.Acquire(name, result, now.Sub(start), !o.firstHeld.IsZero(), waited)
	switch {
	case o.previousHolder != "" && err == nil:
		rl.metrics.Takeover(name)
		log.Info("took over an expired lock", "previousHolder", o.previousHolder, "waited", waited)
	case err == nil:
		log.V(1).Info("acquired lock", "waited", waited)
	default:
		log.V(1).Info("did not acquire lock", "result", result, "error", err)
	}
	return err
}

// outcome is what acquire tells AcquireLock for its metrics and logs.
type outcome struct {
	// firstHeld is when acquire first found the lock held by another.
	firstHeld time.Time
	// previousHolder is the holder of the expired Lease it took over.
	previousHolder string
}

func (rl *ResourceLocker) acquire(ctx context.Context, name, lockerID string, start time.Time, o *outcome) error {
	a := &acquirer{rl: rl, name: name, lockerID: lockerID, deadline: start.Add(rl.retryTimeout), known: true}
	a.held, a.holding = rl.heldVersion(name, lockerID)
	// A watch this locker keeps open for name already knows the Lease.
	if a.lw = rl.existingWatch(name); a.lw != nil {
		a.adopt(a.lw.state())
	} else if rl.contended(name) || a.holding {
		// Watch it first. A holder reads it first: its Create can only
		// fail, and one whose outcome it could not see would leave the
		// call unsure whether it made a new Lease, which a failed call
		// releases (the Lease it held, were that still there).
		a.known = false
	}
	defer func() {
		if a.lw != nil {
			a.lw.drop()
		}
	}()
	backoff := rl.backoff()
	races := 0 // lost races in a row, without a wait between them
	for {
		var (
			err   error
			write bool
			race  error // another writer won: AlreadyExists, Conflict, NotFound
		)
		switch {
		case !a.known:
			if a.awaitWatch(ctx) {
				continue
			}
			if a.lw == nil && !a.holding && rl.clock.Now().Before(a.deadline) {
				// A call that can wait will watch the Lease: watch it in a
				// way that sends it first, instead of reading it. A
				// try-lock reads, and so does a holder, which will likely
				// renew it without waiting.
				if a.lw = rl.syncWatch(ctx, name); a.lw != nil {
					a.adopt(a.lw.state())
					continue
				}
			}
			a.lease, err = rl.get(ctx, name)
			a.known, a.handoff = err == nil, false

		case a.lease == nil:
			if a.handoff && !rl.clock.Now().Before(a.deadline) {
				// Past its deadline the call takes no head start, and its
				// Create is no handoff that tunes the herd's gap.
				a.handoff = false
			}
			if a.handoff {
				// The Lease was deleted under our eyes, and other waiters
				// saw it too: give the longest waiter a head start.
				if err := a.herdDelay(ctx); err != nil {
					return rl.giveUp(ctx, name, lockerID, a.uncertain, err)
				}
				if a.lease != nil {
					continue // another waiter won
				}
			}
			if err := ctx.Err(); err != nil {
				return rl.giveUp(ctx, name, lockerID, a.uncertain, err)
			}
			write, a.refresh = true, false
			var lease *coordinationv1.Lease
			sent := time.Now()
			lease, err = rl.create(ctx, name, lockerID, a.handoffs)
			a.rtt = time.Since(sent)
			if err == nil {
				return a.acquired(ctx, lease)
			}
			if apierrors.IsAlreadyExists(err) {
				if !a.delayed && !a.handoff {
					// Held when the call came: others may have asked
					// together with it.
					a.widen()
				}
				a.lost(true)
				a.known, err, race = false, nil, err
			}
			a.handoff, a.delayed = false, false

		default:
			now := rl.clock.Now()
			expired, until := rl.expired(a.lease, now)
			if ptr.Deref(a.lease.Spec.HolderIdentity, "") != lockerID && !expired {
				if o.firstHeld.IsZero() {
					o.firstHeld = now
				}
				if !now.Before(a.deadline) {
					return &HeldError{
						Namespace: rl.namespace, Name: name,
						Holder: ptr.Deref(a.lease.Spec.HolderIdentity, ""),
						Until:  until, Waited: now.Sub(start),
					}
				}
				if err := a.wait(ctx, now, until); err != nil {
					return rl.giveUp(ctx, name, lockerID, a.uncertain, err)
				}
				races = 0
				continue
			}
			if err := ctx.Err(); err != nil {
				return rl.giveUp(ctx, name, lockerID, a.uncertain, err)
			}
			write = true
			previous := ptr.Deref(a.lease.Spec.HolderIdentity, "")
			// A refresh renews the Lease as this locker held it when the call
			// began, or as an earlier refresh of this call (whose response
			// may have been lost) left it.
			a.refresh = previous == lockerID && !expired && a.holding &&
				(versionOf(a.lease) == a.held || a.renewing && a.lease.UID == a.held.uid)
			a.renewing = a.renewing || a.refresh
			var lease *coordinationv1.Lease
			lease, err = rl.claim(ctx, a.lease, lockerID)
			if err == nil {
				if previous != lockerID {
					o.previousHolder = previous
				}
				return a.acquired(ctx, lease)
			}
			switch {
			case apierrors.IsConflict(err):
				a.known, err, race = false, nil, err
			case apierrors.IsNotFound(err):
				a.lease, err, race = nil, nil, err
			}
		}
		if race != nil {
			// Re-read at once after a lost race, but not for ever past the
			// deadline: a Lease that changes under every write must not hold
			// the caller much longer than the retry timeout. A few races in a
			// row are normal (a takeover that meets a delete, then a create),
			// even for a try-lock.
			if races++; races > maxRaces && !rl.clock.Now().Before(a.deadline) {
				// Others kept the lock past the timeout: the contract's
				// ErrLockHeld, which wraps the last race.
				held := &HeldError{Namespace: rl.namespace, Name: name, Waited: rl.clock.Since(start), race: race}
				if a.lease != nil {
					held.Holder = ptr.Deref(a.lease.Spec.HolderIdentity, "")
				}
				return rl.giveUp(ctx, name, lockerID, a.uncertain, held)
			}
		}
		if err == nil {
			continue
		}
		if ctx.Err() != nil {
			return rl.giveUp(ctx, name, lockerID, a.uncertain || write && !a.refresh, ctx.Err())
		}
		if write && !rejected(err) && !a.refresh {
			a.uncertain = true
		}
		err = fmt.Errorf("resourcelock: acquire lock %s/%s: %w", rl.namespace, name, err)
		now := rl.clock.Now()
		if !transient(err) || !now.Before(a.deadline) {
			return rl.giveUp(ctx, name, lockerID, a.uncertain, err)
		}
		a.known = false
		if err := rl.sleep(ctx, min(backoff.Step(), a.deadline.Sub(now))); err != nil {
			return rl.giveUp(ctx, name, lockerID, a.uncertain, err)
		}
	}
}

// acquirer is the state of one AcquireLock call.
type acquirer struct {
	rl             *ResourceLocker
	name, lockerID string
	deadline       time.Time

	lease     *coordinationv1.Lease // as last seen; nil when absent
	known     bool                  // lease reflects the server; start by creating
	uncertain bool                  // a write may have made lockerID the holder unseen
	// held is the version of the Lease this locker held for lockerID when
	// the call began, if holding. refresh is set while the write in flight
	// renews that very Lease, still held by lockerID, and renewing once one
	// such write was sent: the caller holds the lock already, and a refresh
	// that fails or is cancelled leaves it so.
	held                       version
	holding, refresh, renewing bool

	lw  *leaseWatch // the watch of the Lease, once waiting needed one
	seq uint64      // the watch's seq when lease was taken from it
	// handoff is set when the watch showed the Lease deleted: other waiters
	// saw it too, so creating it waits a random head start.
	handoff bool
	// delayed is set when the Create in flight followed such a wait.
	delayed bool
	// handoffs counts the handoffs that another waiter won.
	handoffs int
	// collisions counts this call's Creates that lost to another waiter's.
	collisions int
	// cohort is set while the call is tied with a cohort its watch cannot
	// count (see leaseWatch.herdDelay); spread is then its tie-break. rtt
	// is how long its last Create took, in real time.
	cohort      bool
	spread, rtt time.Duration
}

// adopt takes the Lease as the watch shows it, if the watch is healthy.
func (a *acquirer) adopt(s watchState) bool {
	if !s.healthy {
		return false
	}
	a.lease, a.seq, a.known = s.lease, s.seq, true
	a.handoff = s.lease == nil
	return true
}

// acquired ends the call after a write made lockerID the holder. It records
// the Lease for the other waiters of the locker and tunes the handoff delay.
// If the caller cancelled while the write was in flight, it releases the lock
// and returns ctx.Err(): a cancelled AcquireLock leaves no lock held, but for
// a refresh, which leaves the lock the caller held before it.
func (a *acquirer) acquired(ctx context.Context, lease *coordinationv1.Lease) error {
	if a.lw != nil {
		if a.delayed {
			a.lw.won()
		}
		a.lw.set(lease)
	}
	if err := ctx.Err(); err != nil {
		return a.rl.giveUp(ctx, a.name, a.lockerID, !a.refresh, err)
	}
	return nil
}

// lost counts a handoff another waiter won; collided reports that this
// call's Create lost the race.
func (a *acquirer) lost(collided bool) {
	if a.lw == nil || !a.delayed && !a.handoff {
		return
	}
	a.handoffs++
	if a.cohort {
		// It will likely see many more handoffs: stop paying for a
		// compressed event each.
		a.lw.busy()
		if collided {
			a.widen()
		} else {
			a.spread = max(a.spread*3/5, headTie)
		}
	}
	if collided {
		a.collisions++
		a.lw.collided()
	}
}

// widen spreads the call's Creates, while it is tied with a cohort, over at
// least the time its last Create took. A failed Create takes longer the more
// Creates the server has in hand: under 30 at once 12-25ms, against about
// 2ms alone. Spread over that time, the first of the cohort to go is usually
// alone, and the others see its Lease before their own delay ends. A clean
// handoff (another waiter's Lease came first) narrows the spread again, as
// the cohort shrinks by one.
func (a *acquirer) widen() {
	a.spread = min(max(a.spread, a.rtt), maxSpread)
}

// awaitWatch waits, when a healthy watch follows the Lease, for the watch to
// show what a read would: after a lost race the winner's Lease is on its way.
// It reports false when the caller should read the Lease instead.
func (a *acquirer) awaitWatch(ctx context.Context) bool {
	if a.lw == nil {
		return false
	}
	s := a.lw.state()
	if !s.healthy {
		return false
	}
	if s.seq != a.seq {
		return a.adopt(s)
	}
	// Past the deadline (a try-lock's is its start) the call does not wait:
	// it reads.
	left := a.deadline.Sub(a.rl.clock.Now())
	if left <= 0 {
		return false
	}
	t := time.NewTimer(min(a.rl.retryInterval, left))
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return false
	case <-s.changed:
		return a.adopt(a.lw.state())
	}
}

// herdDelay waits a random head start, shorter the more handoffs this call
// lost, unless the watch shows another waiter's Lease first. A call past its
// deadline, such as a try-lock, does not wait one: it creates at once.
//
// A locker that deleted the Lease itself knows before the watch shows it, a
// round trip before every other waiter. Its head start begins when its own
// watch shows the deletion, as theirs do: otherwise a releaser that asks
// again at once would win every handoff it ties.
func (a *acquirer) herdDelay(ctx context.Context) error {
	a.delayed = true
	var headStart <-chan time.Time // nil until the deletion is confirmed
	confirm := time.After(maxConfirm)
	for {
		s := a.lw.state()
		if s.seq != a.seq && s.lease != nil && a.adopt(s) {
			a.lost(false)
			a.delayed = false
			return nil
		}
		if headStart == nil && (!s.unconfirmed || !s.healthy) {
			headStart = time.After(a.headStart())
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-headStart:
			return nil
		case <-confirm:
			if headStart == nil { // the watch never showed it
				headStart = time.After(a.headStart())
			}
			confirm = nil
		case <-s.changed:
		}
	}
}

// headStart returns the call's head start at this handoff; see
// leaseWatch.herdDelay.
func (a *acquirer) headStart() time.Duration {
	d, cohort := a.lw.herdDelay(a.handoffs, a.collisions, a.spread)
	a.cohort = cohort
	return d
}

// wait waits for the held Lease to change: on its watch when the client can
// watch, polling at the retry interval otherwise. Either way it wakes when
// the Lease would expire and at the deadline.
func (a *acquirer) wait(ctx context.Context, now, until time.Time) error {
	rl := a.rl
	if a.lw == nil {
		a.lw = rl.openWatch(ctx, a.lease)
		if a.lw != nil {
			s := a.lw.state()
			a.seq = s.seq
			if s.healthy && s.synced && (s.lease == nil || versionOf(s.lease) != versionOf(a.lease)) {
				// Another call's watch, opened meanwhile, knows another
				// version than this call read, older or newer. Waiting for
				// its next change could miss a deletion it has already
				// shown; taking its version could go back to an older one.
				// Read again, and wait on the watch from there.
				lease, err := rl.get(ctx, a.name)
				if err != nil {
					a.known = false
					return nil
				}
				a.lease = lease
				return nil
			}
		}
	}
	var s watchState
	if a.lw != nil {
		s = a.lw.state()
	}
	if !s.healthy {
		// Poll.
		if err := rl.sleep(ctx, rl.pollWait(now, until, a.deadline)); err != nil {
			return err
		}
		a.known = false
		return nil
	}
	if s.seq != a.seq {
		a.follow(s)
		return nil
	}
	d := a.deadline.Sub(now)
	if !until.IsZero() {
		d = min(d, until.Sub(now)+time.Millisecond)
	}
	t := rl.clock.NewTimer(max(d, 0))
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C():
		return nil // judge the same Lease again: it expired, or time is up
	case <-s.changed:
		if !a.follow(a.lw.state()) {
			a.known = false // the watch ended: read, then poll
		}
		return nil
	}
}

// follow adopts the Lease as the watch shows it after a wait, like adopt,
// and counts a handoff that another waiter won if the Lease now has another
// holder or is another Lease: the watch keeps only its last state, so a
// deletion and the next Create can reach a waiter as one change.
func (a *acquirer) follow(s watchState) bool {
	prev := a.lease
	if !a.adopt(s) {
		return false
	}
	if prev != nil && a.lease != nil && (a.lease.UID != prev.UID ||
		ptr.Deref(a.lease.Spec.HolderIdentity, "") != ptr.Deref(prev.Spec.HolderIdentity, "")) {
		a.handoffs++
	}
	return true
}

// ReleaseLock deletes the Lease if it is held by the given lockerID. If the
// Lease does not exist or is held by a different locker, this is a no-op. The
// holder check prevents a slow replica from accidentally releasing a lock that
// was already re-acquired by someone else.
//
// The check is made by the API server, not by a read before the delete: the
// Delete carries preconditions on the UID and resourceVersion of the Lease as
// lockerID holds it, and a failed precondition makes ReleaseLock read the
// Lease and decide again. Transient server errors are retried within the retry
// timeout. If ctx is cancelled, ReleaseLock returns ctx.Err() and the Lease
// stays until it expires; callers that must release after their own context
// ended should pass context.WithoutCancel(ctx) with a timeout.
func (rl *ResourceLocker) ReleaseLock(ctx context.Context, name, lockerID string) error {
	if err := rl.check(name, lockerID); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return rl.release(ctx, name, lockerID)
}

func (rl *ResourceLocker) release(ctx context.Context, name, lockerID string) error {
	a, ok := rl.forgetHeld(name, lockerID)
	v := a.version
	log := logf.FromContext(ctx).WithValues("lock", name, "namespace", rl.namespace, "holder", lockerID)
	deadline := rl.clock.Now().Add(rl.retryTimeout)
	backoff := rl.backoff()
	for {
		var err error
		if !ok {
			var lease *coordinationv1.Lease
			lease, err = rl.get(ctx, name)
			if err == nil {
				if lease == nil {
					return nil
				}
				if holder := ptr.Deref(lease.Spec.HolderIdentity, ""); holder != lockerID {
					if holder != "" && !a.at.IsZero() {
						rl.metrics.ReleaseTakenOver(name)
						log.Info("lock was taken over before release", "holderNow", holder)
					}
					return nil
				}
				v, ok = versionOf(lease), true
			}
		}
		if ok {
			err = rl.delete(ctx, name, v)
			switch {
			case err == nil:
				rl.deleted(name, v.uid)
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
				ok = false
				continue
			}
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		err = fmt.Errorf("resourcelock: release lock %s/%s: %w", rl.namespace, name, err)
		now := rl.clock.Now()
		if !transient(err) || !now.Before(deadline) {
			return err
		}
		if err := rl.sleep(ctx, min(backoff.Step(), deadline.Sub(now))); err != nil {
			return err
		}
	}
}

// giveUp ends a failed AcquireLock. When a write may have made lockerID the
// holder without AcquireLock seeing it, it releases the Lease on a context of
// its own, so the caller's cancellation does not leak the lock.
func (rl *ResourceLocker) giveUp(ctx context.Context, name, lockerID string, uncertain bool, err error) error {
	if !uncertain {
		return err
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), detachedTimeout)
	defer cancel()
	if rerr := rl.release(ctx, name, lockerID); rerr != nil {
		return errors.Join(err, rerr)
	}
	return err
}

// get reads the Lease; a missing Lease is (nil, nil).
func (rl *ResourceLocker) get(ctx context.Context, name string) (*coordinationv1.Lease, error) {
	lease := &coordinationv1.Lease{}
	err := rl.client.Get(ctx, client.ObjectKey{Namespace: rl.namespace, Name: name}, lease)
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		rl.metrics.APIError(name, err)
		return nil, err
	}
	return lease, nil
}

// create creates the Lease held by lockerID. handoffs is how many handoffs
// to other waiters the caller waited through, recorded for the next waiters
// (see herdDelay).
func (rl *ResourceLocker) create(ctx context.Context, name, lockerID string, handoffs int) (*coordinationv1.Lease, error) {
	now := metav1.NewMicroTime(rl.clock.Now())
	lease := &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{
			Name:        name,
			Namespace:   rl.namespace,
			Labels:      map[string]string{ManagedByLabel: managedByValue},
			Annotations: map[string]string{HandoffsAnnotation: strconv.Itoa(handoffs)},
		},
		Spec: coordinationv1.LeaseSpec{
			HolderIdentity:       ptr.To(lockerID),
			LeaseDurationSeconds: ptr.To(int32(rl.leaseDuration / time.Second)),
			AcquireTime:          &now,
			RenewTime:            &now,
		},
	}
	wctx, cancel := writeContext(ctx)
	defer cancel()
	if err := rl.client.Create(wctx, lease); err != nil {
		rl.metrics.APIError(name, err)
		return nil, err
	}
	rl.acquired(name, lockerID, lease, now.Time)
	return lease, nil
}

// claim updates lease, as read, to be held by lockerID: a renewal when it
// holds it already, a takeover otherwise.
func (rl *ResourceLocker) claim(ctx context.Context, lease *coordinationv1.Lease, lockerID string) (*coordinationv1.Lease, error) {
	lease = lease.DeepCopy()
	now := metav1.NewMicroTime(rl.clock.Now())
	spec := &lease.Spec
	if ptr.Deref(spec.HolderIdentity, "") != lockerID {
		spec.HolderIdentity = ptr.To(lockerID)
		spec.AcquireTime = &now
		spec.LeaseTransitions = ptr.To(ptr.Deref(spec.LeaseTransitions, 0) + 1)
	}
	spec.RenewTime = &now
	spec.LeaseDurationSeconds = ptr.To(int32(rl.leaseDuration / time.Second))
	wctx, cancel := writeContext(ctx)
	defer cancel()
	if err := rl.client.Update(wctx, lease); err != nil {
		rl.metrics.APIError(lease.Name, err)
		return nil, err
	}
	rl.acquired(lease.Name, lockerID, lease, now.Time)
	return lease, nil
}

// writeContext is the context of a Create or Update that may make the caller
// the holder. Once sent, such a write runs to its end even if the caller
// cancels: the client would give up on the request at once, but the server
// may still apply it, after AcquireLock returned, and leave the lock held by
// a caller that was told it failed. So the write is detached from the
// caller's cancellation (not from its values), bounded by detachedTimeout,
// and AcquireLock honours the cancel once the outcome is known.
func writeContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), detachedTimeout)
}

func (rl *ResourceLocker) delete(ctx context.Context, name string, v version) error {
	lease := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: rl.namespace}}
	err := rl.client.Delete(ctx, lease, client.Preconditions{UID: &v.uid, ResourceVersion: &v.resourceVersion})
	if err != nil && !apierrors.IsNotFound(err) {
		rl.metrics.APIError(name, err)
	}
	return err
}

// expired reports whether lease is free to take over at now, on this
// locker's clock, and when it expires if it is not.
func (rl *ResourceLocker) expired(lease *coordinationv1.Lease, now time.Time) (bool, time.Time) {
	spec := lease.Spec
	if ptr.Deref(spec.HolderIdentity, "") == "" || ptr.Deref(spec.LeaseDurationSeconds, 0) <= 0 {
		rl.forgetObserved(lease.Name)
		return true, time.Time{}
	}
	d := time.Duration(*spec.LeaseDurationSeconds) * time.Second
	var until time.Time
	if t := spec.RenewTime; t != nil {
		until = t.Add(d)
	} else if t := spec.AcquireTime; t != nil {
		until = t.Add(d)
	}
	if !until.IsZero() && now.After(until) {
		rl.forgetObserved(lease.Name)
		return true, until
	}
	// The holder's clock may run ahead of ours, or the Lease has no time at
	// all: it is expired once we have seen it unchanged for a full duration.
	seen := rl.observe(lease, now).Add(d)
	if until.IsZero() || seen.Before(until) {
		until = seen
	}
	return !now.Before(seen), until
}

// pollWait is how long a waiter sleeps before it reads a held Lease again: the
// retry interval with jitter, cut short by the Lease's expiry and by the
// deadline.
func (rl *ResourceLocker) pollWait(now, until, deadline time.Time) time.Duration {
	d := wait.Jitter(rl.retryInterval, 0.1)
	if !until.IsZero() {
		// A millisecond past the expiry, so that the next read sees it expired.
		d = min(d, until.Sub(now)+time.Millisecond)
	}
	return max(min(d, deadline.Sub(now)), 0)
}

func (rl *ResourceLocker) backoff() wait.Backoff {
	return wait.Backoff{Duration: firstBackoff, Factor: 2, Jitter: 1, Steps: 1 << 30, Cap: rl.retryInterval}
}

// sleep waits d on the locker's clock, or returns ctx.Err() when ctx ends
// first.
func (rl *ResourceLocker) sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := rl.clock.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C():
		return nil
	}
}

func (rl *ResourceLocker) acquired(name, lockerID string, lease *coordinationv1.Lease, at time.Time) {
	rl.mu.Lock()
	defer rl.mu.Unlock()
	delete(rl.observed, name)
	k := holding{name, lockerID}
	if _, ok := rl.held[k]; !ok && len(rl.held) >= maxTracked {
		rl.forgetExpired(at)
	}
	rl.held[k] = acquisition{version: versionOf(lease), at: at}
}

// forgetExpired drops from the held record every lock whose Lease has
// expired at now, on this locker's clock: a lock its caller never
// released. What the record does for a lock still held (a refresh that
// fails keeps it; a release deletes without a read) must not depend on how
// many others the locker holds. rl.mu must be held.
func (rl *ResourceLocker) forgetExpired(now time.Time) {
	for k, a := range rl.held {
		if now.After(a.at.Add(rl.leaseDuration)) {
			delete(rl.held, k)
		}
	}
}

// heldVersion returns the version of the Lease this locker holds for
// lockerID, as its last acquire or renewal whose response it saw left it.
func (rl *ResourceLocker) heldVersion(name, lockerID string) (version, bool) {
	rl.mu.Lock()
	defer rl.mu.Unlock()
	a, ok := rl.held[holding{name, lockerID}]
	return a.version, ok
}

func (rl *ResourceLocker) forgetHeld(name, lockerID string) (acquisition, bool) {
	rl.mu.Lock()
	defer rl.mu.Unlock()
	k := holding{name, lockerID}
	v, ok := rl.held[k]
	delete(rl.held, k)
	return v, ok
}

// observe returns when this locker first saw lease in its current version.
func (rl *ResourceLocker) observe(lease *coordinationv1.Lease, now time.Time) time.Time {
	rl.mu.Lock()
	defer rl.mu.Unlock()
	v := versionOf(lease)
	o, ok := rl.observed[lease.Name]
	if ok && o.version == v {
		return o.since
	}
	if !ok && len(rl.observed) >= maxTracked {
		dropOne(rl.observed)
	}
	rl.observed[lease.Name] = observation{version: v, since: now}
	return now
}

func (rl *ResourceLocker) forgetObserved(name string) {
	rl.mu.Lock()
	defer rl.mu.Unlock()
	delete(rl.observed, name)
}

func dropOne[K comparable, V any](m map[K]V) {
	for k := range m {
		delete(m, k)
		return
	}
}

func versionOf(lease *coordinationv1.Lease) version {
	return version{uid: lease.UID, resourceVersion: lease.ResourceVersion}
}

// check rejects what cannot work before any request is sent.
func (rl *ResourceLocker) check(name, lockerID string) error {
	switch {
	case rl == nil:
		return errNilLocker
	case rl.client == nil:
		return errNilClient
	case rl.err != nil:
		return rl.err
	}
	if err := ValidateLockName(name); err != nil {
		return err
	}
	if lockerID == "" {
		return errEmptyLockerID
	}
	if !utf8.ValidString(lockerID) {
		// The API server would store it mended, and the Lease would then
		// never be this lockerID's.
		return fmt.Errorf("resourcelock: invalid lockerID %q: not valid UTF-8", lockerID)
	}
	return nil
}

// ValidateLockName returns an error unless name is a valid Lease name: a
// lowercase RFC 1123 subdomain of at most 253 characters.
func ValidateLockName(name string) error {
	if name == "" {
		return fmt.Errorf("resourcelock: invalid lock name %q: must not be empty", name)
	}
	if msgs := apivalidation.NameIsDNSSubdomain(name, false); len(msgs) > 0 {
		return fmt.Errorf("resourcelock: invalid lock name %q: %s", name, strings.Join(msgs, "; "))
	}
	return nil
}

func validateNamespace(namespace string) error {
	if namespace == "" {
		return fmt.Errorf("resourcelock: invalid namespace %q: must not be empty", namespace)
	}
	if msgs := apivalidation.ValidateNamespaceName(namespace, false); len(msgs) > 0 {
		return fmt.Errorf("resourcelock: invalid namespace %q: %s", namespace, strings.Join(msgs, "; "))
	}
	return nil
}
