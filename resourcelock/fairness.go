package resourcelock

// Fairness among the waiters of one Lease: when a Lease they all wait for is
// deleted, which of them creates the next one first. This file holds every
// input and every decision of that policy, as pure functions of two small
// values: herd, what a watch learned about the waiters of its Lease, and
// turns, one call's place among them. The rest of the package only feeds
// them and waits as they say. docs/design.md gives the rule in one
// paragraph.

import (
	"math/rand/v2"
	"time"
)

const (
	// minGap and maxGap bound the gap between the head starts of waiters
	// that have waited a different number of handoffs; firstGap is where a
	// Lease's gap starts. See herd.delayFor.
	minGap   = time.Millisecond
	firstGap = 2 * time.Millisecond
	maxGap   = 10 * time.Millisecond

	// headTie is the tie-break of a call whose Creates have not collided;
	// see tieWindow.
	headTie = minGap / 4

	// maxSpread bounds the tie-break of a waiter in a cohort bigger than
	// the queue its watch knows; see herd.delayFor.
	maxSpread = 32 * time.Millisecond

	// maxConfirm bounds how long a releaser waits for its watch to show its
	// own deletion before it starts its head start.
	maxConfirm = 50 * time.Millisecond

	// contendedFor is how long after its watch closed a Lease that lockers
	// took turns at counts as contended; see herd.contended.
	contendedFor = time.Minute
)

// herd is what a watch learns about the waiters of its Lease. A watch that
// closes leaves it to the next watch of the same Lease.
type herd struct {
	// gap separates the head starts of waiters a handoff apart.
	gap time.Duration
	// queue estimates how many lockers take turns at the Lease: one more
	// than the most handoffs a recent winner waited. queueAge counts the
	// Leases seen since; after twice queue of them the estimate starts again
	// from the last winner, so lockers that left stop counting.
	queue, queueAge int
	// ended is when the watch that learned this closed.
	ended time.Time
}

// newHerd is what a watch knows of a Lease it never saw.
func newHerd() herd { return herd{gap: firstGap} }

// sawWinner updates the queue estimate from a new Lease whose holder waited
// waited handoffs (HandoffsAnnotation).
func (h *herd) sawWinner(waited int) {
	if h.queueAge++; waited+1 >= h.queue || h.queueAge > 2*h.queue {
		h.queue, h.queueAge = waited+1, 0
	}
}

// contended reports whether, at now, lockers took turns at the Lease shortly
// before. Replicas that reconcile the same events ask again together, and
// all but one of their Creates would fail: such an acquire watches the
// Lease first, and creates it only when the watch shows it absent.
func (h herd) contended(now time.Time) bool {
	return h.queue > 1 && now.Sub(h.ended) < contendedFor
}

// collided widens the gap after a delayed Create of this locker lost a race.
func (h *herd) collided() { h.gap = min(h.gap*3/2, maxGap) }

// won narrows the gap after a delayed Create that won. It narrows by far
// less than a collision widens it, so the gap settles where about one
// delayed Create in fifteen collides (1.5^p x 0.97^(1-p) = 1): the head of
// the queue almost always goes first, so a wide gap costs a handoff only
// when it does not, while a gap narrower than the time a new Lease takes
// to reach the others makes the next waiter send a Create that fails.
func (h *herd) won() { h.gap = max(h.gap*97/100, minGap) }

// delayFor returns how long a waiter in place t waits, seen after the
// deletion, before it creates the Lease, and whether it is tied with a
// cohort its watch cannot count. rounds is how many handoffs the last
// winner waited, read from its Lease.
//
// Every waiter saw the deletion at about the same moment. The first whose
// delay ends creates the Lease; the others see it arrive during their own
// delay and go on waiting, instead of sending a Create that would fail. The
// longest waiter goes first: the delay is one gap for every handoff fewer
// than rounds that the waiter lost, plus a random tie-break (tieWindow). In
// a steady queue rounds is the number of other waiters, so the head of the
// queue goes at once and each waiter behind it a gap later.
//
// A waiter tied with a cohort that the queue estimate does not cover (every
// winner so far waited as many handoffs as the queue was known to hold, as
// when many replicas asked together for the first time) cannot count its
// peers. Its tie-break is its spread (see turns.widen), but at most rounds
// gaps: a locker that asks again after its turn waits that long, and must
// not go before the cohort.
func (h herd) delayFor(rounds int, t turns, seen time.Duration) (time.Duration, bool) {
	tie := tieWindow(h.gap, t.collisions, peers(t.handoffs, rounds, h.queue))
	cohort := tied(t.handoffs, rounds) && h.queue <= rounds+1
	if cohort {
		tie = max(tie, min(t.spread, time.Duration(rounds)*h.gap))
	}
	return delay(rounds-t.handoffs, h.gap, tie, seen), cohort
}

