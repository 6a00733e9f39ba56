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
// cancelled does not leave its lock held until it expires.
//
// The lock is renewed while fn runs, about every third of the lease
// duration, and each renewal moves the time the lease could expire; a fn
// that returns sooner sends no renewal. The lease so bounds only how long a
// holder that crashed, or lost the API server, blocks the others, not how
// long fn may take: keep it short. The ctx given to fn is cancelled with
// cause ErrLockLost when renewals failed until the lease could have
// expired (the renewTime of the last write plus the lease duration, less a
// safety margin), or as soon as a renewal finds another holder in the
// Lease; the call then returns ErrLockLost even if fn returned nil.
// WithMaxHold caps a hold (none by default), with ErrMaxHold;
// WithoutRenewal turns renewal off, which makes the lease a timeout on fn.
//
// A call given the ctx of a fn, for a lock its call chain holds already,
// returns ErrNestedLock at once rather than wait for itself. Close ends the
// calls that wait for a lock with ErrClosed; a fn that runs keeps its lock,
// renewed, until it returns, and then has it released.
//
// # Fencing
//
// A holder can outlive its lock without knowing it: a process paused (a
// long GC, a stopped VM, a node under pressure) past its lease may resume
// and write before the timer that ends its ctx has run. Token(ctx) gives fn
// the lock's fencing token, the resourceVersion of the write of the Lease
// that acquired or last renewed the lock, which grows with each
// acquisition and renewal:
//
//   - For a system outside the cluster (a database, a bucket), store the
//     token with each write, in the same transaction, and have the system
//     refuse a write whose token is smaller than the largest stored
//     (resourcelock.CompareTokens): a holder paused past its lease fails
//     there.
//   - For Kubernetes objects, a write that carries the resourceVersion
//     read under the lock (as Update's writes do) fails with Conflict when
//     anyone wrote the object since that read, so a paused holder never
//     overwrites a write it did not see. That is enough when each write
//     derives from the object as read in the same attempt, as Update's
//     mutate must. It is not enough for what a holder does elsewhere with
//     what it read: a paused holder and the next one may both read one
//     version, or the paused one may read after the next one wrote, and
//     either way its write can land while the next one holds the lock. Nor
//     does it fence blind writes: an Update without a resourceVersion, a
//     patch without one, a server-side apply with force.
//
// Update does not stamp tokens on the objects it writes: docs/design.md
// works the cases through and says why. Kubernetes promises the order of
// resourceVersions from 1.35; on an older server a token is still unique to
// its write and grows in etcd's order, which kube-apiserver keeps without
// promising it. A Locker from NewForCluster or NewForConfig asks the
// server's release once, in the background, and logs once when it is
// older than 1.35.
//
// # What it does not promise
//
// Exclusion in time holds only while every holder's process keeps running
// and its clock agrees with the others' within the margin: a holder paused
// past its lease, or whose fn ignores its ctx and keeps writing after
// ErrLockLost, can overlap with the next holder. Pass fn's ctx to every
// request, and fence the writes that matter (above).
//
// A nested call is seen only through the ctx: one given another ctx (a
// context.Background(), a ctx kept from before fn ran) for a lock that its
// own call chain holds waits for it, and ends with ErrLockHeld.
package withlock
