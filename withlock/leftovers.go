package withlock

// The removal of Leases that holders left behind, in the background of a
// Locker that NewForCluster or NewForConfig built.

import (
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/util/wait"
)

// minLeftoverPeriod is the shortest time between two removals, whatever
// the age: each lists the namespace's Leases.
const minLeftoverPeriod = 10 * time.Second

// leftoverPeriod is the time between two removals of Leases expired for
// age, less its jitter: a Lease goes within a period after it has been
// expired for age.
func leftoverPeriod(age time.Duration) time.Duration {
	return max(age/2, minLeftoverPeriod)
}

// startRemoval removes, in the background until l is closed, the Leases of
// l's namespace expired for more than age; a negative age removes none.
func (l *Locker) startRemoval(age time.Duration) {
	if age < 0 {
		return
	}
	l.background.Go(func() {
		clk := l.rl.Clock()
		for {
			t := clk.NewTimer(wait.Jitter(leftoverPeriod(age), 0.1))
			select {
			case <-l.stop.Done():
				t.Stop()
				return
			case <-t.C():
			}
			if !l.removeLeftovers(age) {
				return
			}
		}
	})
}

// removeLeftovers removes the Leases expired for more than age once, logs
// what became of it, and reports whether to go on: not after a Forbidden,
// which would come back every time.
func (l *Locker) removeLeftovers(age time.Duration) bool {
	removed, err := l.rl.RemoveExpired(l.stop, age)
	ns := l.rl.Namespace()
	if removed > 0 {
		l.log.Info("removed Leases left behind", "namespace", ns, "count", removed, "expiredFor", age)
	}
	switch {
	case err == nil || l.stop.Err() != nil:
		return true
	case apierrors.IsForbidden(err):
		l.log.Error(err, "Leases left behind will not be removed: grant list and delete on leases (see examples/rbac.yaml), or pass WithLeftoverRemoval(-1)",
			"namespace", ns)
		return false
	}
	l.log.V(1).Info("could not remove Leases left behind; will try again", "namespace", ns, "error", err)
	return true
}
