// Package bench measures leaselock against the local API server, each figure
// beside a baseline measured in the same run: `make bench` runs it and
// prints one table at the end.
package bench_test

import (
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/google/uuid"
	"go.uber.org/goleak"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/leaderelection"
	lerl "k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/klog/v2"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/leaselock/leaselock/internal/testenv"
	"github.com/leaselock/leaselock/resourcelock"
	"github.com/leaselock/leaselock/withlock"
)

func TestMain(m *testing.M) {
	klog.SetLogger(logr.Discard()) // leaderelection logs every attempt
	goleak.VerifyTestMain(tableAfter{testenv.Main(m)}, testenv.IgnoredGoroutines()...)
}

// runs is how many times each benchmark measures every row:
// $LEASELOCK_BENCH_RUNS, 5 by default. The table gives the median. Rows take
// turns run by run (make bench passes -count 1), so the machine's drift over
// the minutes of a run falls on every row alike.
func runs() int {
	if n, err := strconv.Atoi(os.Getenv("LEASELOCK_BENCH_RUNS")); err == nil && n > 0 {
		return n
	}
	return 5
}

// currentRun is the index of the run the benchmarks are in: record tags
// each row's figures with it, so that a row is judged against its baseline
// of the same run even when a run of one of them failed or repeated.
var currentRun int

// runFor is how long each contended scenario runs:
// $LEASELOCK_BENCH_SECONDS, 4s by default.
func runFor() time.Duration {
	if s, err := strconv.ParseFloat(os.Getenv("LEASELOCK_BENCH_SECONDS"), 64); err == nil && s > 0 {
		return time.Duration(s * float64(time.Second))
	}
	return 4 * time.Second
}

// BenchmarkUncontended is one AcquireLock+ReleaseLock against its floor, a
// raw Lease Create+Delete pair. The two alternate, cycle by cycle, in one
// loop: the machine's drift (other processes, the API server compacting)
// then falls on both alike, and the ratio measures the lock, not the moment.
// Under make bench-ab the library as of the earlier commit joins the loop
// as a third cycle, for the same reason. Each row reports its mean time per
// cycle (ns/op) and its median.
func BenchmarkUncontended(b *testing.B) {
	for currentRun = range runs() {
		b.Run("paired", uncontended)
	}
}

// A locker takes and gives back a lock: a *resourcelock.ResourceLocker, of
// the library as it is or as of an earlier commit.
type locker interface {
	AcquireLock(ctx context.Context, name, lockerID string) error
	ReleaseLock(ctx context.Context, name, lockerID string) error
}

// A lockerRow is a row of BenchmarkUncontended and how to build its locker.
type lockerRow struct {
	row       string
	newLocker func(c client.Client, ns string) locker
}

// uncontendedLockers are the rows whose cycles BenchmarkUncontended times
// beside the raw pair, the library's first; before_test.go adds the library
// as of an earlier commit.
var uncontendedLockers = []lockerRow{
	{"leaselock", func(c client.Client, ns string) locker {
		return resourcelock.NewResourceLocker(c, ns, resourcelock.WithMetrics(nil))
	}},
}

