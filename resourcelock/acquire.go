package resourcelock

// One AcquireLock call as a run of named steps: read, create (or, after a
// handoff, wait for its turn and create), claim (take over or renew), wait.
// Each step returns the step that comes next; docs/design.md draws them,
// with the requests each sends. The Lease I/O is lease.go's,
// the watches watches.go's, and the order among waiters fairness.go's.

import (
	"context"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/util/wait"
)

const (
	// maxRaces is how many races in a row AcquireLock resolves past its
	// deadline before it gives up with the last one.
	maxRaces = 4

	// firstBackoff is the first wait after a transient server error; it
	// doubles, with jitter, up to the retry interval.
	firstBackoff = 20 * time.Millisecond
)

// step is what an acquisition does next.
type step int

const (
	// stepGiveUp is what a step returns with the error that ends the call.
	stepGiveUp step = iota
	// stepRead learns the Lease: from a watch, a watch-list, or a Get.
	stepRead
	// stepCreate creates the Lease, which the call believes absent.
	stepCreate
	// stepHandoff waits for the call's turn at a Lease that its watch
	// showed deleted, then creates it.
	stepHandoff
	// stepClaim judges the Lease as read: it takes it over or renews it
	// when it is expired or lockerID's, and waits otherwise.
	stepClaim
	// stepWait waits for the held Lease to change or expire.
	stepWait
	// stepDone ends the call: lockerID holds the lock.
	stepDone
)

// standing is what the call is to the lock it asks for.
type standing int

const (
	// notHolder: this locker did not hold the Lease for lockerID when the
	// call began.
	notHolder standing = iota
	// heldBefore: it did, in version acquirer.held; the caller holds the
	// lock already, and the call renews it.
	heldBefore
	// renewing: heldBefore, and the call sent a refresh of that Lease. A
	// refresh that fails or is cancelled leaves the lock held, as it was
	// before the call.
	renewing
)

// sent is the kind of the request that failed.
type sent int

const (
	sentRead sent = iota
	// sentWrite may have made lockerID the holder, unseen.
	sentWrite
	// sentRefresh renewed a Lease the caller held already.
	sentRefresh
)

// acquirer is the state of one AcquireLock call.
type acquirer struct {
	rl              *ResourceLocker
	name, lockerID  string
	start, deadline time.Time
	backoff         wait.Backoff

	standing standing
	held     version // the Lease as this locker held it for lockerID
	// uncertain is set once a write whose outcome the call did not see
	// may have made lockerID the holder: giving up then releases the
	// Lease.
	uncertain bool

	lease *coordinationv1.Lease // as last seen; nil when absent
	until time.Time             // when lease expires, for stepWait
	races int                   // races lost in a row, without a wait
	// unread is the error of the last read, when it failed and no read
	// has succeeded since: the call then learns from its Creates whether
	// the Lease exists, and not who holds it.
	unread error

	lw    *leaseWatch // the watch of the Lease, once the call uses one
	seq   uint64      // the watch's seq when lease was taken from it
	turns turns       // the call's place among the waiters

	// firstHeld is when the call first found the lock held by another, and
	// previousHolder the holder of the expired Lease it took over, for
	// AcquireLock's metrics and log.
	firstHeld      time.Time
	previousHolder string
}

// acquire runs the steps of one AcquireLock call until lockerID holds the
// lock or the call gives up.
func (rl *ResourceLocker) acquire(ctx context.Context, name, lockerID string) (*acquirer, error) {
	start := rl.clock.Now()
	a := &acquirer{rl: rl, name: name, lockerID: lockerID, start: start, deadline: start.Add(rl.retryTimeout), backoff: rl.backoff()}
	if held, ok := rl.records.heldBy(name, lockerID); ok {
		a.standing, a.held = heldBefore, held.version
	}
	defer func() {
		if a.lw != nil {
			rl.watches.drop(a.lw)
		}
	}()
	for next := a.begin(); next != stepDone; {
		var err error
		switch next {
		case stepRead:
			next, err = a.read(ctx)
		case stepCreate:
			next, err = a.create(ctx, false)
		case stepHandoff:
			next, err = a.handoff(ctx)
		case stepClaim:
			next, err = a.claim(ctx)
		case stepWait:
			next, err = a.wait(ctx)
		}
		if err != nil {
			return a, a.giveUp(ctx, a.named(err))
		}
	}
	return a, nil
}

// begin picks the first step. A watch this locker keeps open already knows
// the Lease. Otherwise the call assumes the Lease absent and creates it,
// but for a Lease that lockers took turns at just before (the others likely
// ask again too: watch it first) and for a holder (its Create can only
// fail, and one whose outcome it could not see would leave the call unsure
// whether it made a new Lease, which a failed call releases).
func (a *acquirer) begin() step {
	if a.lw = a.rl.watches.existing(a.name); a.lw != nil {
		if next, ok := a.adopt(a.lw.state()); ok {
			return next
		}
		return stepCreate
	}
	if a.standing == heldBefore || a.rl.retryTimeout > 0 && a.rl.watches.contended(a.name) {
		return stepRead
	}
	return stepCreate
}

