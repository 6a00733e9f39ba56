package withlock

// The locks a call chain holds, kept in the ctx that WithLock gives fn: a
// nested call for one of them would wait for itself, and a call under a
// lock learns when its lock's time is up, and its fencing token. Also how
// long a write holds a lock, and the logger of a line about a held lock.

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/go-logr/logr"
)

// heldKey is the key, in the ctx that WithLock gives fn, of the innermost
// lock the call chain holds.
type heldKey struct{}

// heldLock is a lock that a WithLock up the call chain holds.
type heldLock struct {
	namespace, name, holder string
	// acquired is when the acquire's write began, on the locker's clock.
	acquired time.Time
	// outer is the lock held around this one's WithLock, or nil.
	outer *heldLock

	mu sync.Mutex // guards expiry and token, which each renewal moves
	// expiry is the time, on the locker's clock, when fn's ctx is
	// cancelled with ErrLockLost unless a renewal moves it.
	expiry time.Time
	// token is the fencing token of the write that acquired or last
	// renewed the lock.
	token string
}

// deadline returns the lock's current expiry.
func (h *heldLock) deadline() time.Time {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.expiry
}

// fencingToken returns the lock's current fencing token.
func (h *heldLock) fencingToken() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.token
}

// renewed records a write of the lock's Lease: its new expiry and token.
func (h *heldLock) renewed(expiry time.Time, token string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.expiry, h.token = expiry, token
}

// lostError is the ErrLockLost of the lock when its lease could have
// expired.
func (h *heldLock) lostError() error {
	return fmt.Errorf("%w: lock %s/%s held by %s since %s", ErrLockLost,
		h.namespace, h.name, h.holder, h.acquired.UTC().Format(time.RFC3339Nano))
}

// Token returns the fencing token of the lock that the innermost WithLock,
// Update or Do up ctx's call chain holds, and true; or "", false for a ctx
// that no fn was given. The token is the resourceVersion of the write of
// the Lease that acquired or last renewed the lock (resourcelock's
// Token), so it changes with each renewal. After the lock was lost it is
// still the last one written: the guarded system, not fn, refuses it then.
//
// Tokens of one lock grow with each acquisition and renewal, whoever makes
// them: store the token with each write that fn makes to a system outside
// the cluster, and have that system refuse a write whose token is smaller
// than the largest it stored (compare with resourcelock.CompareTokens).
// Kubernetes promises this order from 1.35; on an older server a token is
// still unique to its write, and the order holds as etcd keeps it, without
// a promise. The package doc says when writes to Kubernetes objects need
// no token.
func Token(ctx context.Context) (string, bool) {
	h := innermost(ctx)
	if h == nil {
		return "", false
	}
	token := h.fencingToken()
	return token, token != ""
}

// Holder returns the holder ID of the lock that the innermost WithLock,
// Update or Do up ctx's call chain holds (the Lease's holderIdentity, the
// Locker's identity and a fresh UUID), and true; or "", false for a ctx that
// no fn was given.
func Holder(ctx context.Context) (string, bool) {
	h := innermost(ctx)
	if h == nil {
		return "", false
	}
	return h.holder, true
}

// innermost returns the lock the call that gave ctx to its fn holds, or
// nil when ctx comes from no WithLock.
func innermost(ctx context.Context) *heldLock {
	h, _ := ctx.Value(heldKey{}).(*heldLock)
	return h
}

// holding returns the lock namespace/name that ctx's call chain holds, or
// nil.
func holding(ctx context.Context, namespace, name string) *heldLock {
	for h := innermost(ctx); h != nil; h = h.outer {
		if h.namespace == namespace && h.name == name {
			return h
		}
	}
	return nil
}

// nestedError is the ErrNestedLock of a call for a lock that its call
// chain holds.
type nestedError struct{ held *heldLock }

func (e *nestedError) Error() string {
	return fmt.Sprintf("withlock: lock %s/%s is held already by this call chain, as %s: a nested WithLock, Update or Do of it would wait for itself",
		e.held.namespace, e.held.name, e.held.holder)
}

// Is reports whether target is ErrNestedLock.
func (e *nestedError) Is(target error) bool { return target == ErrNestedLock }

// hold is how long a write of a Lease holds its lock for fn: the lease
// duration less the safety margin.
func (l *Locker) hold() time.Duration { return l.rl.LeaseDuration() - l.margin }

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