func uncontended(b *testing.B) {
	ctx := context.Background()
	// cycle is one row: a client of its own, counted, and its times.
	type cycle struct {
		row   string
		reqs  *testenv.Requests
		run   func()
		times []time.Duration
	}
	var cycles []*cycle
	counted := func(row string) (*cycle, client.WithWatch) {
		c := &cycle{row: row, reqs: &testenv.Requests{}}
		cycles = append(cycles, c)
		return c, testenv.CountedClient(b, c.reqs)
	}
	lock, lc := counted(uncontendedLockers[0].row)
	raw, rc := counted("raw-create-delete")
	ns := testenv.Namespace(b, lc)
	lockCycle := func(rl locker) func() {
		return func() {
			if err := rl.AcquireLock(ctx, "uncontended", "me"); err != nil {
				b.Fatal(err)
			}
			if err := rl.ReleaseLock(ctx, "uncontended", "me"); err != nil {
				b.Fatal(err)
			}
		}
	}
	lock.run = lockCycle(uncontendedLockers[0].newLocker(lc, ns))
	raw.run = func() {
		lease := &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Name: "raw", Namespace: ns},
			Spec:       coordinationv1.LeaseSpec{HolderIdentity: ptr.To("me"), LeaseDurationSeconds: ptr.To(int32(15))},
		}
		if err := rc.Create(ctx, lease); err != nil {
			b.Fatal(err)
		}
		if err := rc.Delete(ctx, lease); err != nil {
			b.Fatal(err)
		}
	}
	for _, l := range uncontendedLockers[1:] {
		twin, c := counted(l.row)
		twin.run = lockCycle(l.newLocker(c, ns))
	}
	for _, c := range cycles {
		c.run() // warm every client
	}
	for _, c := range cycles {
		c.reqs.Reset()
	}
	orders := permutations(len(cycles))
	for i := 0; b.Loop(); i++ {
		// Take turns at going first, so that none always follows another.
		for _, j := range orders[i%len(orders)] {
			c := cycles[j]
			t := time.Now()
			c.run()
			c.times = append(c.times, time.Since(t))
		}
	}
	b.StopTimer()
	for _, c := range cycles {
		perCycle := float64(c.reqs.Count("", "leases")) / float64(len(c.times))
		var sum time.Duration
		for _, t := range c.times {
			sum += t
		}
		mean := float64(sum.Nanoseconds()) / float64(len(c.times))
		unit := strings.ReplaceAll(c.row, " ", "") // a unit has no spaces
		b.ReportMetric(mean, unit+"-ns/cycle")
		b.ReportMetric(perCycle, unit+"-requests/cycle")
		record(b, "uncontended", c.row, map[string]float64{
			"ns/op":       mean,
			"allocs/op":   testing.AllocsPerRun(20, c.run),
			"median-ns":   float64(percentile(c.times, 50).Nanoseconds()),
			"requests/op": perCycle,
		})
	}
}

// permutations returns every order of 0 to n-1, in lexicographic order: for
// two, 0 1 and then 1 0.
func permutations(n int) [][]int {
	if n == 0 {
		return [][]int{{}}
	}
	var out [][]int
	for first := range n {
		for _, rest := range permutations(n - 1) {
			p := []int{first}
			for _, r := range rest {
				if r >= first {
					r++ // the rest are the numbers other than first
				}
				p = append(p, r)
			}
			out = append(out, p)
		}
	}
	return out
}

// worker is one replica: a client with a connection of its own, and the
// lock it takes.
type worker struct {
	c client.WithWatch
	// cs is the clientset of a client-go row; nil in the others.
	cs kubernetes.Interface
	// withLock runs fn while holding the lock name.
	withLock func(ctx context.Context, name string, fn func(ctx context.Context) error) error
}

