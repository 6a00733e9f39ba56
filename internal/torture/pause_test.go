package torture_test

import (
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/leaselock/leaselock/internal/testenv"
	"github.com/leaselock/leaselock/withlock"
)

// pausesEnv is the number of pauses of each mode of TestTorturePause; by
// default four for each holder that TestTortureCrashTakeover kills
// (LEASELOCK_TORTURE_CRASHES), one round of each kind of pause per crash.
const pausesEnv = "LEASELOCK_TORTURE_PAUSES"

const (
	pauseLease = 2 * time.Second
	pauseRetry = 100 * time.Millisecond
	// pauseAwait bounds the parent's wait for a worker's record.
	pauseAwait = 30 * time.Second
)

// pauseModes are the modes of TestTorturePause, in the order of its table.
var pauseModes = []string{pauseUpdate, pauseToken, pauseBlind}

// pauseKind is how the paused holder of a round writes once it runs again.
type pauseKind struct {
	// inFlight: its write was on its way when the process stopped, and
	// the end of fn's ctx does not call it back. Otherwise it checks its
	// ctx first, as a careful fn does, and writes with it.
	inFlight bool
	// between: it runs again between the new holder's read and its write;
	// otherwise once the new holder wrote, while it still holds the lock.
	between bool
}

func (k pauseKind) String() string {
	s := "checks its ctx"
	if k.inFlight {
		s = "write in flight"
	}
	if k.between {
		return s + ", resumed between the new holder's read and write"
	}
	return s + ", resumed after the new holder's write"
}

// pauseKinds are the kinds of round, in turn: the first is issue 22's
// pause nemesis as it states it.
var pauseKinds = []pauseKind{{true, false}, {false, false}, {true, true}, {false, true}}

// TestTorturePause is Jepsen's pause nemesis on the lock. A holder process
// stops with SIGSTOP in its critical section, between its read of a
// counter and its write of the count plus one, and stays stopped past its
// lease (at least the lease duration, and until another process took the
// lock over and read, or wrote); then SIGCONT, and it writes. The write
// goes on its way whatever its ctx (it was in flight when the process
// stopped), or the holder first checks its ctx, which withlock cancels
// with ErrLockLost as it runs again; and it lands after the new holder's
// write, or between its read and its write. Three modes of write, each on
// a lock of its own, at once:
//
//   - pauseUpdate: withlock.Update, whose write carries the resourceVersion
//     it read. Passes with no update lost: the count equals the writes that
//     succeeded, and the history is linearizable. A stale write that lands
//     after the new holder's write fails with Conflict; one that lands
//     between its read and write succeeds, and the new holder's write
//     fails with Conflict instead (docs/design.md, "What a token fences").
//   - pauseToken: a store outside the cluster (fencedStore) that refuses a
//     token smaller than the largest it has seen. Passes with no stale
//     write accepted, no update lost, and a linearizable history.
//   - pauseBlind: writes without a resourceVersion, which nothing fences:
//     the documented limit. The test counts the stale writes accepted and
//     the updates lost, and passes when each stale write accepted lost one
//     update, each write in flight was accepted, and porcupine finds a
//     history illegal exactly when an update was lost.
//
// In every mode the new holder must take over after the paused holder's
// Lease expired and while it was stopped, the resumed holder's call must
// return ErrLockLost, and no Lease may be left.
func TestTorturePause(t *testing.T) {
	pauses := envInt(t, pausesEnv, len(pauseKinds)*envInt(t, crashesEnv, 1))
	c := testenv.Client(t)
	kubeconfig := writeKubeconfig(t, testenv.Config(t))
	began := time.Now()
	t.Cleanup(func() { // after the modes, which run in parallel
		figures.add(func(s *summary) { s.pause.wall = append(s.pause.wall, time.Since(began)) })
	})
	for _, mode := range pauseModes {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			p := startPauseRun(t, c, kubeconfig, mode)
			for n := range pauses {
				p.round(n)
			}
			p.ws.stop()
			p.ws.wait()
			p.check()
		})
	}
}

// pauseRun is one mode of TestTorturePause: two worker processes that take
// turns at being paused and taking over.
type pauseRun struct {
	t     *testing.T
	c     client.Client
	ns    string
	mode  string
	lock  string       // the workers' lock name, and their counter's
	lease string       // the Lease's name: for Update, one it derives
	store *fencedStore // in the pauseToken mode
	ws    *workers
	procs [2]*worker
	figs  pauseFigures
}

