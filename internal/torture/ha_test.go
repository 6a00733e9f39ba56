package torture_test

import (
	"cmp"
	"fmt"
	"math/rand/v2"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/leaselock/leaselock/internal/localapi"
	"github.com/leaselock/leaselock/internal/testenv"
)

// The size of the HA run; LEASELOCK_TORTURE_PROCS and
// LEASELOCK_TORTURE_GOROUTINES set its workers too.
const (
	haMembersEnv = "LEASELOCK_TORTURE_HA_MEMBERS"
	haServersEnv = "LEASELOCK_TORTURE_HA_SERVERS"
	haRoundsEnv  = "LEASELOCK_TORTURE_HA_ROUNDS"
)

const (
	haLease = 5 * time.Second
	haRetry = 100 * time.Millisecond
	// haPause is how long a paused API server stays stopped. It is
	// shorter than the lease less withlock's margin (a fifth of it): a
	// write of a critical section that the pause holds then lands before
	// any other locker can take the lock over. A longer pause is a holder
	// paused past its lease, which the lock cannot fence (README), and a
	// write without a resourceVersion, as the workers write, then loses an
	// increment.
	haPause = 2500 * time.Millisecond
	// haMemberDown and haServerDown are how long a killed etcd leader
	// and a killed API server stay down before they start again.
	haMemberDown = 2 * time.Second
	haServerDown = time.Second
	// haMemberPause is how long a paused etcd follower stays stopped: the
	// API servers' requests and watches that it carries wait, so a
	// server's watch cache can fall behind while the server answers
	// through the other members.
	haMemberPause = 3 * time.Second
	// haNetGap is the mean time between two network faults.
	haNetGap = 300 * time.Millisecond
	// haSteps is how many increments the workers write after each fault
	// before the next, and haStepTimeout how long they are given for them.
	haSteps       = 10
	haStepTimeout = 2 * time.Minute
	// haGapSlack is what the bound on a lock's idle time allows beyond the
	// lease and the retry interval: the takeover's requests may wait out
	// the longest outage of the control plane (an etcd follower's pause;
	// an election takes less), then a network drop (1s at most), and a
	// second for the backoff and the requests themselves.
	haGapSlack = haMemberPause + 2*time.Second
)

