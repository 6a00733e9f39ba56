package withlock

// The schedule of a held lock's renewals, and when its hold ends: pure
// functions of a plan, which the keeper (keep.go) follows.

import "time"

// ending is how the keeping of a lock ended.
type ending int

const (
	// endedByFn: fn returned, or panicked, while the lock was held.
	endedByFn ending = iota
	// endedExpired: the lease could have expired (renewal off, or every
	// renewal failed until the lease less the margin ran out).
	endedExpired
	// endedTaken: a renewal found another holder, or no Lease.
	endedTaken
	// endedMaxHold: the lock was held for its max hold (WithMaxHold).
	endedMaxHold
)

// plan is what the keeper of a lock goes by: when the last write of the
// Lease (the acquire or a renewal) began, how long such a write holds
// the lock, the cap on the hold, and the renewals that failed since.
type plan struct {
	// period is the time from a write to the next renewal; 0 when
	// renewal is off.
	period time.Duration
	// hold is the time, from the start of a write, until fn's ctx ends
	// unless a renewal moves it: the lease duration less the margin.
	hold time.Duration
	// written is when the last successful write began, on the locker's
	// clock (resourcelock's AcquiredAt).
	written time.Time
	// capAt is when the lock has been held for its max hold; zero for
	// none.
	capAt time.Time
	// failures is the number of renewals that failed since the last
	// write; lastTry is when the last of them was sent.
	failures int
	lastTry  time.Time
}

// renewalPeriod is the time from a write to the next renewal: a third of
// the lease, as etcd's and client-go's holders renew, so that two renewals
// can fail before the lease is in danger; or half of hold when a large
// margin makes that shorter, so that one renewal at least comes in time.
func renewalPeriod(lease, hold time.Duration) time.Duration {
	return min(lease/3, hold/2)
}

// expiry is when fn's ctx ends unless a renewal moves it.
func (p plan) expiry() time.Time { return p.written.Add(p.hold) }

// end is how, and when, the hold ends unless a renewal moves it: at the
// expiry, or at the cap when that comes first.
func (p plan) end() (ending, time.Time) {
	if !p.capAt.IsZero() && !p.capAt.After(p.expiry()) {
		return endedMaxHold, p.capAt
	}
	return endedExpired, p.expiry()
}

// next returns when the keeper should act next, and whether that is a
// renewal (else the hold ends then, see end). jitter, in [0, 1), spreads
// the retries of failed renewals (see retryDelay). No renewal is planned
// when renewal is off, when the cap comes before the expiry (a renewal
// would not keep the lock longer), or when it would start at or after the
// end.
func (p plan) next(jitter float64) (at time.Time, renew bool) {
	how, end := p.end()
	if p.period <= 0 || how == endedMaxHold {
		return end, false
	}
	at = p.written.Add(p.period)
	if p.failures > 0 {
		at = p.lastTry.Add(retryDelay(p.period, p.failures, jitter))
	}
	if !at.Before(end) {
		return end, false
	}
	return at, true
}

// renewed is the plan after a renewal whose write began at written: the
// next renewal a period after it, and the expiry moved.
func (p plan) renewed(written time.Time) plan {
	p.written, p.failures, p.lastTry = written, 0, time.Time{}
	return p
}

// failed is the plan after a renewal, sent at sent, failed.
func (p plan) failed(sent time.Time) plan {
	p.failures++
	p.lastTry = sent
	return p
}

// retryDelay is the wait after the failures-th renewal in a row failed
// (failures >= 1), before the next: an eighth of the period, doubling, up
// to half of it, and up to a quarter more at random (jitter in [0, 1)) so
// that the holders of a server that comes back do not renew all at once.
// With the default lease (15s, 3s margin), a renewal that fails at 5s is
// retried at about 5.6s, 6.9s, 9.4s and 11.9s before the lock is lost at
// 12s.
func retryDelay(period time.Duration, failures int, jitter float64) time.Duration {
	d := period / 8
	for i := 1; i < failures && d < period/2; i++ {
		d *= 2
	}
	d = min(d, period/2)
	return d + time.Duration(jitter*float64(d)/4)
}
