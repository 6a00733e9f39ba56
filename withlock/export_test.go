package withlock

import "time"

// StartRemoval starts l's removal of Leases expired for more than age, as
// NewForCluster and NewForConfig do, for a test that builds l with New on
// a client of its own.
func StartRemoval(l *Locker, age time.Duration) { l.startRemoval(age) }

// LeftoverPeriod is the time between two removals of Leases expired for
// age, less its jitter.
var LeftoverPeriod = leftoverPeriod

// AwaitBackground waits for l's background work to end on its own, without
// closing l: a test of a check that runs once waits for it so.
func AwaitBackground(l *Locker) { l.background.Wait() }

// Renewing reports how many renewals in this process have not yet ended.
func Renewing() int32 { return renewing.Load() }