// TestTortureHA: workers contend for two locks on a control plane of
// several etcd members and kube-apiservers, each worker through a proxy in
// front of its own API server, as a replica behind a load balancer, while
// the test kills the etcd leader (SIGKILL, then a restart on its data),
// pauses an etcd follower (SIGSTOP, SIGCONT: the requests and watches of
// the API servers that it carries wait), kills an API server just as a
// release of one of its workers is on its way (SIGKILL, then a restart),
// pauses an API server (SIGSTOP, SIGCONT), and injects network faults into
// the proxies all along: delays, drops, connections cut, responses lost
// after the request reached the server.
//
// Passes when no two critical sections of a lock overlap, each lock's
// history is linearizable, each counter equals the increments written
// (give or take the writes that got no answer), no Lease is left, every
// goroutine writes again once the faults end, and no lock stands free
// longer than the lease duration + the retry interval + haGapSlack while
// workers wait for it (a holder whose release was lost leaves the Lease
// until it expires).
func TestTortureHA(t *testing.T) {
	members := envInt(t, haMembersEnv, 3)
	servers := envInt(t, haServersEnv, 2)
	rounds := envInt(t, haRoundsEnv, 1)
	if servers < 2 {
		// With one server, its kill and its pause stop every worker, and
		// the bound on a free lock would have to include the restart.
		t.Fatalf("%s=%d: an HA run needs at least 2 API servers", haServersEnv, servers)
	}
	procs := max(envInt(t, procsEnv, 3), servers)
	goroutines := envInt(t, goroutinesEnv, 3)
	began := time.Now()
	run := startHARun(t, members, servers)
	startup := time.Since(began)
	t.Logf("%d etcd members and %d API servers ready in %v (logs in %s)", members, servers, startup.Round(time.Millisecond), run.ha.Dir)

	c, err := client.NewWithWatch(run.ha.Servers[0].Config, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ns := testenv.Namespace(t, c)
	locks := []string{"torture-ha-a", "torture-ha-b"}
	createCounters(t, c, ns, locks)
	run.startWorkers(ns, locks, procs, goroutines)

	nf := startNetFaults(run.proxies, haNetGap)
	t.Cleanup(func() { nf.stop() })
	for r := range rounds {
		run.step("the etcd leader's kill")
		run.killLeader()
		run.step("an etcd follower's pause")
		run.pauseFollower()
		run.step("an API server's kill")
		run.killServer(r % servers)
		run.step("an API server's pause")
		run.pauseServer((r + 1) % servers)
	}
	run.step("the end of the network faults")
	run.figs.net = nf.stop()
	run.netEvents = nf.events
	quiet := time.Now()
	run.awaitRecovery(quiet, procs, goroutines)
	run.ws.stop()
	run.ws.wait()

	recs := run.ws.snapshot()
	run.checkDone(recs, procs)
	for _, l := range locks {
		run.figs.histories.add(checkHistory(t, c, ns, l, recs, goroutines))
	}
	run.figs.leaked, _ = countLeases(t, c, ns, nil)
	run.checkGaps(recs, locks)
	run.countCaught(recs)
	run.figs.shape = fmt.Sprintf("%d etcd members, %d API servers; %d x %d (2 locks); %d round(s) of faults", members, servers, procs, goroutines, rounds)
	run.figs.startup = []time.Duration{startup}
	run.figs.wall = []time.Duration{time.Since(began)}
	run.figs.runs = 1
	figures.add(func(s *summary) { s.ha.merge(run.figs) })
}

// haRun is one run of TestTortureHA: the control plane, a proxy in front of
// each API server, and the workers; worker p uses API server p % servers.
type haRun struct {
	t       *testing.T
	ha      *localapi.HA
	proxies []*proxy
	ws      *workers

	// armed is 1 + the API server whose workers' "leaving" records go to
	// leaving; 0 while none is to be killed.
	armed   atomic.Int32
	leaving chan record

	lastFault time.Time
	kills     []serverKill
	netEvents []netEvent
	figs      haSummary
}

// serverKill is when an API server was killed.
type serverKill struct {
	server int
	at     time.Time
}

func startHARun(t *testing.T, members, servers int) *haRun {
	t.Helper()
	testenv.Config(t) // skips without the binaries, fails without them in CI
	ha, err := localapi.StartHA(members, servers)
	if err != nil {
		t.Fatalf("start an HA control plane: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			logTails(t, ha.Dir)
		}
		if err := ha.Stop(); err != nil {
			t.Errorf("stop the HA control plane: %v", err)
		}
	})
	run := &haRun{t: t, ha: ha, leaving: make(chan record, 1), lastFault: time.Now(), figs: newHASummary()}
	for _, s := range ha.Servers {
		u, err := url.Parse(s.Config.Host)
		if err != nil {
			t.Fatal(err)
		}
		run.proxies = append(run.proxies, startProxy(t, u.Host))
	}
	return run
}

// logTails logs the last lines of every process's log in dir, which Stop
// removes.
func logTails(t *testing.T, dir string) {
	logs, _ := filepath.Glob(filepath.Join(dir, "*.log"))
	for _, l := range logs {
		data, err := os.ReadFile(l)
		if err != nil {
			continue
		}
		lines := strings.Split(strings.TrimSpace(string(data)), "\n")
		t.Logf("the last lines of %s:\n%s", filepath.Base(l), strings.Join(lines[max(len(lines)-15, 0):], "\n"))
	}
}