// read learns the Lease. It waits for the watch, if one follows the Lease;
// a call that can wait opens a watch-list, which sends the Lease first and
// then follows it; the rest read it. A try-lock reads, and so does a holder,
// which will likely renew it without waiting.
func (a *acquirer) read(ctx context.Context) (step, error) {
	if next, ok := a.awaitWatch(ctx); ok {
		return next, nil
	}
	if a.lw == nil && a.standing == notHolder && a.rl.clock.Now().Before(a.deadline) {
		rctx, cancel := a.readContext(ctx)
		a.lw = a.rl.watches.sync(rctx, a.name)
		cancel()
		if a.lw != nil {
			if next, ok := a.adopt(a.lw.state()); ok {
				return next, nil
			}
			return stepRead, nil
		}
	}
	if err := a.get(ctx); err != nil {
		return a.readFailed(ctx, err)
	}
	if a.lease == nil {
		return stepCreate, nil
	}
	return stepClaim, nil
}

// handoff waits for the call's turn at a Lease its watch showed deleted,
// and creates it then, unless another waiter's Lease comes first. Past its
// deadline (a try-lock's is its start) the call takes no turn: it creates
// at once, and its Create is no handoff that tunes the herd's gap.
func (a *acquirer) handoff(ctx context.Context) (step, error) {
	if !a.rl.clock.Now().Before(a.deadline) {
		return stepCreate, nil
	}
	mine, err := a.awaitTurn(ctx)
	if err != nil {
		return stepGiveUp, err
	}
	if !mine {
		return stepClaim, nil
	}
	return a.create(ctx, true)
}

// create creates the Lease; handoff is set when the call waited its turn.
func (a *acquirer) create(ctx context.Context, handoff bool) (step, error) {
	if err := ctx.Err(); err != nil {
		return stepGiveUp, err
	}
	// Real time: rtt measures a request for the cohort's spread (see
	// turns.widen), and judges no Lease.
	wctx, cancel, err := a.writeContext(ctx)
	if err != nil {
		return a.failed(ctx, err, sentWrite)
	}
	sentAt := time.Now()
	lease, err := a.rl.leases.create(wctx, a.name, a.lockerID, a.turns.handoffs)
	err = ownTimeout(wctx, err)
	cancel()
	a.turns.rtt = time.Since(sentAt)
	if err == nil {
		return a.acquired(ctx, lease, handoff, false)
	}
	a.rl.metrics.APIError(a.name, err)
	if !apierrors.IsAlreadyExists(err) {
		return a.failed(ctx, err, sentWrite)
	}
	if a.unread != nil {
		return a.unreadable(ctx)
	}
	if handoff {
		a.lostHandoff(true)
	} else {
		// Held when the call came: others may have asked together with it.
		a.turns.widen()
	}
	return a.raced(err, stepRead)
}

// claim takes the Lease over when it is free, renews it when lockerID holds
// it, and waits otherwise, until the deadline.
func (a *acquirer) claim(ctx context.Context) (step, error) {
	rl := a.rl
	now := rl.clock.Now()
	expired, until := rl.leases.expired(a.lease, now)
	previous := holder(a.lease)
	if previous != a.lockerID && !expired {
		if a.firstHeld.IsZero() {
			a.firstHeld = now
		}
		if !now.Before(a.deadline) {
			// Another holds it: no write of this call's won, and there is
			// nothing to release.
			a.uncertain = false
			return stepGiveUp, &HeldError{Namespace: rl.namespace, Name: a.name, LockerID: a.lockerID, Holder: previous, Until: until, Waited: now.Sub(a.start)}
		}
		a.until = until
		return stepWait, nil
	}
	if err := ctx.Err(); err != nil {
		return stepGiveUp, err
	}
	kind := sentWrite
	if previous == a.lockerID && !expired && a.renews(a.lease) {
		kind, a.standing = sentRefresh, renewing
	}
	wctx, cancel, err := a.writeContext(ctx)
	if err != nil {
		return a.failed(ctx, err, kind)
	}
	lease, err := rl.leases.claim(wctx, a.lease, a.lockerID)
	err = ownTimeout(wctx, err)
	cancel()
	if err == nil {
		if previous != a.lockerID {
			a.previousHolder = previous
		}
		return a.acquired(ctx, lease, false, kind == sentRefresh)
	}
	rl.metrics.APIError(a.name, err)
	switch {
	case apierrors.IsConflict(err):
		return a.raced(err, stepRead)
	case apierrors.IsNotFound(err):
		a.lease = nil
		return a.raced(err, stepCreate)
	}
	return a.failed(ctx, err, kind)
}

// renews reports whether a write of lease renews the Lease as this locker
// held it for lockerID when the call began, or as an earlier refresh of
// this call (whose response may have been lost) left it.
func (a *acquirer) renews(lease *coordinationv1.Lease) bool {
	switch a.standing {
	case heldBefore:
		return versionOf(lease) == a.held
	case renewing:
		return lease.UID == a.held.uid
	}
	return false
}

// acquired ends the call after a write made lockerID the holder: it shows
// the Lease to the locker's other waiters, and tunes the herd's gap after a
// handoff. If the caller cancelled while the write was in flight, the call
// gives up and releases the lock, but for a refresh, which leaves the lock
// the caller held before it.
func (a *acquirer) acquired(ctx context.Context, lease *coordinationv1.Lease, handoff, refresh bool) (step, error) {
	if a.lw != nil {
		if handoff {
			a.lw.won()
		}
		a.lw.set(lease)
	}
	if err := ctx.Err(); err != nil {
		a.uncertain = !refresh
		return stepGiveUp, err
	}
	return stepDone, nil
}
