package withlock

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/google/uuid"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/leaselock/leaselock/internal/lockmetrics"
	"github.com/leaselock/leaselock/resourcelock"
)

var (
	// ErrLockLost is the cause of the ctx given to fn when its lease could
	// have expired, or a renewal found the lock taken by another holder,
	// and is in the error of a call whose fn ran that long (for a takeover,
	// with resourcelock.ErrNotHeld). A nested call's fn sees an outer
	// lock's ErrLockLost as its ctx's cause too, but the nested call
	// reports its own lock lost only when its own lock was.
	ErrLockLost = errors.New("withlock: lock lost: the lease could have expired before fn returned")

	// ErrMaxHold is the cause of the ctx given to fn when the lock has
	// been held for its max hold (WithMaxHold), and is in the error of the
	// call. errors.Is tells it from ErrLockLost: the lock was still held.
	ErrMaxHold = errors.New("withlock: lock held for its max hold")

	// ErrClosed is in the error of a call that waited for its lock when the
	// Locker was closed, and of every call after (see Locker.Close).
	ErrClosed = errors.New("withlock: locker closed")

	// ErrNestedLock is in the error of a WithLock, Update or Do, given the
	// ctx of a fn, for a lock of the same namespace and name that the call
	// chain holds already: the call would wait for itself, and so fails at
	// once. It names the lock and its holder.
	ErrNestedLock = errors.New("withlock: lock held already by this call chain")

	errNilLocker   = errors.New("withlock: locker is nil")
	errNilResource = errors.New("withlock: Locker has a nil ResourceLocker: pass one to New")
	errNilFunc     = errors.New("withlock: fn is nil")
)

// Locker runs functions under resourcelock locks, with a holder ID of its own
// for every acquisition. It is safe for concurrent use. The zero value is not
// usable; build one with New, NewForCluster or NewForConfig.
type Locker struct {
	rl             *resourcelock.ResourceLocker
	identity       string
	releaseTimeout time.Duration
	margin         time.Duration
	// renew is set when the lock is renewed while fn runs; maxHold caps
	// the hold, 0 for no cap.
	renew   bool
	maxHold time.Duration
	// log is the logger of calls whose ctx carries none.
	log logr.Logger
	// reader is what Update reads through by default; nil for Update's
	// client.
	reader client.Reader

	// stop is cancelled, with cause ErrClosed, by Close.
	stop   context.Context
	cancel context.CancelCauseFunc
	// background is the removal of leftover Leases, when l runs one.
	background sync.WaitGroup
	// closeBuilt closes what the constructor built for l: the
	// ResourceLocker, and the connections of its HTTP client. Nil for New.
	closeBuilt func()
}

// New returns a Locker that takes its locks from rl. A nil rl is reported by
// every call, before any request is sent. The Locker starts no background
// work, and Close neither closes rl nor is needed; WithResourceLockerOptions
// and WithLeftoverRemoval do not apply to it.
func New(rl *resourcelock.ResourceLocker, opts ...Option) *Locker {
	return newLocker(rl, collect(opts))
}

// newLocker returns a Locker on rl with the options o.
func newLocker(rl *resourcelock.ResourceLocker, o options) *Locker {
	l := &Locker{rl: rl, identity: o.identity, releaseTimeout: o.releaseTimeout, log: o.logger(rl.Logger()),
		renew: !o.noRenewal, maxHold: o.maxHold}
	if rl != nil {
		l.margin = rl.LeaseDuration() / 5
		if m := o.margin; m != nil && *m >= 0 && *m < rl.LeaseDuration() {
			l.margin = *m
		}
	}
	l.stop, l.cancel = context.WithCancelCause(context.Background())
	return l
}

// hold is how long a write of a Lease holds its lock for fn: the lease
// duration less the safety margin.
func (l *Locker) hold() time.Duration { return l.rl.LeaseDuration() - l.margin }

// ResourceLocker returns the ResourceLocker l takes its locks from: the one
// given to New, or the one NewForCluster or NewForConfig built.
func (l *Locker) ResourceLocker() *resourcelock.ResourceLocker {
	if l == nil {
		return nil
	}
	return l.rl
}

// Do runs fn while holding the lock name from rl, as New(rl).WithLock does.
func Do(ctx context.Context, rl *resourcelock.ResourceLocker, name string, fn func(ctx context.Context) error) error {
	return New(rl).WithLock(ctx, name, fn)
}