// startWorkers starts procs workers of goroutines goroutines that contend
// until stopped, each through the proxy of its API server; of the workers
// of each server, half watch and half poll.
func (run *haRun) startWorkers(ns string, locks []string, procs, goroutines int) {
	servers := len(run.proxies)
	run.ws = newWorkers(run.t)
	run.ws.onRecord = func(r record) {
		if r.Kind == "leaving" && int(run.armed.Load()) == r.Proc%servers+1 {
			select {
			case run.leaving <- r:
			default:
			}
		}
	}
	var kubeconfigs []string
	for i, p := range run.proxies {
		cfg := rest.CopyConfig(run.ha.Servers[i].Config)
		cfg.Host = "https://" + p.addr()
		kubeconfigs = append(kubeconfigs, writeKubeconfig(run.t, cfg))
	}
	for p := range procs {
		run.ws.start(workerConfig{
			Kubeconfig: kubeconfigs[p%servers], Namespace: ns, Proc: p, Goroutines: goroutines, Ops: 1000, Locks: locks,
			LeaseDuration: haLease, RetryInterval: haRetry, NoWatch: p/servers%2 == 1,
			UntilStopped: true, Announce: true,
		})
	}
}

// written counts the increments written in critical sections that began
// after since.
func written(recs []record, since time.Time) int {
	return count(recs, func(r record) bool { return r.Write == wroteYes && r.Start > since.UnixNano() })
}