func startPauseRun(t *testing.T, c client.Client, kubeconfig, mode string) *pauseRun {
	t.Helper()
	p := &pauseRun{t: t, c: c, ns: testenv.Namespace(t, c), mode: mode, lock: "torture-pause-" + mode}
	p.lease = p.lock
	cfg := workerConfig{
		Kubeconfig: kubeconfig, Namespace: p.ns, Goroutines: 1, Locks: []string{p.lock},
		LeaseDuration: pauseLease, RetryInterval: pauseRetry, Pause: mode,
	}
	switch mode {
	case pauseToken:
		p.store = startFencedStore(t)
		cfg.Store = p.store.srv.URL
	case pauseUpdate:
		p.lease = withlock.LockName(schema.GroupKind{Kind: "ConfigMap"}, client.ObjectKey{Namespace: p.ns, Name: counterName(p.lock)})
		fallthrough
	default:
		createCounters(t, c, p.ns, []string{p.lock})
	}
	p.ws = newWorkers(t)
	for i := range p.procs {
		// One takes over on a watch, the other polling.
		cfg.Proc, cfg.NoWatch = i, i == 1
		p.procs[i] = p.ws.start(cfg)
	}
	if !p.ws.waitFor(func(rs []record) bool {
		return count(rs, func(r record) bool { return r.Kind == "ready" }) == len(p.procs)
	}) {
		t.Fatalf("%s: the workers did not start", mode)
	}
	return p
}

// round runs pause n: the holder stops between its read and its write,
// the other process takes the lock over, and the holder runs again and
// writes, after the new holder's write or between its read and write.
func (p *pauseRun) round(n int) {
	t := p.t
	k := pauseKinds[n%len(pauseKinds)]
	held, taker := p.procs[n%2], p.procs[1-n%2]
	p.order(held, pauseOrder{cmd: "section", round: n, inFlight: k.inFlight, before: true})
	read := p.await("poised", held, n)
	stopped := held.signal(t, syscall.SIGSTOP)
	awaitStopped(t, held)
	p.order(held, pauseOrder{cmd: "go"}) // the pipe holds it until the process runs
	expiry := p.expiry(held)

	// The new holder reads (between) or reads and writes (after), and
	// waits, holding the lock.
	p.order(taker, pauseOrder{cmd: "section", round: n, before: k.between, after: !k.between})
	done := "attempt" // its write
	if k.between {
		done = "poised" // its read
	}
	took := p.await(done, taker, n)
	time.Sleep(time.Until(stopped.Add(pauseLease)))
	resumed := held.signal(t, syscall.SIGCONT)
	heldOp := p.await("op", held, n)
	p.order(taker, pauseOrder{cmd: "go"})
	takerOp := p.await("op", taker, n)

	switch {
	case took.Start <= expiry.UnixNano():
		t.Errorf("round %d: p%d took over at %s, before the paused holder's Lease expired at %s",
			n, taker.cfg.Proc, stamp(took.Start), stamp(expiry.UnixNano()))
	case !k.between && took.Write != wroteYes:
		t.Errorf("round %d: the new holder's write before the resume: %s (%s), want done", n, took.Write, took.Why)
	}
	if !resumed.After(expiry) {
		t.Errorf("round %d: p%d resumed at %s, before its Lease expired at %s", n, held.cfg.Proc, stamp(resumed.UnixNano()), stamp(expiry.UnixNano()))
	}
	if !heldOp.Lost {
		t.Errorf("round %d: the resumed holder's call returned %q, want withlock.ErrLockLost", n, heldOp.Err)
	}
	// The new holder's Update may return the Conflict of a stale write
	// that landed between its read and its write, its retries being over
	// (withlock.Update retries within the lock's first lease).
	if takerOp.Err != "" && !(p.mode == pauseUpdate && k.between && takerOp.Why == whyConflict) {
		t.Errorf("round %d: the new holder's call returned %q, want nil", n, takerOp.Err)
	}
	p.tally(n, k, took.Start, expiry, stopped, resumed)
	t.Logf("round %d (%s): p%d read %d, stopped at %s for %v, %v past its Lease's expiry; p%d took over %v after the expiry; the call of p%d returned %q",
		n, k, held.cfg.Proc, read.Read, stamp(stopped.UnixNano()), resumed.Sub(stopped).Round(time.Millisecond),
		resumed.Sub(expiry).Round(time.Millisecond), taker.cfg.Proc,
		time.Duration(took.Start-expiry.UnixNano()).Round(time.Millisecond), held.cfg.Proc, heldOp.Err)
}

