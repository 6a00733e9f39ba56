package resourcelock

// The contract: ResourceLocker, its constructor, AcquireLock and
// ReleaseLock. How an acquisition runs is acquire.go's; docs/design.md
// describes it.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/util/resourceversion"
	"k8s.io/utils/clock"
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

func init() {
	// withlock records its lost locks through the ResourceLocker it uses.
	lockmetrics.ForLocker = func(l any) *lockmetrics.Set {
		if rl, ok := l.(*ResourceLocker); ok && rl != nil {
			return rl.metrics
		}
		return nil
	}
}

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
	registerer    prometheus.Registerer
	byName        bool
	// log is the logger of calls whose ctx carries none.
	log logr.Logger
	// watcher is the client to watch with, when set by WithWatchClient;
	// noWatch turns watching off.
	watcher client.WithWatch
	noWatch bool
	// err is the reason the arguments to NewResourceLocker cannot work; every
	// call returns it before sending a request.
	err error

	metrics *lockmetrics.Set
	leases  *leaseClient
	records *records
	watches *watchRegistry
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
		log:           logf.Log,
	}
	for _, opt := range opts {
		if opt != nil {
			opt(rl)
		}
	}
	switch {
	case nilness.Is(c):
		rl.client, rl.err = nil, errNilClient
	default:
		rl.err = ValidateNamespace(namespace)
	}
	rl.metrics = lockmetrics.For(rl.registerer, rl.byName)
	rl.records = newRecords()
	rl.leases = &leaseClient{client: rl.client, namespace: namespace, duration: rl.leaseDuration, clock: rl.clock, records: rl.records}
	rl.watches = newWatchRegistry(rl.watchClient(), namespace, rl.clock, rl.retryInterval, rl.metrics, rl.log)
	return rl
}

// watchClient returns the client to watch Leases with, or nil.
func (rl *ResourceLocker) watchClient() client.WithWatch {
	switch {
	case rl.noWatch:
		return nil
	case rl.watcher != nil:
		return rl.watcher
	}
	w, _ := rl.client.(client.WithWatch)
	return w
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
	if rl == nil || rl.records == nil {
		return time.Time{}, false
	}
	a, ok := rl.records.heldBy(name, lockerID)
	return a.at, ok
}

// Token returns the fencing token of lockerID's hold on name: the
// resourceVersion of the write, by this locker, that acquired or last
// renewed the lock, while it is not released. It reports false when this
// locker has no record of the hold, and for a nil locker.
//
// Tokens of one lock name grow with every acquisition, whoever makes it,
// and with every renewal: a guarded system that stores the token with each
// write and rejects a smaller one refuses a holder that was paused past its
// lease. Compare tokens with CompareTokens. The API server promises that
// resourceVersions of one resource compare this way from Kubernetes 1.35;
// on an older server a token is still unique to its write, but the order
// is etcd's revision order, which kube-apiserver keeps without promising it.
func (rl *ResourceLocker) Token(name, lockerID string) (string, bool) {
	if rl == nil || rl.records == nil {
		return "", false
	}
	a, ok := rl.records.heldBy(name, lockerID)
	return a.resourceVersion, ok
}

// CompareTokens compares two fencing tokens (see Token): -1 when a is
// older than b, 0 when they are the same write's, +1 when a is newer. It
// returns an error for a string that is no resourceVersion of a Lease.
func CompareTokens(a, b string) (int, error) {
	c, err := resourceversion.CompareResourceVersion(a, b)
	if err != nil {
		return 0, fmt.Errorf("resourcelock: compare fencing tokens %q and %q: %w", a, b, err)
	}
	return c, nil
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
	if rl == nil || rl.watches == nil {
		return nil
	}
	rl.watches.close()
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
// transparently within the timeout window. A waiter wakes when the Lease
// changes (on a watch, where the client can watch) or expires, and at the
// retry interval. A Lease lockerID holds already counts as acquired, and is
// renewed.
//
// When the lock stays held the error is a *HeldError, which is ErrLockHeld.
// Transient server errors are retried inside the window; others return at
// once. If ctx is cancelled, AcquireLock returns an error for which
// errors.Is(err, ctx.Err()) holds, without waiting further, and leaves no
// Lease of its own behind: a write in flight first runs to its end, and
// the release of a Lease it may have won follows, for 2s at most each. A
// lock the caller held before the call stays held. Every error
// names the lock, lockerID and the holder last seen, and wraps its cause:
// errors.Is sees ctx errors, apierrors.IsForbidden and friends hold. A
// request that the call's own bound (below) ends is no deadline of the
// caller's: errors.Is does not see context.DeadlineExceeded in it.
//
// No request outlives the call: it returns within the retry timeout and one
// more request (2s), whatever the client and the server do. A read that
// cannot finish (a manager's GetClient() reads Leases from an informer
// cache, which needs list and watch on Leases in every namespace) does not
// end the call: it goes on creating the Lease, and gets the lock if it is
// free.
//
// name must be a valid Lease name and lockerID non-empty UTF-8; otherwise
// AcquireLock returns an error before sending any request. Callers that pass
// the same lockerID at once hold the lock together: give each concurrent
// holder an ID of its own (withlock makes one per call).
func (rl *ResourceLocker) AcquireLock(ctx context.Context, name, lockerID string) error {
	if err := rl.check(name, lockerID); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%s: %w", acquireOp(rl.namespace, name, lockerID), err)
	}
	a, err := rl.acquire(ctx, name, lockerID)
	rl.report(ctx, a, err)
	return err
}

// report records the metrics of an AcquireLock call, and logs its end.
func (rl *ResourceLocker) report(ctx context.Context, a *acquirer, err error) {
	now := rl.clock.Now()
	var waited time.Duration
	if !a.firstHeld.IsZero() {
		waited = now.Sub(a.firstHeld)
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
	rl.metrics.Acquire(a.name, result, now.Sub(a.start), !a.firstHeld.IsZero(), waited)
	log := rl.logger(ctx).WithValues("lock", a.name, "namespace", rl.namespace, "holder", a.lockerID)
	switch {
	case a.previousHolder != "" && err == nil:
		rl.metrics.Takeover(a.name)
		log.Info("took over an expired lock", "previousHolder", a.previousHolder, "waited", waited)
	case err == nil:
		log.V(1).Info("acquired lock", "waited", waited)
	default:
		log.V(1).Info("did not acquire lock", "result", result, "error", err)
	}
}

// Logger returns the logger of calls whose ctx carries none (WithLogger):
// controller-runtime's log.Log by default, and for a nil locker.
func (rl *ResourceLocker) Logger() logr.Logger {
	if rl == nil {
		return logf.Log
	}
	return rl.log
}

// logger is ctx's logger, or the locker's when ctx carries none.
func (rl *ResourceLocker) logger(ctx context.Context) logr.Logger {
	return logFor(ctx, rl.log)
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
// timeout, and no request outlives it by more than 2s. If ctx is
// cancelled, ReleaseLock returns an error for which errors.Is(err,
// ctx.Err()) holds, and the Lease stays until it expires; callers that must
// release after their own context ended should pass
// context.WithoutCancel(ctx) with a timeout. Every error names the lock and
// lockerID, and wraps its cause.
func (rl *ResourceLocker) ReleaseLock(ctx context.Context, name, lockerID string) error {
	if err := rl.check(name, lockerID); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%s: %w", releaseOp(rl.namespace, name, lockerID), err)
	}
	return rl.release(ctx, name, lockerID)
}