// step waits until the workers wrote haSteps increments since the last
// fault, and fails t if they do not within haStepTimeout.
func (run *haRun) step(before string) {
	run.t.Helper()
	deadline := time.Now().Add(haStepTimeout)
	for written(run.ws.snapshot(), run.lastFault) < haSteps {
		if time.Now().After(deadline) || run.ws.allExited() {
			run.t.Fatalf("before %s: %d increments written in %v since the last fault, want %d",
				before, written(run.ws.snapshot(), run.lastFault), haStepTimeout, haSteps)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// killLeader kills the etcd leader with SIGKILL, waits for the others to
// elect another, and starts it again on its data after haMemberDown.
func (run *haRun) killLeader() {
	t := run.t
	t.Helper()
	leader := run.awaitLeader(nil)
	at := time.Now()
	if err := leader.Kill(); err != nil {
		t.Fatalf("kill etcd leader %s: %v", leader.Name, err)
	}
	elected := time.Duration(0)
	if len(run.ha.Members) > 1 {
		next := run.awaitLeader(leader)
		elected = time.Since(at)
		t.Logf("etcd leader %s killed at %s; %s leads %v later", leader.Name, stamp(at.UnixNano()), next.Name, elected.Round(time.Millisecond))
	}
	time.Sleep(time.Until(at.Add(haMemberDown)))
	if err := leader.Restart(); err != nil {
		t.Fatalf("restart etcd member %s: %v", leader.Name, err)
	}
	down := time.Since(at)
	t.Logf("etcd member %s back after %v", leader.Name, down.Round(time.Millisecond))
	run.figs.leaderKills++
	run.figs.elections = append(run.figs.elections, elected)
	run.figs.memberDown = append(run.figs.memberDown, down)
	run.lastFault = time.Now()
}

// pauseFollower stops an etcd member that does not lead, picked at random
// (the one member of a cluster of one), with SIGSTOP for haMemberPause.
func (run *haRun) pauseFollower() {
	t := run.t
	t.Helper()
	leader := run.awaitLeader(nil)
	m := leader
	if len(run.ha.Members) > 1 {
		for m == leader {
			m = run.ha.Members[rand.IntN(len(run.ha.Members))]
		}
	}
	at := time.Now()
	if err := m.Pause(); err != nil {
		t.Fatalf("pause etcd member %s: %v", m.Name, err)
	}
	time.Sleep(haMemberPause)
	if err := m.Resume(); err != nil {
		t.Fatalf("resume etcd member %s: %v", m.Name, err)
	}
	t.Logf("etcd member %s (not the leader) paused at %s for %v", m.Name, stamp(at.UnixNano()), haMemberPause)
	run.figs.memberPauses++
	run.lastFault = time.Now()
}

// awaitLeader returns the member that leads, once one other than not
// does, within 30s.
func (run *haRun) awaitLeader(not *localapi.Member) *localapi.Member {
	run.t.Helper()
	var err error
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		var m *localapi.Member
		if m, err = run.ha.Leader(); err == nil && m != not {
			return m
		}
	}
	run.t.Fatalf("no etcd leader within 30s: %v", err)
	return nil
}

// killServer kills API server i with SIGKILL the moment a critical section
// of one of its workers ends, so that the release is on its way, and
// starts it again after haServerDown. The calls the kill caught are
// counted from the records at the end (countCaught).
func (run *haRun) killServer(i int) {
	t := run.t
	t.Helper()
	select {
	case <-run.leaving:
	default:
	}
	run.armed.Store(int32(i + 1))
	select {
	case <-run.leaving:
	case <-time.After(30 * time.Second):
		t.Logf("no critical section of API server %d's workers ended in 30s: killed all the same", i)
	}
	at := time.Now()
	err := run.ha.Servers[i].Kill()
	run.armed.Store(0)
	if err != nil {
		t.Fatalf("kill API server %d: %v", i, err)
	}
	time.Sleep(haServerDown)
	if err := run.ha.Servers[i].Restart(); err != nil {
		t.Fatalf("restart API server %d: %v", i, err)
	}
	down := time.Since(at)
	t.Logf("API server %d killed at %s, back (ready) after %v", i, stamp(at.UnixNano()), down.Round(time.Millisecond))
	run.kills = append(run.kills, serverKill{server: i, at: at})
	run.figs.serverDown = append(run.figs.serverDown, down)
	run.lastFault = time.Now()
}

// pauseServer stops API server i with SIGSTOP for haPause: its watches send
// nothing and its requests wait, while the other servers go on.
func (run *haRun) pauseServer(i int) {
	t := run.t
	t.Helper()
	at := time.Now()
	if err := run.ha.Servers[i].Pause(); err != nil {
		t.Fatalf("pause API server %d: %v", i, err)
	}
	time.Sleep(haPause)
	if err := run.ha.Servers[i].Resume(); err != nil {
		t.Fatalf("resume API server %d: %v", i, err)
	}
	t.Logf("API server %d paused at %s for %v", i, stamp(at.UnixNano()), haPause)
	run.figs.pauses++
	run.lastFault = time.Now()
}

// awaitRecovery waits until every goroutine of every worker has written an
// increment in a critical section that began after quiet, the end of the
// faults, and fails t for those that did not within haStepTimeout.
func (run *haRun) awaitRecovery(quiet time.Time, procs, goroutines int) {
	t := run.t
	t.Helper()
	var missing []string
	for deadline := time.Now().Add(haStepTimeout); ; time.Sleep(20 * time.Millisecond) {
		wrote := map[[2]int]bool{}
		for _, r := range run.ws.snapshot() {
			if r.Write == wroteYes && r.Start > quiet.UnixNano() {
				wrote[[2]int{r.Proc, r.G}] = true
			}
		}
		missing = missing[:0]
		for p := range procs {
			for g := range goroutines {
				if !wrote[[2]int{p, g}] {
					missing = append(missing, fmt.Sprintf("p%dg%d", p, g))
				}
			}
		}
		if len(missing) == 0 {
			t.Logf("every goroutine wrote again within %v of the last fault", time.Since(quiet).Round(time.Millisecond))
			return
		}
		if time.Now().After(deadline) || run.ws.allExited() {
			t.Errorf("after the faults ended, %s wrote no increment in %v", strings.Join(missing, ", "), haStepTimeout)
			return
		}
	}
}

// checkDone checks that every worker reported its totals, and counts the
// withlock calls that returned an error.
func (run *haRun) checkDone(recs []record, procs int) {
	t := run.t
	t.Helper()
	seen := map[int]bool{}
	for _, r := range recs {
		if r.Kind == "done" {
			seen[r.Proc] = true
			run.figs.doErrors += r.DoErr
		}
	}
	for p := range procs {
		if !seen[p] {
			t.Errorf("worker %d did not report its totals", p)
		}
	}
	shown := 0
	for _, r := range recs {
		if r.Err != "" && shown < 5 {
			shown++
			t.Logf("p%d g%d on %s: withlock returned: %s (write: %q)", r.Proc, r.G, r.Lock, r.Err, r.Write)
		}
	}
}

// checkGaps finds, for each lock, the longest time between the end of a
// critical section and the start of the next, when no one held the lock in
// between: a release lost to a fault leaves the Lease until it expires,
// and the next holder then takes it over. It fails t for a gap longer than
// the lease + the retry interval + haGapSlack.
func (run *haRun) checkGaps(recs []record, locks []string) {
	t := run.t
	t.Helper()
	bound := haLease + haRetry + haGapSlack
	longest := "none"
	var from, to int64 // the longest gap
	for _, l := range locks {
		var sections []record
		for _, r := range recs {
			if r.Kind == "op" && r.Lock == l && r.Start != 0 {
				sections = append(sections, r)
			}
		}
		slices.SortFunc(sections, func(a, b record) int { return cmp.Compare(a.Start, b.Start) })
		var last record // the section that ended last so far
		for i, r := range sections {
			if i > 0 && r.Proc%len(run.proxies) != sections[i-1].Proc%len(run.proxies) {
				run.figs.crossHandoffs++
			}
			run.figs.handoffs += min(i, 1)
			lastEnd := last.End
			if gap := time.Duration(r.Start - lastEnd); i > 0 && gap > 0 {
				if gap > run.figs.maxGap {
					run.figs.maxGap = gap
					from, to = lastEnd, r.Start
					longest = fmt.Sprintf("lock %s, from %s (p%dg%d's section ended; its release returned %v later) to %s (p%dg%d's began)",
						l, stamp(lastEnd), last.Proc, last.G, time.Duration(last.Returned-last.End).Round(time.Millisecond),
						stamp(r.Start), r.Proc, r.G)
				}
				if gap > bound {
					t.Errorf("lock %s stood free from %s to %s (%v), want at most lease + retry interval + %v = %v",
						l, stamp(lastEnd), stamp(r.Start), gap.Round(time.Millisecond), haGapSlack, bound)
				}
			}
			if r.End > last.End {
				last = r
			}
		}
	}
	t.Logf("longest time a lock stood free between two holders: %v (bound %v): %s", run.figs.maxGap.Round(time.Millisecond), bound, longest)
	for _, e := range run.netEvents {
		// The faults that began within it, or in the second before.
		if at := e.at.UnixNano(); at > from-int64(time.Second) && at < to {
			t.Logf("  network fault at %s: %s on proxy %d", stamp(at), e.kind, e.proxy)
		}
	}
}

// countCaught counts the withlock calls of each killed API server's workers
// that the kill caught: acquiring, in the critical section, releasing.
func (run *haRun) countCaught(recs []record) {
	servers := len(run.proxies)
	for _, k := range run.kills {
		at := k.at.UnixNano()
		var acq, in, rel int
		for _, r := range recs {
			if r.Kind != "op" || r.Proc%servers != k.server || r.Called > at || r.Returned < at {
				continue
			}
			switch {
			case r.Start == 0 || r.Start > at:
				acq++
			case r.End > at:
				in++
			default:
				rel++
			}
		}
		run.t.Logf("the kill of API server %d caught %d calls acquiring, %d in the critical section, %d releasing", k.server, acq, in, rel)
		run.figs.serverKills++
		run.figs.midAcquire += acq
		run.figs.midSection += in
		run.figs.midRelease += rel
	}
}

// haSummary holds the figures of TestTortureHA, for the second table.
type haSummary struct {
	runs         int
	shape        string
	histories    histories
	net          map[string]int
	leaderKills  int
	elections    []time.Duration // from a leader's kill to a new leader
	memberDown   []time.Duration // from a leader's kill to its restart, healthy
	memberPauses int
	serverKills  int
	// the withlock calls of a killed server's workers that its kill
	// caught acquiring, in the critical section, and releasing
	midAcquire, midSection, midRelease int
	serverDown                         []time.Duration
	pauses                             int
	doErrors                           int
	// handoffs counts the passes of a lock from one critical section to
	// the next, crossHandoffs those between workers of two API servers:
	// the next holder watched or polled through another server than the
	// one its predecessor's release went through.
	handoffs, crossHandoffs int
	maxGap                  time.Duration
	leaked                  int
	startup, wall           []time.Duration
}

func newHASummary() haSummary { return haSummary{net: map[string]int{}} }

func (h *haSummary) merge(o haSummary) {
	h.runs += o.runs
	h.shape = o.shape
	h.histories.ops += o.histories.ops
	h.histories.count += o.histories.count
	h.histories.linearOK += o.histories.linearOK
	h.histories.overlaps += o.histories.overlaps
	if h.net == nil {
		h.net = map[string]int{}
	}
	for k, v := range o.net {
		h.net[k] += v
	}
	h.leaderKills += o.leaderKills
	h.elections = append(h.elections, o.elections...)
	h.memberDown = append(h.memberDown, o.memberDown...)
	h.memberPauses += o.memberPauses
	h.serverKills += o.serverKills
	h.midAcquire += o.midAcquire
	h.midSection += o.midSection
	h.midRelease += o.midRelease
	h.serverDown = append(h.serverDown, o.serverDown...)
	h.pauses += o.pauses
	h.doErrors += o.doErrors
	h.handoffs += o.handoffs
	h.crossHandoffs += o.crossHandoffs
	h.maxGap = max(h.maxGap, o.maxGap)
	h.leaked += o.leaked
	h.startup = append(h.startup, o.startup...)
	h.wall = append(h.wall, o.wall...)
}

// table is the HA table of docs/reliability.md, or "" without a run.
func (h *haSummary) table() string {
	if h.runs == 0 {
		return ""
	}
	var b strings.Builder
	row := func(k, v string) { fmt.Fprintf(&b, "| %s | %s |\n", k, v) }
	fmt.Fprintf(&b, "\nHA figures (docs/reliability.md)\n\n")
	row("figure", "value")
	row("---", "---")
	row("control plane and workers", h.shape)
	row("operations checked", fmt.Sprint(h.histories.ops))
	row("histories checked linearizable", fmt.Sprintf("%d of %d", h.histories.linearOK, h.histories.count))
	row("network faults injected by kind", kindList(h.net, allNetFaults))
	row("etcd leader kills (SIGKILL, restart after "+haMemberDown.String()+")", fmt.Sprint(h.leaderKills))
	row("new etcd leader after a kill (max)", durList(h.elections))
	row("killed member healthy again after (max)", durList(h.memberDown))
	row("etcd follower pauses (SIGSTOP for "+haMemberPause.String()+")", fmt.Sprint(h.memberPauses))
	row("API server kills (SIGKILL, restart after "+haServerDown.String()+")", fmt.Sprint(h.serverKills))
	row("calls the kills caught: acquiring, in the critical section, releasing",
		fmt.Sprintf("%d, %d, %d", h.midAcquire, h.midSection, h.midRelease))
	row("killed API server ready again after (max)", durList(h.serverDown))
	row("API server pauses (SIGSTOP for "+haPause.String()+")", fmt.Sprint(h.pauses))
	row("handoffs between workers of two API servers", fmt.Sprintf("%d of %d", h.crossHandoffs, h.handoffs))
	row("withlock calls that returned an error", fmt.Sprint(h.doErrors))
	row(fmt.Sprintf("longest a lock stood free between holders (bound %v)", haLease+haRetry+haGapSlack), h.maxGap.Round(time.Millisecond).String())
	row("overlaps found (must be 0)", fmt.Sprint(h.histories.overlaps))
	row("Leases leaked (must be 0)", fmt.Sprint(h.leaked))
	row("control plane start (max)", durList(h.startup))
	row("test wall time, start included (max)", durList(h.wall))
	return b.String()
}