// order writes o to w's stdin.
func (p *pauseRun) order(w *worker, o pauseOrder) {
	p.t.Helper()
	if err := w.tell(o.String()); err != nil {
		p.t.Fatalf("order %q to worker %d: %v", o, w.cfg.Proc, err)
	}
}

// await returns w's record of kind for round n, once it came, within
// pauseAwait. It fails t when the section of round n ended before it: a
// section that failed before it was poised.
func (p *pauseRun) await(kind string, w *worker, n int) record {
	p.t.Helper()
	for deadline := time.Now().Add(pauseAwait); ; time.Sleep(5 * time.Millisecond) {
		var ended *record
		for _, r := range p.ws.snapshot() {
			if r.Proc != w.cfg.Proc || r.Round != n {
				continue
			}
			if r.Kind == kind {
				return r
			}
			if r.Kind == "op" {
				ended = &r
			}
		}
		if ended != nil {
			p.t.Fatalf("round %d: the section of worker %d ended before its %q record: %s", n, w.cfg.Proc, kind, ended.Err)
		}
		state := "exited"
		select {
		case <-w.exited:
			state += fmt.Sprintf(" (%v)", w.err)
		default:
			if time.Now().Before(deadline) {
				continue
			}
			state = fmt.Sprintf("stuck for %v; its goroutines follow (SIGQUIT)", pauseAwait)
			dumpGoroutines(w)
		}
		w.mu.Lock()
		out := w.output.String()
		w.mu.Unlock()
		p.t.Fatalf("round %d: no %q record from worker %d, %s\n%s", n, kind, w.cfg.Proc, state, out)
	}
}

// dumpGoroutines makes a stuck worker print its goroutines and exit
// (SIGQUIT, after a SIGCONT should it be stopped), and waits up to 10s
// for it.
func dumpGoroutines(w *worker) {
	w.cmd.Process.Signal(syscall.SIGCONT)
	w.cmd.Process.Signal(syscall.SIGQUIT)
	select {
	case <-w.exited:
	case <-time.After(10 * time.Second):
	}
}

// awaitStopped returns once w's process has stopped (state T in
// /proc/PID/stat), so that the go sent next is read only when it runs
// again.
func awaitStopped(t *testing.T, w *worker) {
	t.Helper()
	path := fmt.Sprintf("/proc/%d/stat", w.cmd.Process.Pid)
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("worker %d: %v", w.cfg.Proc, err)
		}
		// pid (comm) state ...: comm may hold spaces, the state follows
		// its last parenthesis.
		if s := string(b); strings.HasPrefix(s[strings.LastIndexByte(s, ')')+1:], " T") {
			return
		}
	}
	t.Fatalf("worker %d did not stop within 5s of SIGSTOP", w.cfg.Proc)
}

// expiry returns when the Lease of the paused holder w expires: its
// renewTime plus its duration. w must hold it.
func (p *pauseRun) expiry(w *worker) time.Time {
	t := p.t
	t.Helper()
	l := getLease(t, p.c, p.ns, p.lease)
	if l == nil || l.Spec.RenewTime == nil {
		t.Fatalf("the paused holder p%d holds the lock, but its Lease is %v", w.cfg.Proc, l)
	}
	if h, want := ptr.Deref(l.Spec.HolderIdentity, ""), fmt.Sprintf("proc-%d_", w.cfg.Proc); !strings.HasPrefix(h, want) {
		t.Fatalf("Lease %s held by %q, want the paused holder p%d", p.lease, h, w.cfg.Proc)
	}
	return l.Spec.RenewTime.Add(time.Duration(ptr.Deref(l.Spec.LeaseDurationSeconds, 0)) * time.Second)
}

