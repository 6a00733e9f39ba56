// Package torture is the reliability suite of leaselock: it holds no code,
// only tests that attack the lock the way etcd's robustness tests attack
// etcd, against a real kube-apiserver and etcd, and check every history.
//
// The tests (go test -race -count=1 -v ./internal/torture):
//
//   - TestTortureContention: K worker processes (the test binary run again in
//     worker mode) of G goroutines each increment ConfigMap counters under
//     withlock on a few lock names, through a client that injects faults into
//     every Lease request: Conflict, 500, 429, timeouts, and writes that are
//     applied but whose response is lost. Every critical section is
//     recorded; no two may overlap, each lock's history must be linearizable
//     (github.com/anishathalye/porcupine, a counter model) and each counter
//     must equal the increments that were written.
//   - TestTortureCrashTakeover: a holder process is killed with SIGKILL in its
//     critical section; another process must take over after the Lease
//     expires and within lease duration + retry interval + 1s.
//   - TestTortureServerRestart: kube-apiserver is stopped and started mid-run,
//     on a control plane of the test's own.
//   - TestTortureClockSkew and TestTortureFarFutureRenewTime: lockers whose
//     clocks run ahead or behind.
//   - TestTortureHA: the lock on a highly available control plane of its
//     own (localapi.StartHA): several etcd members and kube-apiservers,
//     workers spread over the API servers, each through a TCP proxy in
//     front of its own. The etcd leader is killed with SIGKILL and
//     restarted, an etcd follower is paused with SIGSTOP, an API server is
//     killed as a release of one of its workers is on its way and
//     restarted, another is paused with SIGSTOP, and the proxies delay,
//     drop and cut connections and lose responses all along. Besides the checks of the contention test, no lock may
//     stand free between two holders longer than the lease duration + the
//     retry interval + 4s, and every goroutine must write again once the
//     faults end.
//   - TestTorturePause: Jepsen's pause nemesis. A holder process is stopped
//     with SIGSTOP between its read of a counter and its write, past its
//     lease, until another process took the lock over; then SIGCONT, and
//     it writes (a write in flight, or one after a check of its ctx),
//     after the new holder's write or between its read and write. With
//     withlock.Update (the resourceVersion) and with a store that refuses
//     a smaller fencing token, no update may be lost and the history must
//     be linearizable, and the store must accept no stale write; with
//     blind writes the suite counts the stale writes accepted and the
//     updates lost, the limit that fencing lifts.
//
// Every test ends with no Lease of its own left in its namespace, and the
// package checks for leaked goroutines. The size of the run is set by
// environment variables, small by default so that CI finishes in minutes:
// LEASELOCK_TORTURE_PROCS (3), LEASELOCK_TORTURE_GOROUTINES (3),
// LEASELOCK_TORTURE_OPS (15 increments per goroutine),
// LEASELOCK_TORTURE_FAULT_RATE (0.1), LEASELOCK_TORTURE_CRASHES (1),
// LEASELOCK_TORTURE_RESTARTS (1), LEASELOCK_TORTURE_PAUSES (the pauses of
// each mode of TestTorturePause, 4 x LEASELOCK_TORTURE_CRASHES), and for
// TestTortureHA LEASELOCK_TORTURE_HA_MEMBERS (3 etcd members),
// LEASELOCK_TORTURE_HA_SERVERS (2 API servers) and
// LEASELOCK_TORTURE_HA_ROUNDS (1 round of the four process faults). At the
// end the suite prints the tables that docs/reliability.md shows.
//
// What the suite cannot show: it runs every process on one machine, so the
// clocks of the processes agree (skew is injected, not real), and the wall
// times it compares across processes come from one clock.
package torture
