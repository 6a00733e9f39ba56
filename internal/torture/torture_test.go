package torture_test

import (
	"fmt"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	"k8s.io/utils/ptr"

	"github.com/leaselock/leaselock/internal/testenv"
)

// The size of the run; the defaults keep CI short, and a soak raises them.
const (
	procsEnv      = "LEASELOCK_TORTURE_PROCS"
	goroutinesEnv = "LEASELOCK_TORTURE_GOROUTINES"
	opsEnv        = "LEASELOCK_TORTURE_OPS"
	faultRateEnv  = "LEASELOCK_TORTURE_FAULT_RATE"
	crashesEnv    = "LEASELOCK_TORTURE_CRASHES"
	restartsEnv   = "LEASELOCK_TORTURE_RESTARTS"
)

// TestTortureContention: K processes of G goroutines increment the counters
// of two locks under withlock, each process through a client that fails a
// share of its Lease requests, half of the processes waiting on a watch and
// half polling. No two critical sections of a lock may overlap, each lock's
// history must be linearizable, each counter must equal the increments
// written, and no Lease may be left.
//
// Why the count is compared with the writes and not with the withlock calls
// that returned nil: a call can fail after fn wrote (its release got
// faults until the release timeout), and then the increment did happen.
// Each critical section records whether its own Update succeeded; the
// ConfigMap requests get no faults, so that outcome is always known here.
func TestTortureContention(t *testing.T) {
	procs := envInt(t, procsEnv, 3)
	goroutines := envInt(t, goroutinesEnv, 3)
	ops := envInt(t, opsEnv, 15)
	rate := envRate(t, faultRateEnv, 0.1)
	c := testenv.Client(t)
	ns := testenv.Namespace(t, c)
	locks := []string{"torture-a", "torture-b"}
	createCounters(t, c, ns, locks)
	kubeconfig := writeKubeconfig(t, testenv.Config(t))

	began := time.Now()
	ws := newWorkers(t)
	perProc := map[int]int{}
	for p := range procs {
		ws.start(workerConfig{
			Kubeconfig: kubeconfig, Namespace: ns, Proc: p, Goroutines: goroutines, Ops: ops, Locks: locks,
			FaultRate: rate, LeaseDuration: 5 * time.Second, RetryInterval: 100 * time.Millisecond,
			NoWatch: p%2 == 1,
		})
		perProc[p] = goroutines
	}
	ws.wait()
	recs := ws.snapshot()
	t.Logf("%d processes x %d goroutines x %d increments, fault rate %.2f, in %v",
		procs, goroutines, ops, rate, time.Since(began).Round(time.Millisecond))
	checkDone(t, recs, ops, perProc)
	for _, l := range locks {
		checkLock(t, c, ns, l, recs, goroutines)
	}
	checkLeases(t, c, ns, nil)
	figures.add(func(s *summary) {
		s.shape = fmt.Sprintf("%d x %d x %d (2 locks, fault rate %.2f)", procs, goroutines, ops, rate)
	})
}

