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
// # What it does not promise
//
// There is no fencing token. A function that ignores its ctx and keeps writing
// after ErrLockLost can overlap with the next holder. Keep fn far shorter than
// the lease duration, pass its ctx to every request, and prefer writes that
// carry a resourceVersion, as Update does, so that a late write fails with
// Conflict instead of overwriting.
package withlock