// locks build, by kind of lock, the workers of a row: each call of the
// function returned makes one, whose requests reqs counts.
var locks = map[string]func(b *testing.B, ns string, reqs *testenv.Requests) func() *worker{
	// leaselock as shipped: watching, default options but a retry timeout
	// long enough for the queue.
	"leaselock": func(b *testing.B, ns string, reqs *testenv.Requests) func() *worker {
		return func() *worker {
			c := testenv.CountedClient(b, reqs)
			return leaselockWorker(c, resourcelock.NewResourceLocker(c, ns,
				resourcelock.WithRetryTimeout(time.Minute), resourcelock.WithMetrics(nil)))
		}
	},
	// The seed's behaviour: no watch, a waiter polls every 500ms.
	"leaselock-poll-500ms": func(b *testing.B, ns string, reqs *testenv.Requests) func() *worker {
		return func() *worker {
			c := testenv.CountedClient(b, reqs)
			return leaselockWorker(c, resourcelock.NewResourceLocker(c, ns, resourcelock.WithoutWatch(),
				resourcelock.WithRetryTimeout(time.Minute), resourcelock.WithMetrics(nil)))
		}
	},
	// What a newcomer passes first, as the usage in the package doc reads:
	// client.New, which cannot watch, so waiters poll every 500ms.
	"leaselock-client.New": func(b *testing.B, ns string, reqs *testenv.Requests) func() *worker {
		return func() *worker {
			c, err := client.New(testenv.CountedConfig(b, reqs), client.Options{})
			if err != nil {
				b.Fatal(err)
			}
			return leaselockWorker(testenv.CountedClient(b, reqs), resourcelock.NewResourceLocker(c, ns,
				resourcelock.WithRetryTimeout(time.Minute), resourcelock.WithMetrics(nil)))
		}
	},
	// What most reconcilers hold: a manager's GetClient(), which reads
	// Leases from its informer cache (a cluster-wide Lease informer) and
	// cannot watch. Each worker is a manager of its own, as a replica is.
	"leaselock-mgr.GetClient()": func(b *testing.B, ns string, reqs *testenv.Requests) func() *worker {
		return func() *worker {
			mgr := testenv.StartManager(b, testenv.CountedConfig(b, reqs))
			return leaselockWorker(testenv.CountedClient(b, reqs), resourcelock.NewResourceLocker(mgr.GetClient(), ns,
				resourcelock.WithRetryTimeout(time.Minute), resourcelock.WithMetrics(nil)))
		}
	},
	// The locker a manager gives in one call: withlock.NewForCluster,
	// whose Leases go through an uncached client of its own that watches.
	"leaselock-NewForCluster": func(b *testing.B, ns string, reqs *testenv.Requests) func() *worker {
		return func() *worker {
			mgr := testenv.StartManager(b, testenv.CountedConfig(b, reqs))
			l, err := withlock.NewForCluster(mgr, ns, withlock.WithLeftoverRemoval(-1), withlock.WithLogger(logr.Discard()),
				withlock.WithResourceLockerOptions(resourcelock.WithRetryTimeout(time.Minute), resourcelock.WithMetrics(nil)))
			if err != nil {
				b.Fatal(err)
			}
			return &worker{c: testenv.CountedClient(b, reqs), withLock: l.WithLock}
		}
	},
	// client-go's leaderelection used as a lock, the way people do: a
	// LeaderElector per critical section, ReleaseOnCancel, and
	// controller-runtime's default timings.
	"client-go-leaderelection": func(b *testing.B, ns string, reqs *testenv.Requests) func() *worker {
		return func() *worker {
			c := testenv.CountedClient(b, reqs)
			cs := kubernetes.NewForConfigOrDie(testenv.CountedConfig(b, reqs))
			return &worker{c: c, cs: cs, withLock: electLock(ns, cs)}
		}
	},
}

// leaselockWorker is a worker that runs withlock around rl. Like rl, its
// withlock.Locker records no metrics: a row measures the lock, and the
// library as of an earlier commit (make bench-ab) would register the same
// metrics again in the same registry.
func leaselockWorker(c client.WithWatch, rl *resourcelock.ResourceLocker) *worker {
	return &worker{c: c, withLock: withlock.New(rl).WithLock}
}

// electLock runs fn as the leader of a LeaderElector of its own, on the
// Lease name in ns.
func electLock(ns string, cs kubernetes.Interface) func(ctx context.Context, name string, fn func(ctx context.Context) error) error {
	return func(ctx context.Context, name string, fn func(ctx context.Context) error) error {
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		var fnErr error
		le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
			Lock: &lerl.LeaseLock{
				LeaseMeta:  metav1.ObjectMeta{Name: name, Namespace: ns},
				Client:     cs.CoordinationV1(),
				LockConfig: lerl.ResourceLockConfig{Identity: uuid.NewString()},
			},
			LeaseDuration:   15 * time.Second,
			RenewDeadline:   10 * time.Second,
			RetryPeriod:     2 * time.Second,
			ReleaseOnCancel: true,
			Callbacks: leaderelection.LeaderCallbacks{
				OnStartedLeading: func(ctx context.Context) {
					fnErr = fn(ctx)
					cancel()
				},
				OnStoppedLeading: func() {},
			},
		})
		if err != nil {
			return err
		}
		le.Run(ctx)
		return fnErr
	}
}