// tally adds round n to the figures: the takeover at took, against the
// paused holder's Lease expiry and its pause; and what became of the
// paused holder's write, and of the new holder's.
func (p *pauseRun) tally(n int, k pauseKind, took int64, expiry, stopped, resumed time.Time) {
	f := &p.figs
	f.pauses++
	f.inFlight += boolInt(k.inFlight)
	f.between += boolInt(k.between)
	f.takeovers += boolInt(took > expiry.UnixNano() && took > stopped.UnixNano() && took < resumed.UnixNano())
	f.afterExpiry = append(f.afterExpiry, time.Duration(took-expiry.UnixNano()))
	f.paused = append(f.paused, resumed.Sub(stopped))
	held := p.procs[n%2].cfg.Proc
	for _, r := range p.ws.snapshot() {
		if r.Round != n {
			continue
		}
		switch {
		case r.Kind == "op" && r.Proc == held && r.Lost:
			f.toldLost++
		case r.Kind != "attempt":
		case r.Proc != held:
			f.takerConflicts += boolInt(r.Why == whyConflict)
		case r.Why == whyCtx:
			f.notSent++
		case r.Why == whyConflict:
			f.conflict++
		case r.Why == whyToken:
			f.token++
		case r.Write == wroteYes:
			f.accepted++
			f.acceptedLate += boolInt(!k.between)
		case r.Write == wroteMaybe:
			f.noAnswer++
		}
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// check checks the mode's history at the end: the counter, porcupine's
// verdict, the stale writes accepted, and the Leases left.
func (p *pauseRun) check() {
	t, f := p.t, &p.figs
	var attempts []record
	for _, r := range p.ws.snapshot() {
		if r.Kind == "attempt" {
			attempts = append(attempts, r)
		}
	}
	var final int
	var call, ret int64
	if p.store != nil {
		final, call, ret = p.store.read()
	} else {
		final, call, ret = readCounter(t, p.c, p.ns, p.lock)
	}
	ops, wrote, maybe := counterOps(attempts, func(r record) int { return r.Proc }, call)
	res, info := checkCounter(ops, final, call, ret)
	f.ops, f.linearizable, f.wrote, f.final = len(ops), res == porcupine.Ok, wrote, final
	lost := max(wrote-final, 0)
	t.Logf("%s: %d increments written (%d without answer), count %d, %d lost; %d stale writes accepted; history %s",
		p.mode, wrote, maybe, final, lost, f.accepted, res)
	switch p.mode {
	case pauseBlind:
		// The limit: counted, and the checks must see it.
		if (res == porcupine.Ok) != (lost == 0) {
			t.Errorf("porcupine says %s with %d updates lost (visualization: %s)", res, lost, visualize(p.lock, info))
		}
		if lost != f.accepted || f.accepted < f.inFlight {
			t.Errorf("%d updates lost and %d stale writes accepted, want one lost for each accepted, and at least the %d writes in flight accepted",
				lost, f.accepted, f.inFlight)
		}
	default:
		if res != porcupine.Ok {
			t.Errorf("history of %d writes is %s, want linearizable (visualization: %s)", len(ops), res, visualize(p.lock, info))
		}
		if final < wrote || final > wrote+maybe {
			t.Errorf("count %d, want %d (writes that succeeded) plus up to %d without answer", final, wrote, maybe)
		}
		if f.acceptedLate > 0 || (p.mode == pauseToken && f.accepted > 0) {
			t.Errorf("%d stale writes accepted (%d after the new holder's write), want none", f.accepted, f.acceptedLate)
		}
	}
	if p.store != nil {
		// A write whose holder's ctx ended on its way may have been
		// refused without the holder seeing it.
		f.storeRefused = p.store.refusals()
		if f.storeRefused < f.token || f.storeRefused > f.token+f.noAnswer {
			t.Errorf("the store refused %d requests; the holders saw %d writes refused, and %d without answer",
				f.storeRefused, f.token, f.noAnswer)
		}
	}
	f.leaked, _ = countLeases(t, p.c, p.ns, nil)
	figures.add(func(s *summary) { s.pause.add(p.mode, *f) })
}

// pauseFigures are the figures of one mode of TestTorturePause.
type pauseFigures struct {
	pauses, inFlight, between int // rounds, of which in flight, and between
	takeovers                 int
	afterExpiry               []time.Duration // the takeover, after the paused holder's Lease expired
	paused                    []time.Duration // from SIGSTOP to SIGCONT
	toldLost                  int             // resumed holders whose call returned ErrLockLost
	// What became of the paused holders' writes: not sent (the holder
	// found its ctx ended), refused by Conflict or by the token, accepted
	// (acceptedLate: after the new holder's write), no answer.
	notSent, conflict, token, accepted, acceptedLate, noAnswer int
	storeRefused                                               int // the requests the fenced store refused, as it counts them
	takerConflicts                                             int // new holders' writes refused by Conflict
	wrote, final                                               int // writes that succeeded, and the count at the end
	ops                                                        int
	linearizable                                               bool
	leaked                                                     int
}

// pauseSummary holds TestTorturePause's figures, by mode, for a table of
// its own: those of each mode's last run, and how many runs it had.
type pauseSummary struct {
	modes map[string]pauseFigures
	runs  map[string]int
	wall  []time.Duration
}

func (s *pauseSummary) add(mode string, f pauseFigures) {
	if s.modes == nil {
		s.modes, s.runs = map[string]pauseFigures{}, map[string]int{}
	}
	s.modes[mode] = f
	s.runs[mode]++
}

// table is the pause table of docs/reliability.md, a column a mode, or ""
// without a run.
func (s *pauseSummary) table() string {
	if len(s.modes) == 0 {
		return ""
	}
	var b strings.Builder
	row := func(name string, cell func(f pauseFigures) string) {
		fmt.Fprintf(&b, "| %s |", name)
		for _, m := range pauseModes {
			f, ok := s.modes[m]
			if !ok {
				b.WriteString(" - |") // not run (-run)
				continue
			}
			fmt.Fprintf(&b, " %s |", cell(f))
		}
		b.WriteString("\n")
	}
	n := func(get func(f pauseFigures) int) func(pauseFigures) string {
		return func(f pauseFigures) string { return fmt.Sprint(get(f)) }
	}
	fmt.Fprintf(&b, "\npause figures (docs/reliability.md)\n\n")
	if max(s.runs[pauseUpdate], s.runs[pauseToken], s.runs[pauseBlind]) > 1 {
		fmt.Fprintf(&b, "(of each mode, the last of its runs: -count)\n\n")
	}
	fmt.Fprintf(&b, "| figure | Update[T] (resourceVersion) | fenced store (token) | blind writes |\n|---|---|---|---|\n")
	row("pauses past the lease (SIGSTOP between the read and the write)", n(func(f pauseFigures) int { return f.pauses }))
	row("- write in flight, holder checks its ctx", func(f pauseFigures) string {
		return fmt.Sprintf("%d, %d", f.inFlight, f.pauses-f.inFlight)
	})
	row("- resumed after the new holder's write, between its read and write", func(f pauseFigures) string {
		return fmt.Sprintf("%d, %d", f.pauses-f.between, f.between)
	})
	row("takeovers during the pauses, after the paused holder's Lease expired", n(func(f pauseFigures) int { return f.takeovers }))
	row("takeover after the paused holder's Lease expired, max", func(f pauseFigures) string { return durList(f.afterExpiry) })
	row("pause (SIGSTOP to SIGCONT), max", func(f pauseFigures) string { return durList(f.paused) })
	row("resumed holders told ErrLockLost", func(f pauseFigures) string { return fmt.Sprintf("%d of %d", f.toldLost, f.pauses) })
	row("stale writes not sent (the holder found its ctx ended)", n(func(f pauseFigures) int { return f.notSent }))
	row("stale writes refused by Conflict", n(func(f pauseFigures) int { return f.conflict }))
	row("stale writes refused by the token (as the store counts)", func(f pauseFigures) string {
		return fmt.Sprintf("%d (%d)", f.token, f.storeRefused)
	})
	row("stale writes accepted: overlaps that reached the store (after the new holder's write)", func(f pauseFigures) string {
		return fmt.Sprintf("%d (%d)", f.accepted, f.acceptedLate)
	})
	row("stale writes without answer (the ctx ended on their way)", n(func(f pauseFigures) int { return f.noAnswer }))
	row("new holders' writes refused by Conflict", n(func(f pauseFigures) int { return f.takerConflicts }))
	row("writes that succeeded, count at the end", func(f pauseFigures) string { return fmt.Sprintf("%d, %d", f.wrote, f.final) })
	row("updates lost", n(func(f pauseFigures) int { return max(f.wrote-f.final, 0) }))
	row("operations checked, linearizable", func(f pauseFigures) string {
		if f.linearizable {
			return fmt.Sprintf("%d, yes", f.ops)
		}
		return fmt.Sprintf("%d, no", f.ops)
	})
	row("Leases leaked (must be 0)", n(func(f pauseFigures) int { return f.leaked }))
	fmt.Fprintf(&b, "| test wall time (the modes as parallel subtests), max | %s | | |\n", durList(s.wall))
	return b.String()
}
