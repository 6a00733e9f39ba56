package withlock

// The life of a Locker: Close, and Start, by which a manager closes it when
// it stops.

import (
	"context"
	"io"

	"sigs.k8s.io/controller-runtime/pkg/manager"
)

var (
	_ io.Closer                      = (*Locker)(nil)
	_ manager.Runnable               = (*Locker)(nil)
	_ manager.LeaderElectionRunnable = (*Locker)(nil)
)

// Close ends the calls waiting in AcquireLock with ErrClosed, makes every
// later WithLock and Update through l return ErrClosed before any request,
// and stops the removal of leftover Leases and the check of the server's
// release, waiting for them to end.
// When NewForCluster or NewForConfig built l's ResourceLocker, Close closes
// it too, which ends its watches.
//
// A fn that runs when Close is called goes on: its ctx is not cancelled,
// its lock is renewed until it returns, and released then, as always.
// Ending a holder's renewals would only turn its lock into one that
// expires under it; the caller's ctx is what stops fn. Close is safe to
// call more than once and concurrently with any call; it returns nil, and
// an error only to be an io.Closer.
func (l *Locker) Close() error {
	if l == nil || l.cancel == nil {
		return nil
	}
	l.cancel(ErrClosed)
	l.background.Wait()
	if l.closeBuilt != nil {
		l.closeBuilt()
	}
	return nil
}

// Start blocks until ctx ends or l is closed, and then closes l: it makes
// l a manager.Runnable, which NewForCluster adds to a manager, so that l
// closes when the manager stops. It returns nil.
func (l *Locker) Start(ctx context.Context) error {
	if l == nil || l.stop == nil {
		<-ctx.Done()
		return nil
	}
	select {
	case <-ctx.Done():
	case <-l.stop.Done():
	}
	return l.Close()
}

// NeedLeaderElection returns false: a Locker serves every replica, not
// only the leader, so a manager starts it on each.
func (l *Locker) NeedLeaderElection() bool { return false }

// acquireContext returns a copy of ctx that is also cancelled, with cause
// ErrClosed, when l is closed, and the function that releases it. It
// starts no goroutine until l is closed.
func (l *Locker) acquireContext(ctx context.Context) (context.Context, func()) {
	actx, cancel := context.WithCancelCause(ctx)
	unregister := context.AfterFunc(l.stop, func() { cancel(ErrClosed) })
	return actx, func() {
		unregister()
		cancel(nil)
	}
}
