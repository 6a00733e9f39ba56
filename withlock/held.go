package withlock

// The locks a call chain holds, kept in the ctx that WithLock gives fn: a
// nested call for one of them would wait for itself, and a call under a
// lock learns when its lock's time is up.

import (
	"context"
	"fmt"
	"time"
)

// heldKey is the key, in the ctx that WithLock gives fn, of the innermost
// lock the call chain holds.
type heldKey struct{}

// heldLock is a lock that a WithLock up the call chain holds.
type heldLock struct {
	namespace, name, holder string
	// expiry is the time, on the locker's clock, when fn's ctx is
	// cancelled with ErrLockLost.
	expiry time.Time
	// outer is the lock held around this one's WithLock, or nil.
	outer *heldLock
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