// section is one critical section as a worker saw it.
type section struct {
	asked, acquired, released time.Time
	// first marks a worker's first section, when every worker arrives at
	// once.
	first bool
	// round is the round the section belongs to, in a rounds workload.
	round int
	// worker is the index of the worker that ran it.
	worker int
}

// workload is how the workers of a scenario ask for the lock.
type workload int

const (
	// freeRunning: each worker loops on the lock as fast as it can. A worker
	// that releases asks again at once, so a lock that lets the releaser
	// win again serves one worker while the others starve, at the rate of
	// one uncontended worker.
	freeRunning workload = iota
	// rounds: every worker does one section per round, and a round ends
	// when all have, as replicas that each reconcile the same event do. A
	// worker that starves holds up the round, so fairness is throughput.
	rounds
	// idleRounds: rounds as above, a few of them, each after a pause longer
	// than resourcelock.WatchLinger, as replicas that reconcile events
	// seconds apart do: every round starts with no watch open. Its
	// increments/s counts the rounds' time, not the pauses'.
	idleRounds
)

// idleRoundCount is how many rounds an idleRounds run has.
const idleRoundCount = 6

// contend runs workers workers, each with a client of its own, for d: each
// takes the lock (one shared name, or one per worker when distinct) and
// increments a ConfigMap counter with a Get and an Update, again and again
// (freeRunning) or once per round (rounds: the last round started before d
// runs to its end; idleRounds: idleRoundCount rounds, whatever d).
func contend(b *testing.B, scenario, row, lockKind string, workers int, distinct bool, load workload, d time.Duration) {
	var reqs testenv.Requests
	admin := testenv.Client(b)
	ns := testenv.Namespace(b, admin)
	newWorker := locks[lockKind](b, ns, &reqs)
	ctx := context.Background()

	names := make([]string, workers)
	for i := range names {
		names[i] = "shared"
		if distinct {
			names[i] = "lock-" + strconv.Itoa(i)
		}
		cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: names[i], Namespace: ns}, Data: map[string]string{"count": "0"}}
		if err := admin.Create(ctx, cm); err != nil && !distinct && i > 0 {
			continue
		} else if err != nil && (distinct || i == 0) {
			b.Fatal(err)
		}
	}
	ws := make([]*worker, workers)
	for i := range ws {
		ws[i] = newWorker()
		warmUp(b, ws[i], client.ObjectKey{Namespace: ns, Name: names[i]})
	}
	requestsPath := os.Getenv("LEASELOCK_BENCH_REQUESTS")
	if requestsPath != "" {
		reqs.Trace()
	}
	reqs.Reset()
	clientCPU, serverCPU := cpuTimes(b)

	var mu sync.Mutex
	var failed atomic.Bool
	byLock := map[string][]section{}
	// once runs one section of worker i in round r, and reports whether it
	// succeeded.
	once := func(i, r int, first bool) bool {
		w, name := ws[i], names[i]
		s := section{asked: time.Now(), first: first, round: r, worker: i}
		err := w.withLock(ctx, name, func(ctx context.Context) error {
			s.acquired = time.Now()
			return increment(ctx, w.c, client.ObjectKey{Namespace: ns, Name: name})
		})
		s.released = time.Now()
		if err != nil {
			b.Errorf("worker %d: %v", i, err)
			failed.Store(true)
			return false
		}
		mu.Lock()
		byLock[name] = append(byLock[name], s)
		mu.Unlock()
		return true
	}
	// round runs one section of every worker, all asking at once.
	round := func(section func(i int)) {
		var wg sync.WaitGroup
		for i := range ws {
			wg.Go(func() { section(i) })
		}
		wg.Wait()
	}
	start := time.Now()
	began := start // start moves past the pauses of idleRounds; began does not
	end := start.Add(d)
	switch load {
	case freeRunning:
		var wg sync.WaitGroup
		for i := range ws {
			wg.Go(func() {
				for first := true; time.Now().Before(end) && once(i, 0, first); first = false {
				}
			})
		}
		wg.Wait()
	case rounds:
		for r := 0; r == 0 || time.Now().Before(end); r++ {
			round(func(i int) { once(i, r, r == 0) })
		}
	case idleRounds:
		for r := range idleRoundCount {
			// The pauses are not the rounds' time, nor their CPU time.
			paused := time.Now()
			client0, server0 := cpuTimes(b)
			time.Sleep(resourcelock.WatchLinger + 250*time.Millisecond)
			client1, server1 := cpuTimes(b)
			start = start.Add(time.Since(paused))
			clientCPU, serverCPU = clientCPU+client1-client0, serverCPU+server1-server0
			round(func(i int) { once(i, r, r == 0) })
		}
	}
	elapsed := time.Since(start)
	clientCPU2, serverCPU2 := cpuTimes(b)
	if path := os.Getenv("LEASELOCK_BENCH_SECTIONS"); path != "" {
		if err := appendSections(path, scenario, row, began, byLock); err != nil {
			b.Fatal(err)
		}
	}
	if requestsPath != "" {
		if err := appendRequests(requestsPath, scenario, row, began, reqs.Log()); err != nil {
			b.Fatal(err)
		}
	}

	q, n := queueOf(byLock)
	// Leases left by leaderelection (it releases by clearing the holder,
	// not by deleting) are not ours to check.
	if lockKind == "client-go-leaderelection" {
		if err := admin.DeleteAllOf(ctx, &coordinationv1.Lease{}, client.InNamespace(ns)); err != nil {
			b.Fatal(err)
		}
	}
	if failed.Load() || n == 0 {
		// A run in which a worker failed, or none got the lock, measured
		// something else: it is not recorded (b.Errorf failed it already).
		b.Errorf("%s, %s: run not recorded: %d sections, a worker failed: %v", scenario, row, n, failed.Load())
		return
	}
	m := map[string]float64{
		"increments/s": float64(n) / elapsed.Seconds(),
		"requests/acq": float64(reqs.Count("", "leases")) / float64(n),
		// Where the two cores went: this process (every worker's client),
		// and the API server with etcd.
		"client-cpu-ms/acq": ms(clientCPU2-clientCPU) / float64(n),
		"server-cpu-ms/acq": ms(serverCPU2-serverCPU) / float64(n),
	}
	// A percentile of no sample is no figure: a row without handoffs (one
	// worker in rounds) shows an empty cell, not a measured zero.
	for unit, sample := range map[string]struct {
		ds []time.Duration
		p  int
	}{
		"wait-p50-ms": {q.waits, 50},
		"wait-p99-ms": {q.waits, 99},
		// The same without each worker's first wait: the queue in its steady
		// state, not the start where all arrive together.
		"later-wait-p99-ms": {q.later, 99},
		// The queue once the first meeting is over: only the waits asked
		// after every worker had its first turn. The start, where all
		// arrive together at a lock none has seen, is what wait-p99-ms
		// adds.
		"settled-wait-p99-ms": {q.settled, 99},
		"handoff-p50-ms":      {q.handoffs, 50},
		"handoff-p99-ms":      {q.handoffs, 99},
		// One Lease write as the API server served it in this run, under
		// this load: the unit a handoff is measured in.
		"write-p50-ms": {reqs.Writes("leases"), 50},
	} {
		if len(sample.ds) > 0 {
			m[unit] = ms(percentile(sample.ds, sample.p))
		}
	}
	if len(q.turns) > 0 {
		m["turns-waited-p99"] = float64(percentile(q.turns, 99))
	}
	if distinct {
		delete(m, "handoff-p50-ms")
		delete(m, "handoff-p99-ms")
		delete(m, "turns-waited-p99")
	}
	if load != freeRunning {
		// Every round starts with all workers at once.
		delete(m, "later-wait-p99-ms")
		delete(m, "settled-wait-p99-ms")
	}
	for unit, v := range m {
		b.ReportMetric(v, unit)
	}
	if os.Getenv("LEASELOCK_BENCH_VERBS") != "" {
		for _, verb := range []string{"create", "get", "update", "delete", "watch", "list"} {
			b.Logf("%s: %s leases %d", lockKind, verb, reqs.Count(verb, "leases"))
		}
	}
	if !distinct {
		m["contenders"] = float64(workers) // for the table only: see waitOverBound
	}
	record(b, scenario, row, m)
}

