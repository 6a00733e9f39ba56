package resourcelock

// What a locker's watches were refused, and what it tells of that: a
// watch or watch-list the server refused is not asked for again for a
// while, and each refusal, like a client that cannot watch at all, is
// logged once.

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
)

// noWatches turns watches off for watchListRecheck, and logs why the first
// time.
func (reg *watchRegistry) noWatches(log logr.Logger, why error) {
	if reg.watches.refused(reg.clock.Now(), watchListRecheck) {
		log.Info("watch of Leases refused: waiters poll at the retry interval instead, and ask again every "+watchListRecheck.String()+"; grant watch on leases for the fast path",
			"namespace", reg.namespace, "reason", why.Error())
	}
}

// polling tells, once, why a call polls: the locker's client cannot watch.
func (reg *watchRegistry) polling(log logr.Logger, retryInterval time.Duration) {
	if reg.client != nil || reg.pollLogged.Swap(true) {
		return
	}
	log.Info("the locker's client cannot watch: waiters poll the Lease every retry interval, and a released lock waits that long for its next holder; "+
		"for the fast path build the locker with withlock.NewForCluster or withlock.NewForConfig, or pass resourcelock.WithWatchClient",
		"namespace", reg.namespace, "retryInterval", retryInterval)
}

// logFor is ctx's logger, or fallback when ctx carries none.
func logFor(ctx context.Context, fallback logr.Logger) logr.Logger {
	if log, err := logr.FromContext(ctx); err == nil {
		return log
	}
	return fallback
}

// refusal is a kind of request that the server refused, or the client
// ignored: the registry does not send it again until the refusal's time
// is up (on the registry's clock), and logs the first refusal.
type refusal struct {
	until  atomic.Int64 // UnixNano; 0 while none was refused
	logged atomic.Bool
}

// refused records a refusal at now, for d, and reports whether it is the
// first, to log.
func (r *refusal) refused(now time.Time, d time.Duration) (first bool) {
	r.until.Store(now.Add(d).UnixNano())
	return !r.logged.Swap(true)
}

// active reports whether a refusal's time is not up at now.
func (r *refusal) active(now time.Time) bool {
	until := r.until.Load()
	return until != 0 && now.UnixNano() < until
}
