// Package withlock runs a function while holding a resourcelock lock, and
// makes the safe path the short one: it makes a holder ID for every
// acquisition, always releases (after an error, a panic or a cancelled ctx),
// and tells the function when its lock may have ended.
//
//	err := withlock.Do(ctx, rl, "settings", func(ctx context.Context) error {
//		// read, modify and write the shared object here
//	})
//
// Update reads an object, applies a mutation and writes it back under a lock
// named after the object, retrying on Conflict.
//
// # Which constructor
//
// In a controller-runtime program, build the Locker with NewForCluster(mgr,
// namespace): its Leases go through an uncached client that watches them
// (a manager's GetClient() cannot watch, and its cache of Leases needs list
// and watch in every namespace, which the least Role of examples/rbac.yaml
// does not grant), Update reads through the manager's API reader, it logs
// through the manager's logger, and it closes when the manager stops. A
// program without a manager uses NewForConfig(cfg, namespace), and calls
// Close when done. Both remove, now and then, the Leases that holders left
// behind expired (WithLeftoverRemoval). New wraps a ResourceLocker built by
// hand, and starts nothing in the background.
//
// # What it promises
//
// Release is attempted exactly once per acquisition, on a context of its own
// (context.WithoutCancel with a bounded timeout), so a caller whose ctx was
// cancelled does not leave its lock held until it expires. Locks are not
// renewed: the ctx given to fn is cancelled, with cause ErrLockLost, when the
// lease could have expired (the renewTime the acquire wrote plus the lease
// duration, less a safety margin), and the call then returns ErrLockLost even
// if fn returned nil.
//
// A call given the ctx of a fn, for a lock its call chain holds already,
// returns ErrNestedLock at once rather than wait for itself. Close ends the
// calls that wait for a lock with ErrClosed, and a fn that runs still has
// its lock released.
//
// # What it does not promise
//
// There is no fencing token. A function that ignores its ctx and keeps writing
// after ErrLockLost can overlap with the next holder. Keep fn far shorter than
// the lease duration, pass its ctx to every request, and prefer writes that
// carry a resourceVersion, as Update does, so that a late write fails with
// Conflict instead of overwriting.
//
// A nested call is seen only through the ctx: one given another ctx (a
// context.Background(), a ctx kept from before fn ran) for a lock that its
// own call chain holds waits for it, and ends with ErrLockHeld.
package withlock
