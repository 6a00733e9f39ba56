package resourcelock

// The waits of an acquisition: for the held Lease to change or expire (on
// its watch, or polling), for the watch to show what a read would, and for
// the call's turn after a handoff. Every wait is on the locker's clock.

import (
	"context"
	"time"
)

// wait waits for the held Lease to change: on its watch when the client can
// watch, polling at the retry interval otherwise. Either way it wakes when
// the Lease would expire and at the deadline, and then judges it again.
func (a *acquirer) wait(ctx context.Context) (step, error) {
	rl := a.rl
	a.races = 0
	if a.lw == nil {
		if next := a.watchHeld(ctx); next != stepWait {
			return next, nil
		}
	}
	now := rl.clock.Now()
	var s watchState
	if a.lw != nil {
		s = a.lw.state()
	}
	if !s.healthy {
		if err := rl.sleep(ctx, rl.pollWait(now, a.until, a.deadline)); err != nil {
			return stepGiveUp, err
		}
		return stepRead, nil
	}
	if s.seq != a.seq {
		next, _ := a.follow(s)
		return next, nil
	}
	d := a.deadline.Sub(now)
	if !a.until.IsZero() {
		// A millisecond past the expiry, so that the next judgement sees
		// it expired.
		d = min(d, a.until.Sub(now)+time.Millisecond)
	}
	timeout, stop := rl.timer(d)
	defer stop()
	select {
	case <-ctx.Done():
		return stepGiveUp, ctx.Err()
	case <-timeout:
		return stepClaim, nil // it expired, or time is up
	case <-s.changed:
		if next, ok := a.follow(a.lw.state()); ok {
			return next, nil
		}
		return stepRead, nil // the watch ended: read, then poll
	}
}

// watchHeld starts watching the held Lease from the version the call read,
// and returns stepWait to wait on it (or to poll, without a watch). When
// another call's watch, opened meanwhile, knows another version than this
// call read, older or newer, waiting for its next change could miss a
// deletion it has already shown, and taking its version could go back to
// an older one: the call reads the Lease again, and returns the step that
// follows the read, to wait on the watch from there.
func (a *acquirer) watchHeld(ctx context.Context) step {
	rctx, cancel := a.readContext(ctx)
	a.lw = a.rl.watches.watch(rctx, a.lease)
	cancel()
	if a.lw == nil {
		if !a.rl.noWatch {
			a.rl.watches.polling(logFor(ctx, a.rl.log), a.rl.retryInterval)
		}
		return stepWait
	}
	s := a.lw.state()
	a.seq = s.seq
	if !s.healthy || !s.synced || s.lease != nil && versionOf(s.lease) == versionOf(a.lease) {
		return stepWait
	}
	if err := a.get(ctx); err != nil {
		return stepRead
	}
	if a.lease == nil {
		return stepCreate
	}
	return stepClaim
}

// adopt takes the Lease as the watch shows it, if the watch is healthy, and
// returns the step that follows: a Lease the watch shows deleted is a
// handoff among its waiters.
func (a *acquirer) adopt(s watchState) (step, bool) {
	if !s.healthy {
		return stepRead, false
	}
	a.lease, a.seq = s.lease, s.seq
	a.unread = nil
	if s.lease == nil {
		return stepHandoff, true
	}
	return stepClaim, true
}

// follow adopts the Lease as the watch shows it after a wait, and counts a
// handoff that another waiter won if the Lease now has another holder or is
// another Lease: the watch keeps only its last state, so a deletion and the
// next Create can reach a waiter as one change.
func (a *acquirer) follow(s watchState) (step, bool) {
	prev := a.lease
	next, ok := a.adopt(s)
	if ok && prev != nil && a.lease != nil && (a.lease.UID != prev.UID || holder(a.lease) != holder(prev)) {
		a.turns.handoffs++
	}
	return next, ok
}

// awaitWatch waits, when a healthy watch follows the Lease, for the watch to
// show what a read would: after a lost race the winner's Lease is on its
// way. It reports false when the caller should read the Lease instead.
func (a *acquirer) awaitWatch(ctx context.Context) (step, bool) {
	if a.lw == nil {
		return stepRead, false
	}
	s := a.lw.state()
	if !s.healthy {
		return stepRead, false
	}
	if s.seq != a.seq {
		return a.adopt(s)
	}
	// Past the deadline (a try-lock's is its start) the call does not wait:
	// it reads.
	left := a.deadline.Sub(a.rl.clock.Now())
	if left <= 0 {
		return stepRead, false
	}
	t := a.rl.clock.NewTimer(min(a.rl.retryInterval, left))
	defer t.Stop()
	select {
	case <-ctx.Done():
		return stepRead, false
	case <-t.C():
		return stepRead, false
	case <-s.changed:
		return a.adopt(a.lw.state())
	}
}

// awaitTurn waits the call's head start (see herd.delayFor) at a Lease its
// watch showed deleted. It reports false when the watch shows another
// waiter's Lease first.
//
// A locker that deleted the Lease itself knows before the watch shows it, a
// round trip before every other waiter. Its head start begins when its own
// watch shows the deletion, as theirs do (or after maxConfirm): otherwise a
// releaser that asks again at once would win every handoff it ties.
func (a *acquirer) awaitTurn(ctx context.Context) (bool, error) {
	rl := a.rl
	var turn <-chan time.Time // nil until the deletion is confirmed
	var stop func() bool
	defer func() {
		if stop != nil {
			stop()
		}
	}()
	startTurn := func() {
		d, cohort := a.lw.headStart(a.turns)
		a.turns.cohort = cohort
		turn, stop = rl.timer(d)
	}
	confirm := rl.clock.NewTimer(maxConfirm)
	defer confirm.Stop()
	confirmC := confirm.C()
	for {
		s := a.lw.state()
		if s.seq != a.seq && s.lease != nil {
			if _, ok := a.adopt(s); ok {
				a.lostHandoff(false)
				return false, nil
			}
		}
		if turn == nil && (!s.unconfirmed || !s.healthy) {
			startTurn()
		}
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case <-turn:
			return true, nil
		case <-confirmC:
			if turn == nil { // the watch never showed it
				startTurn()
			}
			confirmC = nil
		case <-s.changed:
		}
	}
}

// get reads the Lease into a.lease, within the read's bound.
func (a *acquirer) get(ctx context.Context) error {
	rctx, cancel := a.readContext(ctx)
	lease, err := a.rl.leases.get(rctx, a.name)
	err = ownTimeout(rctx, err)
	cancel()
	if err != nil {
		if ctx.Err() == nil { // a cancel is no error of the server's
			a.rl.metrics.APIError(a.name, err)
		}
		return err
	}
	a.lease, a.unread = lease, nil
	return nil
}

// lostHandoff counts a handoff that another waiter won after the call waited
// its turn: its Create collided with the winner's, or it saw the winner's
// Lease first.
func (a *acquirer) lostHandoff(collided bool) {
	if a.turns.lost(collided) {
		// A cohort sees many more handoffs: stop paying for a compressed
		// event each.
		a.rl.watches.busy(a.lw)
	}
	if collided {
		a.lw.collided()
	}
}
