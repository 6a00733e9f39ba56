package resourcelock

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	utilnet "k8s.io/apimachinery/pkg/util/net"
)

var (
	// ErrLockHeld is returned when a lock cannot be acquired within the retry
	// timeout because another locker holds it.
	ErrLockHeld = errors.New("resourcelock: lock is held by another locker")
	// ErrNotHeld is in the error of a Renew of a lock that its lockerID
	// does not hold (any more).
	ErrNotHeld = errors.New("resourcelock: lock is not held by this lockerID")

	errNilLocker     = errors.New("resourcelock: ResourceLocker is nil: build one with NewResourceLocker")
	errNilClient     = errors.New("resourcelock: client is nil")
	errEmptyLockerID = errors.New("resourcelock: invalid lockerID \"\": must not be empty")
	// errOutOfTime is why a write is not sent: the call's end has come.
	errOutOfTime = errors.New("resourcelock: the call's time ran out before the write was sent")
	// errRequestBound is in the error of a request that did not finish
	// within the call's bound (see lastRequest).
	errRequestBound = errors.New("resourcelock: a request did not finish within the call's time (its retry timeout, and 2s past it)")
	// errWatchListUnanswered is why a locker stops asking for watch-lists
	// when one sent nothing in time (see watchRegistry.sync).
	errWatchListUnanswered = errors.New("resourcelock: the watch-list sent no initial events in time")
)

// HeldError is the ErrLockHeld that AcquireLock returns: it names the Lease,
// the caller, the holder, and when the holder's claim runs out.
// errors.Is(err, ErrLockHeld) holds for it; use errors.As to read the
// fields.
type HeldError struct {
	// Namespace and Name name the Lease.
	Namespace, Name string
	// LockerID is the caller's.
	LockerID string
	// Holder is the Lease's holderIdentity when AcquireLock gave up, ""
	// when it could not be told.
	Holder string
	// Until is when the Lease expires on this locker's clock, or the zero time
	// when it cannot be told.
	Until time.Time
	// Waited is how long AcquireLock retried before it gave up.
	Waited time.Duration

	// race is the error of this locker's last write, which another
	// locker's write beat, when AcquireLock gave up racing them rather than
	// waiting.
	race error
	// unread is the error of the last read of the Lease, when AcquireLock
	// could not read it and learned from a Create that it exists.
	unread error
}

func (e *HeldError) Error() string {
	op := acquireOp(e.Namespace, e.Name, e.LockerID)
	switch {
	case e.unread != nil:
		return fmt.Sprintf("%s: held by a locker that could not be told, since the Lease could not be read (gave up after %v): %v; "+
			"if the client reads from an informer cache, as a manager's GetClient() does, that needs list and watch on Leases in every namespace: "+
			"give the locker a client that reads from the API server, as withlock.NewForCluster does",
			op, e.Waited, e.unread)
	case e.race != nil:
		return fmt.Sprintf("%s: kept by other lockers, whose writes beat this one's for %v (last: %v)", op, e.Waited, e.race)
	}
	return fmt.Sprintf("%s: held by %q until %s (gave up after %v)", op, e.Holder, formatUntil(e.Until), e.Waited)
}

// acquireOp and releaseOp name a call in its errors.
func acquireOp(namespace, name, lockerID string) string {
	return fmt.Sprintf("resourcelock: acquire lock %s/%s for %q", namespace, name, lockerID)
}

func releaseOp(namespace, name, lockerID string) string {
	return fmt.Sprintf("resourcelock: release lock %s/%s held by %q", namespace, name, lockerID)
}

// formatUntil formats when a Lease expires; the zero time is unknown.
func formatUntil(until time.Time) string {
	if until.IsZero() {
		return "an unknown time"
	}
	return until.UTC().Format(time.RFC3339Nano)
}

// Is reports whether target is ErrLockHeld.
func (e *HeldError) Is(target error) bool { return target == ErrLockHeld }

// Unwrap returns the error of the last lost race, when AcquireLock gave up
// racing other lockers, so that apierrors.IsConflict and
// apierrors.IsAlreadyExists see it, or of the read that failed, when it
// could not read the Lease; nil otherwise.
func (e *HeldError) Unwrap() error {
	if e.unread != nil {
		return e.unread
	}
	return e.race
}

// transient reports whether err is worth retrying: the server was busy or
// unreachable, and may answer differently soon.
func transient(err error) bool {
	var status apierrors.APIStatus
	if errors.As(err, &status) {
		code := status.Status().Code
		return code == http.StatusTooManyRequests || code >= http.StatusInternalServerError ||
			apierrors.IsServerTimeout(err) || apierrors.IsTimeout(err) || apierrors.IsTooManyRequests(err)
	}
	// No answer from the server: a request timeout of the client's own or
	// the call's (the caller's ctx is checked before this), or a lost
	// connection.
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, errRequestBound) {
		return true
	}
	if _, ok := errors.AsType[net.Error](err); ok {
		return true
	}
	return utilnet.IsConnectionRefused(err) || utilnet.IsConnectionReset(err) || utilnet.IsProbableEOF(err)
}

// unsent reports whether err says that the request never reached the
// server: the connection was refused, or the call's time ran out first.
func unsent(err error) bool { return utilnet.IsConnectionRefused(err) || errors.Is(err, errOutOfTime) }

// rejected reports whether the server answered a write with a client error
// (4xx), so the write certainly did not take effect.
func rejected(err error) bool {
	var status apierrors.APIStatus
	if !errors.As(err, &status) {
		return false
	}
	code := status.Status().Code
	return code >= http.StatusBadRequest && code < http.StatusInternalServerError
}