// queue is what the sections of a run say of the queue at each lock.
type queue struct {
	// waits is every wait, from asking to holding; later leaves out each
	// worker's first, and settled every wait asked before the first
	// meeting ended (see queueOf).
	waits, later, settled []time.Duration
	// handoffs is from one holder's release to the next's acquire, within a
	// round.
	handoffs []time.Duration
	// turns counts, for each wait, the holders that went first meanwhile.
	turns []time.Duration
}

// queueOf returns the queue that the sections byLock show, and how many
// sections there are. It sorts each lock's sections by acquisition.
//
// The first meeting ends when every worker has released the lock once: a
// queue that none of them had seen, met all at once. The waits asked
// before that are the start's; settled has the others.
func queueOf(byLock map[string][]section) (queue, int) {
	var settledFrom time.Time
	for _, ss := range byLock {
		for _, s := range ss {
			if s.first && s.released.After(settledFrom) {
				settledFrom = s.released
			}
		}
	}
	var q queue
	n := 0
	for _, ss := range byLock {
		n += len(ss)
		slices.SortFunc(ss, func(a, b section) int { return a.acquired.Compare(b.acquired) })
		for i, s := range ss {
			wait := s.acquired.Sub(s.asked)
			q.waits = append(q.waits, wait)
			// The holders that went before this one while it waited: a
			// queue served in order has at most workers-1.
			j, _ := slices.BinarySearchFunc(ss[:i], s.asked, func(x section, t time.Time) int { return x.acquired.Compare(t) })
			q.turns = append(q.turns, time.Duration(i-j))
			if !s.first {
				q.later = append(q.later, wait)
			}
			if !s.asked.Before(settledFrom) {
				q.settled = append(q.settled, wait)
			}
			// A handoff is within a round: between rounds the lock waits for
			// the slowest worker of the last one.
			if i > 0 && ss[i-1].round == s.round {
				q.handoffs = append(q.handoffs, s.acquired.Sub(ss[i-1].released))
			}
		}
	}
	return q, n
}