// WithLock acquires the lock name with a new holder ID, runs fn, and releases
// the lock, whatever fn did.
//
// It returns the acquire error if the lock could not be had (ErrLockHeld
// from resourcelock when another holder kept it, ctx.Err() on cancel,
// ErrClosed when l was closed before or while it waited). No Lease is left
// behind then, unless the release of one that a cancelled write may have
// created failed too: the error says so, and the Lease stays until it
// expires. Otherwise it returns fn's error, joined with ErrLockLost if fn
// ran past its lease less the safety margin (see WithSafetyMargin) or its
// lock was taken by another holder, with ErrMaxHold if it ran for its
// max hold (WithMaxHold), and with the release error if the release
// failed; errors.Is and errors.As see each of them. If fn panics, the lock
// is released and the panic goes on with its original value.
//
// While fn runs, the lock is renewed about every third of the lease
// duration (see WithoutRenewal), and each renewal moves the time its lease
// could expire. The ctx given to fn is cancelled when ctx is; with cause
// ErrLockLost when the lease could have expired (renewals failed until its
// lease less the margin, or renewal is off) or a renewal found another
// holder; and with cause ErrMaxHold at the max hold. Pass it to every
// request fn makes. Renewal stops when fn returns or panics, and not
// before (neither when ctx ends nor when l is closed): the release then
// runs on context.WithoutCancel(ctx) bounded by the release timeout, so it
// happens even after ctx was cancelled, or l closed.
//
// The ctx given to fn records the lock: a WithLock, Update or Do given that
// ctx (or one derived from it) for the same namespace and name, through any
// Locker, returns ErrNestedLock at once, before any request, rather than
// wait for itself. Token gives fn the lock's fencing token.
func (l *Locker) WithLock(ctx context.Context, name string, fn func(ctx context.Context) error) (err error) {
	if err := l.check(ctx, name, fn); err != nil {
		return err
	}
	holder := l.identity + "_" + uuid.NewString()
	start, err := l.acquire(ctx, name, holder)
	if err != nil {
		return err
	}
	token, _ := l.rl.Token(name, holder)
	held := &heldLock{namespace: l.rl.Namespace(), name: name, holder: holder, acquired: start,
		outer: innermost(ctx), expiry: start.Add(l.hold()), token: token}
	fnCtx, k := l.keep(ctx, held)
	// returned is set when fn returned, rather than panicked or exited the
	// goroutine.
	var returned bool
	// Deferred, so that it runs after a panic or runtime.Goexit too; the
	// panic is not recovered and goes on with its value and stack.
	defer func() {
		// How this lock's keeping ended, not the cause of fnCtx, which may
		// be an outer lock's ErrLockLost that ctx carries.
		how, cause := k.finish()
		err = l.finish(ctx, held, err, returned, how, cause)
	}()
	err = fn(fnCtx)
	returned = true
	return err
}

// check rejects, before any request, a call that cannot work.
func (l *Locker) check(ctx context.Context, name string, fn func(ctx context.Context) error) error {
	switch {
	case l == nil:
		return errNilLocker
	case l.rl == nil:
		return errNilResource
	case fn == nil:
		return errNilFunc
	case l.stop.Err() != nil:
		return fmt.Errorf("%w before lock %s/%s was taken", ErrClosed, l.rl.Namespace(), name)
	}
	if held := holding(ctx, l.rl.Namespace(), name); held != nil {
		return &nestedError{held: held}
	}
	return nil
}

// acquire takes the lock name for holder, and returns when its lease
// began on the locker's clock.
func (l *Locker) acquire(ctx context.Context, name, holder string) (time.Time, error) {
	start := l.rl.Clock().Now()
	actx, done := l.acquireContext(ctx)
	err := l.rl.AcquireLock(actx, name, holder)
	closed := errors.Is(context.Cause(actx), ErrClosed)
	done()
	if err != nil {
		if closed && ctx.Err() == nil && errors.Is(err, context.Canceled) {
			// err names the lock, and says whether a Lease stays behind.
			return time.Time{}, fmt.Errorf("%w while waiting: %w", ErrClosed, err)
		}
		return time.Time{}, err
	}
	// The Lease's renewTime was read from the clock before the write was
	// sent; start is earlier still, a safe stand-in should the locker have
	// no record.
	if at, ok := l.rl.AcquiredAt(name, holder); ok {
		start = at
	}
	return start, nil
}

// finish ends a WithLock whose fn returned fnErr (or did not return), and
// whose lock's keeping ended as how, with cause: it reports the lock lost
// when the lease could have expired or was taken, releases it, and returns
// what the call returns.
func (l *Locker) finish(ctx context.Context, held *heldLock, fnErr error, returned bool, how ending, cause error) error {
	lost := how == endedExpired || how == endedTaken
	// The clock as well: fn may have returned after the expiry, before the
	// keeper saw it, or after the max hold ended the renewals.
	if !lost && !l.rl.Clock().Now().Before(held.deadline()) {
		lost = true
		if cause == nil {
			cause = held.lostError()
		} else {
			cause = errors.Join(cause, held.lostError())
		}
	}
	if lost {
		lockmetrics.ForLocker(l.rl).Lost(held.name)
		l.lockLog(ctx, held).Info("function outlived its lock", "error", cause)
	}
	rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), l.releaseTimeout)
	defer rcancel()
	released := l.rl.ReleaseLock(rctx, held.name, held.holder)
	switch {
	case released == nil:
	case !returned:
		// fn panicked or called runtime.Goexit: no caller will see the
		// error, and the Lease stays until it expires.
		l.lockLog(ctx, held).Error(released, "release after fn did not return")
	case fnErr == nil:
		released = fmt.Errorf("withlock: fn succeeded, but the release of lock %s/%s held by %s failed: %w; the Lease stays until it expires",
			held.namespace, held.name, held.holder, released)
	}
	return errors.Join(fnErr, cause, released)
}

// lockLog is the logger of a line about held: ctx's logger, or l's when
// ctx carries none. It is made only for a line that is logged: a logger
// that controller-runtime's log.Log delegates to warns, 30s into a program
// that never set it, at its first use.
func (l *Locker) lockLog(ctx context.Context, held *heldLock) logr.Logger {
	return logFor(ctx, l.log).WithValues("lock", held.name, "namespace", held.namespace, "holder", held.holder)
}

// logFor is ctx's logger, or fallback when ctx carries none.
func logFor(ctx context.Context, fallback logr.Logger) logr.Logger {
	if log, err := logr.FromContext(ctx); err == nil {
		return log
	}
	return fallback
}

// defaultIdentity is $POD_NAME (set from the downward API in most operator
// manifests), else the hostname, else "leaselock".
var defaultIdentity = sync.OnceValue(func() string {
	if pod := os.Getenv("POD_NAME"); pod != "" {
		return pod
	}
	if host, err := os.Hostname(); err == nil && host != "" {
		return host
	}
	return "leaselock"
})