// TestTortureCrashTakeover kills a holder with SIGKILL inside its critical
// section, while other processes wait for the lock. One of them must take
// the lock over after the crashed holder's Lease expired (its renewTime plus
// the lease duration, on the one clock of this machine) and within lease
// duration + retry interval + 1s of the kill.
func TestTortureCrashTakeover(t *testing.T) {
	crashes := envInt(t, crashesEnv, 1)
	takers := max(envInt(t, procsEnv, 3)-1, 1)
	goroutines := envInt(t, goroutinesEnv, 3)
	const (
		lease = 2 * time.Second
		retry = 200 * time.Millisecond
		lock  = "torture-crash"
		ops   = 2
	)
	c := testenv.Client(t)
	ns := testenv.Namespace(t, c)
	createCounters(t, c, ns, []string{lock})
	kubeconfig := writeKubeconfig(t, testenv.Config(t))

	var all []record
	crashedHolders := map[string]bool{}
	perProc := map[int]int{}
	for round := range crashes {
		ws := newWorkers(t)
		cfg := workerConfig{
			Kubeconfig: kubeconfig, Namespace: ns, Goroutines: goroutines, Ops: ops, Locks: []string{lock},
			LeaseDuration: lease, RetryInterval: retry, Gate: true,
		}
		first := round * (takers + 1)
		var gated []*worker
		for p := range takers {
			cfg.Proc, cfg.NoWatch = first+p, p%2 == 1
			gated = append(gated, ws.start(cfg))
			perProc[cfg.Proc] = goroutines
		}
		if !ws.waitFor(func(rs []record) bool {
			return count(rs, func(r record) bool { return r.Kind == "ready" }) == takers
		}) {
			t.Fatalf("round %d: the waiting processes did not start", round)
		}

		// The crasher takes the lock, writes, and hangs in its critical
		// section.
		crasher := ws.start(workerConfig{
			Kubeconfig: kubeconfig, Namespace: ns, Proc: first + takers, Goroutines: 1, Ops: 1, Locks: []string{lock},
			LeaseDuration: lease, RetryInterval: retry, Hold: true,
		})
		if !ws.waitFor(func(rs []record) bool {
			return count(rs, func(r record) bool { return r.Kind == "holding" }) == 1
		}) {
			t.Fatalf("round %d: the crasher never held the lock", round)
		}
		held := getLease(t, c, ns, lock)
		if held == nil || held.Spec.RenewTime == nil {
			t.Fatalf("round %d: the crasher holds the lock, but its Lease is %v", round, held)
		}
		holder := ptr.Deref(held.Spec.HolderIdentity, "")
		expiry := held.Spec.RenewTime.Add(time.Duration(ptr.Deref(held.Spec.LeaseDurationSeconds, 0)) * time.Second)
		crashedHolders[holder] = true

		for _, w := range gated {
			if err := w.open(); err != nil {
				t.Fatalf("round %d: let worker %d go: %v", round, w.cfg.Proc, err)
			}
		}
		killed := crasher.kill(t)
		ws.wait()

		recs := ws.snapshot()
		var takeover int64
		for i, r := range recs {
			switch {
			case r.Kind == "holding":
				recs[i].End = killed.UnixNano() // it held the lock until it died
			case r.Kind == "op" && r.Start != 0 && (takeover == 0 || r.Start < takeover):
				takeover = r.Start
			}
		}
		all = append(all, recs...)
		if takeover == 0 {
			t.Fatalf("round %d: no process took the lock over after the crash", round)
		}
		at := time.Unix(0, takeover)
		sinceKill, sinceExpiry := at.Sub(killed), at.Sub(expiry)
		t.Logf("round %d: holder %s killed %v after its Lease was written; taken over %v after the kill, %v after the Lease expired",
			round, holder, killed.Sub(held.Spec.RenewTime.Time).Round(time.Millisecond),
			sinceKill.Round(time.Millisecond), sinceExpiry.Round(time.Millisecond))
		if !at.After(expiry) {
			t.Errorf("round %d: taken over at %s, before the crashed holder's Lease expired at %s",
				round, stamp(takeover), stamp(expiry.UnixNano()))
		}
		if bound := lease + retry + time.Second; sinceKill > bound {
			t.Errorf("round %d: taken over %v after the kill, want within lease duration + retry interval + 1s = %v",
				round, sinceKill, bound)
		}
		figures.add(func(s *summary) {
			s.crashes++
			s.takeovers = append(s.takeovers, sinceKill)
			s.afterExpiry = append(s.afterExpiry, sinceExpiry)
		})
	}
	checkDone(t, all, ops, perProc)
	checkLock(t, c, ns, lock, all, goroutines)
	checkLeases(t, c, ns, func(l *coordinationv1.Lease) bool {
		return crashedHolders[ptr.Deref(l.Spec.HolderIdentity, "")]
	})
}