// appendSections appends every critical section of one run to the CSV file
// at path, one line each, with times in microseconds from began: the raw
// material behind a row's percentiles, for finding where its tail comes
// from.
func appendSections(path, scenario, row string, began time.Time, byLock map[string][]section) error {
	var lines [][]string
	for _, name := range slices.Sorted(maps.Keys(byLock)) {
		for _, s := range byLock[name] {
			lines = append(lines, []string{scenario, row, name, strconv.Itoa(s.worker), strconv.Itoa(s.round), us(s.asked, began), us(s.acquired, began), us(s.released, began)})
		}
	}
	return appendCSV(path, []string{"scenario", "row", "lock", "worker", "round", "asked_us", "acquired_us", "released_us"}, lines)
}

// appendRequests appends every request of one run (Lease and ConfigMap,
// failed ones too) to the CSV file at path, one line each, in the order
// sent, with times in microseconds from began: the raw material behind a
// row's requests per acquisition, for finding when and why a row sends
// more than it should.
func appendRequests(path, scenario, row string, began time.Time, log []testenv.Request) error {
	slices.SortStableFunc(log, func(a, b testenv.Request) int { return a.Sent.Compare(b.Sent) })
	lines := make([][]string, 0, len(log))
	for _, r := range log {
		lines = append(lines, []string{scenario, row, r.Verb, r.Resource, strconv.Itoa(r.Code), us(r.Sent, began), strconv.FormatInt(r.Took.Microseconds(), 10)})
	}
	return appendCSV(path, []string{"scenario", "row", "verb", "resource", "code", "sent_us", "took_us"}, lines)
}

