// Package resourcelock provides distributed locking for Kubernetes resources
// using coordination.k8s.io/v1 Lease objects.
//
// Locks are short-lived (held for milliseconds during a single write) and are
// not renewed in the background. This makes the implementation simpler than a
// full leader-election library while still being safe for serializing
// concurrent access to a shared resource (e.g. a ConfigMap) across replicas.
//
// Usage:
//
//	rl := resourcelock.NewResourceLocker(client, "my-namespace")
//	if err := rl.AcquireLock(ctx, "my-lock", "holder-abc"); err != nil { ... }
//	defer func() {
//		// Release even once ctx is cancelled (a manager's is, at
//		// shutdown: with a cancelled ctx ReleaseLock returns at once, and
//		// the Lease stays until it expires), but not for ever: a request
//		// on a ctx without a deadline waits as long as the server does.
//		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
//		defer cancel()
//		if err := rl.ReleaseLock(ctx, "my-lock", "holder-abc"); err != nil { ... }
//	}()
//
// # What a lock promises
//
// At most one lockerID holds a lock name at a time, as long as every holder
// finishes its critical section within the lease duration. The API server
// decides every race: acquire creates the Lease or updates it with the
// resourceVersion it read, and release deletes it with preconditions on the UID
// and resourceVersion it holds, so a slow replica can never delete a Lease that
// another holder has taken over.
//
// Renew extends a held lock by a lease duration, with one Update and no
// read; withlock renews in the background while its function runs. Token
// gives the fencing token of a held lock: the resourceVersion of the write
// that acquired or last renewed it, which grows with every acquisition of a
// name, whoever makes it (CompareTokens).
//
// # What it does not promise
//
// A holder that is paused past its lease duration (a long GC pause, a
// stalled node) can still write after another holder has taken the lock
// over: only a write that is checked can be refused. Use the guarded
// object's own resourceVersion (an Update, not a blind Patch) where a lost
// update would matter, and have a system outside the cluster check the
// fencing token.
//
// # Requests
//
// An uncontended AcquireLock and ReleaseLock cost two requests: the Create,
// and a Delete with the preconditions remembered from the acquire. A waiter
// watches the Lease when the client can watch (client.NewWithWatch, or
// WithWatchClient) and retries the moment it is released; the waiters of one
// locker share one watch per Lease, which Close ends. The watch sends the Lease first (a
// watch-list), so a waiter does not read it; where the server does not serve
// watch-lists, a waiter reads the Lease, then watches it. The server
// compresses each event of a watch-list on its own, so once the Lease looks
// busy (an AcquireLock takes up a watch that outlived its last waiter, or a
// waiter that asked with many others loses a handoff) the locker replaces
// it with a plain watch: one request, once. Without a watch they poll at the retry
// interval. When a Lease is released, waiters take turns by how many handoffs
// they have waited through, which each new holder records on its Lease
// (HandoffsAnnotation), so a release does not make every waiter send a
// Create. For a minute after a locker saw lockers take turns at a Lease, it
// watches the Lease before it creates it: replicas that ask together again
// do not all send a Create that all but one would lose.
//
// # Clocks
//
// A Lease is expired when its renewTime (or acquireTime) plus its
// leaseDurationSeconds lies in the past on the clock of the locker that reads
// it. Takeover is therefore only as safe as the clocks of the replicas agree:
// a locker whose clock runs ahead of the holder's by more than the slack
// between the critical section and the lease duration can take the lock over
// while the holder still writes. Keep node clocks synchronised (NTP), as
// Kubernetes itself requires.
//
// A Lease whose renewTime lies in the future (the holder's clock runs ahead)
// does not block forever: once a locker has seen the same Lease (UID and
// resourceVersion) unchanged for a full lease duration on its own clock, it
// treats the Lease as expired. This is the rule client-go's leaderelection
// uses for every lease.
//
// A Lease with no holderIdentity or no leaseDurationSeconds is free.
//
// # Metrics
//
// A locker records leaselock_acquire_duration_seconds (by result: acquired,
// held, cancelled, error), leaselock_wait_duration_seconds,
// leaselock_hold_duration_seconds, leaselock_contended_acquisitions_total,
// leaselock_expired_takeovers_total, leaselock_release_taken_over_total and
// leaselock_api_errors_total (by kind) with controller-runtime's
// metrics.Registry, which a manager serves on /metrics; WithMetrics chooses
// another registerer, or none. They carry no holder label, and a lock label
// only with WithLockNameLabel. Every locker on one registerer shares its
// labels: the first to register there decides. A withlock.Locker counts
// leaselock_locks_lost_total through its ResourceLocker.
package resourcelock