// tieWindow is the random part of a head start: headTie for a call whose
// Creates have not collided, doubling with each collision up to the least
// gap, and half a gap more for each peer (see peers). Waiters a gap apart
// need no tie-break, and the head of the queue should not wait for one; a
// wider gap (fewer Creates that collide) must not slow it down, so its
// tie-break does not grow with the gap. Waiters that collided are tied with
// others and spread out. Peers cannot be ordered at all: spread over half a
// gap each, the first of them to go is usually alone, and the others see
// its Lease before their own delay ends.
func tieWindow(gap time.Duration, collisions, peers int) time.Duration {
	return headTie<<min(collisions, 2) + time.Duration(peers)*gap/2
}

// peers estimates how many other waiters are tied with one that lost lost
// handoffs. Lockers that asked together, as replicas do that all saw the
// same event, lose every handoff together, so handoffs waited cannot order
// them. The last winner of such a cohort had waited rounds handoffs, so
// rounds+1 of a cohort as big as the queue have had their turn, and
// queue-2-rounds others still wait. Its peers have lost one handoff more
// than it had, or, when it waited none (the first of the cohort, whose
// Create came first), none either: they arrived while it held the lock. A
// waiter that lost any other count has no known peers: the head of a queue
// served in order has lost as many as the last winner, who had waited.
func peers(lost, rounds, queue int) int {
	if !tied(lost, rounds) {
		return 0
	}
	return max(queue-2-rounds, 0)
}

// tied reports whether a waiter that lost lost handoffs, when the last
// winner had waited rounds, is tied with a cohort; see peers.
func tied(lost, rounds int) bool {
	return lost == rounds+1 || lost == 0 && rounds == 0
}

// delay is the head start of a waiter with ahead handoffs fewer than the
// last winner waited, seen after the deletion, with a random tie-break of up
// to tie. It counts from the deletion, not from the call: a waiter that
// arrives when the Lease has long been gone, after the waiters that saw it
// go had their turn, creates it at once.
//
// A waiter that has lost two handoffs or more beyond the last winner's count
// (ahead < -1) was passed over: a waiter that arrived after it went first.
// It goes at once, without a tie-break, so that it does not lose to the
// heads that come after it; a tie-break widened by its own collisions would
// make it lose again and again.
func delay(ahead int, gap, tie, seen time.Duration) time.Duration {
	if ahead < -1 {
		return 0
	}
	d := time.Duration(max(ahead, 0))*gap + time.Duration(rand.Int64N(int64(tie)+1))
	return max(d-seen, 0)
}

// turns is one AcquireLock call's place among the waiters of its Lease.
type turns struct {
	// handoffs counts the handoffs that other waiters won while the call
	// waited; collisions counts its Creates that lost to another waiter's.
	handoffs, collisions int
	// cohort is set while the call is tied with a cohort its watch cannot
	// count (see herd.delayFor); spread is then its tie-break. rtt is how
	// long its last Create took.
	cohort      bool
	spread, rtt time.Duration
}

// lost counts a handoff that another waiter won, after the call's delayed
// Create collided with it or saw it first. It reports whether the call is in
// a cohort, and so likely to see many more handoffs.
func (t *turns) lost(collided bool) bool {
	t.handoffs++
	if t.cohort {
		if collided {
			t.widen()
		} else {
			t.spread = max(t.spread*3/5, headTie)
		}
	}
	if collided {
		t.collisions++
	}
	return t.cohort
}

// widen spreads the call's Creates, while it is tied with a cohort, over at
// least the time its last Create took. A failed Create takes longer the more
// Creates the server has in hand: under 30 at once 12-25ms, against about
// 2ms alone. Spread over that time, the first of the cohort to go is usually
// alone, and the others see its Lease before their own delay ends. A clean
// handoff (another waiter's Lease came first) narrows the spread again, as
// the cohort shrinks by one.
func (t *turns) widen() { t.spread = min(max(t.spread, t.rtt), maxSpread) }