// us is t in microseconds from began.
func us(t, began time.Time) string { return strconv.FormatInt(t.Sub(began).Microseconds(), 10) }

// appendCSV appends lines to the CSV file at path, after header when the
// file is new.
func appendCSV(path string, header []string, lines [][]string) error {
	f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	w := csv.NewWriter(f)
	if fi, err := f.Stat(); err == nil && fi.Size() == 0 {
		_ = w.Write(header)
	}
	_ = w.WriteAll(lines)
	return errors.Join(w.Error(), f.Close())
}

// warmUp sends w's first requests before the clock starts: a new client
// connects, and controller-runtime's discovers the API on first use of a
// kind, which is no part of waiting for a lock.
func warmUp(b *testing.B, w *worker, key client.ObjectKey) {
	ctx := context.Background()
	if err := w.c.Get(ctx, key, &corev1.ConfigMap{}); err != nil {
		b.Fatal(err)
	}
	if err := w.c.Get(ctx, key, &coordinationv1.Lease{}); client.IgnoreNotFound(err) != nil {
		b.Fatal(err)
	}
	if w.cs != nil {
		if _, err := w.cs.CoordinationV1().Leases(key.Namespace).Get(ctx, key.Name, metav1.GetOptions{}); client.IgnoreNotFound(err) != nil {
			b.Fatal(err)
		}
	}
}

func increment(ctx context.Context, c client.Client, key client.ObjectKey) error {
	var cm corev1.ConfigMap
	if err := c.Get(ctx, key, &cm); err != nil {
		return err
	}
	n, _ := strconv.Atoi(cm.Data["count"])
	cm.Data["count"] = strconv.Itoa(n + 1)
	return c.Update(ctx, &cm)
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func percentile(ds []time.Duration, p int) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[max((p*len(s)+99)/100, 1)-1]
}

// BenchmarkContended8 is 8 workers on one lock, leaselock against its
// baselines: polling every 500ms, client-go leaderelection as a lock, and
// the serial floor (one worker, no contention); each in both workloads.
func BenchmarkContended8(b *testing.B) {
	for currentRun = range runs() {
		for _, load := range []struct {
			name, scenario string
			load           workload
		}{
			{"rounds", rounds8, rounds},
			{"free", free8, freeRunning},
		} {
			// The serial floor runs first, next to leaselock, whose waits it
			// bounds (see waitOverBound).
			withTwin(b, load.name+"/serial-floor", "leaselock", serialRow, func(b *testing.B, kind, row string) {
				for b.Loop() {
					contend(b, load.scenario, row, kind, 1, false, load.load, runFor())
				}
			})
			for _, kind := range []string{"leaselock", "leaselock-poll-500ms", "client-go-leaderelection"} {
				withTwin(b, load.name+"/"+kind, kind, kind, func(b *testing.B, kind, row string) {
					for b.Loop() {
						contend(b, load.scenario, row, kind, 8, false, load.load, runFor())
					}
				})
				if kind == "leaselock" && load.load == rounds {
					withTwin(b, "rounds/leaselock-after-idle", kind, "leaselock, rounds 1.25s apart", func(b *testing.B, kind, row string) {
						for b.Loop() {
							contend(b, load.scenario, row, kind, 8, false, idleRounds, runFor())
						}
					})
				}
			}
		}
	}
}

