package withlock

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/google/uuid"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/leaselock/leaselock/internal/lockmetrics"
	"github.com/leaselock/leaselock/resourcelock"
)

// DefaultReleaseTimeout bounds the release that runs after fn, on a context
// of its own.
const DefaultReleaseTimeout = 5 * time.Second

var (
	// ErrLockLost is the cause of the ctx given to fn when its lease could
	// have expired, and is in the error of a call whose fn ran that long. A
	// nested call's fn sees an outer lock's ErrLockLost as its ctx's cause
	// too, but the nested call reports its own lock lost only when its own
	// lease ran out.
	ErrLockLost = errors.New("withlock: lock lost: the lease could have expired before fn returned")

	errNilLocker   = errors.New("withlock: locker is nil")
	errNilResource = errors.New("withlock: Locker has a nil ResourceLocker: pass one to New")
	errNilFunc     = errors.New("withlock: fn is nil")
)

// Locker runs functions under resourcelock locks, with a holder ID of its own
// for every acquisition. It is safe for concurrent use. The zero value is not
// usable; build one with New.
type Locker struct {
	rl             *resourcelock.ResourceLocker
	identity       string
	releaseTimeout time.Duration
	margin         time.Duration
}

// Option configures a Locker.
type Option func(*Locker)

// WithIdentity sets the stable part of every holder ID, so that `kubectl get
// lease` shows which process holds a lock. Default: $POD_NAME when set, else
// the hostname. Holder IDs are the identity, an underscore, and a fresh UUID.
// An empty identity is ignored; one that is not valid UTF-8 makes every call
// fail with resourcelock's invalid lockerID error, before any request.
func WithIdentity(id string) Option {
	return func(l *Locker) {
		if id != "" {
			l.identity = id
		}
	}
}

// WithReleaseTimeout bounds the release after fn. Default
// DefaultReleaseTimeout; non-positive values are ignored.
func WithReleaseTimeout(d time.Duration) Option {
	return func(l *Locker) {
		if d > 0 {
			l.releaseTimeout = d
		}
	}
}

// WithSafetyMargin sets how long before the lease could expire the ctx given
// to fn is cancelled with ErrLockLost. Default: a fifth of the lease
// duration (3s of the default 15s). Values below zero, or not shorter than
// the lease duration, are ignored.
//
// The margin covers clock drift between replicas and the time a write takes
// to reach the server: make it larger if your nodes' clocks may disagree.
func WithSafetyMargin(d time.Duration) Option {
	return func(l *Locker) {
		if d >= 0 && l.rl != nil && d < l.rl.LeaseDuration() {
			l.margin = d
		}
	}
}

// New returns a Locker that takes its locks from rl. A nil rl is reported by
// every call, before any request is sent.
func New(rl *resourcelock.ResourceLocker, opts ...Option) *Locker {
	l := &Locker{rl: rl, identity: defaultIdentity(), releaseTimeout: DefaultReleaseTimeout}
	if rl != nil {
		l.margin = rl.LeaseDuration() / 5
	}
	for _, opt := range opts {
		if opt != nil {
			opt(l)
		}
	}
	return l
}

// Do runs fn while holding the lock name from rl, as New(rl).WithLock does.
func Do(ctx context.Context, rl *resourcelock.ResourceLocker, name string, fn func(ctx context.Context) error) error {
	return New(rl).WithLock(ctx, name, fn)
}

// WithLock acquires the lock name with a new holder ID, runs fn, and releases
// the lock, whatever fn did.
//
// It returns the acquire error if the lock could not be had (ErrLockHeld
// from resourcelock when another holder kept it, ctx.Err() on cancel). No
// Lease is left behind then, unless the release of one that a cancelled
// write may have created failed too: the error says so, and the Lease
// stays until it expires. Otherwise it returns fn's error, joined with
// ErrLockLost if fn ran past its lease less the safety margin (see
// WithSafetyMargin) and with the release error if the release failed;
// errors.Is and errors.As see each of them. If fn panics, the lock is
// released and the panic goes on with its original value.
//
// The ctx given to fn is cancelled when ctx is, and with cause ErrLockLost
// when the lease could have expired: pass it to every request fn makes.
// Release runs on context.WithoutCancel(ctx) bounded by the release timeout,
// so it happens even after ctx was cancelled.
func (l *Locker) WithLock(ctx context.Context, name string, fn func(ctx context.Context) error) (err error) {
	if l == nil {
		return errNilLocker
	}
	if l.rl == nil {
		return errNilResource
	}
	if fn == nil {
		return errNilFunc
	}
	holder := l.identity + "_" + uuid.NewString()
	clk := l.rl.Clock()
	start := clk.Now()
	if err := l.rl.AcquireLock(ctx, name, holder); err != nil {
		return err
	}

	// The Lease's renewTime was read from the clock before the write was
	// sent; start is earlier still, a safe stand-in should the locker have
	// no record.
	if at, ok := l.rl.AcquiredAt(name, holder); ok {
		start = at
	}
	expiry := start.Add(l.rl.LeaseDuration() - l.margin)
	fnCtx, cancel := context.WithCancelCause(context.WithValue(ctx, expiryKey{}, expiry))
	lostErr := func() error {
		return fmt.Errorf("%w: lock %s/%s held by %s since %s", ErrLockLost,
			l.rl.Namespace(), name, holder, start.UTC().Format(time.RFC3339Nano))
	}
	timer := clk.NewTimer(expiry.Sub(clk.Now()))
	var watching sync.WaitGroup
	// expired is set when the timer fired: this lock's, not the cause of
	// fnCtx, which may be an outer lock's ErrLockLost that ctx carries.
	var expired bool
	// returned is set when fn returned, rather than panicked or exited the
	// goroutine.
	var returned bool
	watching.Go(func() {
		select {
		case <-timer.C():
			expired = true
			cancel(lostErr())
		case <-fnCtx.Done():
		}
	})

	// Deferred, so that it runs after a panic or runtime.Goexit too; the
	// panic is not recovered and goes on with its value and stack.
	defer func() {
		timer.Stop()
		cancel(nil)
		watching.Wait()
		var lost error
		// The clock as well: fn may have returned after the expiry, before
		// the timer's goroutine cancelled its ctx (or the timer was stopped
		// before it could).
		if expired || !clk.Now().Before(expiry) {
			lost = lostErr()
			lockmetrics.ForLocker(l.rl).Lost(name)
			logf.FromContext(ctx).Info("function outlived its lock", "lock", name,
				"namespace", l.rl.Namespace(), "holder", holder, "error", lost)
		}
		rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), l.releaseTimeout)
		defer rcancel()
		released := l.rl.ReleaseLock(rctx, name, holder)
		if released != nil && !returned {
			// fn panicked or called runtime.Goexit: no caller will see
			// the error, and the Lease stays until it expires.
			logf.FromContext(ctx).Error(released, "release after fn did not return", "lock", name,
				"namespace", l.rl.Namespace(), "holder", holder)
		}
		err = errors.Join(err, lost, released)
	}()
	err = fn(fnCtx)
	returned = true
	return err
}

// expiryKey is the key, in the ctx that WithLock gives fn, of the time on
// the locker's clock when fn's ctx is cancelled with ErrLockLost.
type expiryKey struct{}

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