// BenchmarkClients8 is 8 workers on one lock in rounds, with each kind of
// client a user may pass, beside the watch path (client.NewWithWatch, the
// "leaselock" row): what each choice costs.
func BenchmarkClients8(b *testing.B) {
	for currentRun = range runs() {
		for _, kind := range []string{"leaselock", "leaselock-NewForCluster", "leaselock-mgr.GetClient()", "leaselock-client.New"} {
			withTwin(b, kind, kind, clientRows[kind], func(b *testing.B, kind, row string) {
				for b.Loop() {
					contend(b, clients8, row, kind, 8, false, rounds, runFor())
				}
			})
		}
	}
}

// clientRows name the rows of BenchmarkClients8 by the client each passes.
var clientRows = map[string]string{
	"leaselock":                 "leaselock",
	"leaselock-NewForCluster":   "withlock.NewForCluster(mgr)",
	"leaselock-mgr.GetClient()": "mgr.GetClient()",
	"leaselock-client.New":      "client.New",
}

// BenchmarkScale is the cost curve: 1, 2, 8 and 32 contenders on one lock,
// and 32 workers on 32 locks of their own.
func BenchmarkScale(b *testing.B) {
	for currentRun = range runs() {
		for _, n := range []int{1, 2, 8, 32} {
			withTwin(b, fmt.Sprintf("contenders-%d", n), "leaselock", fmt.Sprintf("%d contenders, one lock", n), func(b *testing.B, kind, row string) {
				for b.Loop() {
					contend(b, "scale", row, kind, n, false, freeRunning, runFor())
				}
			})
		}
		withTwin(b, "distinct-32", "leaselock", "32 workers, 32 locks", func(b *testing.B, kind, row string) {
			for b.Loop() {
				contend(b, "scale", row, kind, 32, true, freeRunning, runFor())
			}
		})
	}
}

// A row's twin is the same row with the library as of an earlier commit,
// which make bench-ab builds in (before_test.go): its lock kind and its
// name are the row's with these suffixes. Without the build tag no kind
// has a twin.
const (
	twinKind = "-before"
	twinRow  = " [before]"
)

// withTwin runs the row of lock kind kind, named row, as the sub-benchmark
// name, and its twin, when kind has one, right beside it: second in the
// first run, first in the next, and so on, so that neither always follows
// the other.
func withTwin(b *testing.B, name, kind, row string, bench func(b *testing.B, kind, row string)) {
	type sub struct{ name, kind, row string }
	subs := []sub{{name, kind, row}}
	if _, ok := locks[kind+twinKind]; ok {
		twin := sub{name + twinKind, kind + twinKind, row + twinRow}
		if currentRun%2 == 0 {
			subs = append(subs, twin)
		} else {
			subs = append([]sub{twin}, subs...)
		}
	}
	for _, s := range subs {
		b.Run(s.name, func(b *testing.B) { bench(b, s.kind, s.row) })
	}
}

// cpuTimes returns the CPU time used so far by this process and by its
// children named kube-apiserver and etcd (the local API server).
func cpuTimes(b *testing.B) (self, server time.Duration) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	self = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, path := range stats {
		data, err := os.ReadFile(path)
		if err != nil {
			continue // gone meanwhile
		}
		// pid (comm) state ppid ... utime stime, fields 14 and 15.
		line := string(data)
		open, end := strings.IndexByte(line, '('), strings.LastIndexByte(line, ')')
		if open < 0 || end < open {
			continue
		}
		comm, rest := line[open+1:end], strings.Fields(line[end+1:])
		if comm != "kube-apiserver" && comm != "etcd" || len(rest) < 13 || rest[1] != strconv.Itoa(os.Getpid()) {
			continue
		}
		utime, _ := strconv.ParseInt(rest[11], 10, 64)
		stime, _ := strconv.ParseInt(rest[12], 10, 64)
		server += time.Duration(utime+stime) * time.Second / clockTicks
	}
	return self, server
}

// clockTicks is the unit of utime and stime in /proc: USER_HZ, 100 on
// every Linux architecture Go runs on.
const clockTicks = 100
