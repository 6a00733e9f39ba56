package resourcelock

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
)

// TestHeadStart: waiters that saw the deletion go in order of handoffs
// waited, a gap apart, with a random tie-break; the head start counts from
// the deletion, so a waiter that comes after it is over goes at once, and so
// does a waiter that was passed over.
func TestHeadStart(t *testing.T) {
	const gap = 4 * time.Millisecond
	tests := []struct {
		name     string
		ahead    int
		seen     time.Duration
		min, max time.Duration
	}{
		{"head of the queue, deletion just seen", 0, 0, 0, gap / 2},
		{"behind the head", 1, 0, gap, gap + gap/2},
		{"three behind", 3, 0, 3 * gap, 3*gap + gap/2},
		{"lost one more than the last winner had: its peer", -1, 0, 0, gap / 2},
		{"passed over by the last winner", -2, 0, 0, 0},
		{"three behind, seen a gap ago", 3, gap, 2 * gap, 2*gap + gap/2},
		{"arrives after the head starts are over", 7, time.Second, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for range 200 {
				if got := delay(tt.ahead, gap, gap/2, tt.seen); got < tt.min || got > tt.max {
					t.Fatalf("delay(%d, %v, %v) = %v, want in [%v, %v]", tt.ahead, gap, tt.seen, got, tt.min, tt.max)
				}
			}
		})
	}
}

// TestTieWindow: a quarter of a millisecond until a call's Create collides,
// whatever the gap, then doubling up to the least gap, so the tie-break
// never reaches the next slot; half a gap more for each peer.
func TestTieWindow(t *testing.T) {
	const us = time.Microsecond
	tests := []struct {
		gap               time.Duration
		collisions, peers int
		want              time.Duration
	}{
		{8 * time.Millisecond, 0, 0, 250 * us},
		{minGap, 0, 0, 250 * us},
		{maxGap, 0, 0, 250 * us},
		{8 * time.Millisecond, 1, 0, 500 * us},
		{8 * time.Millisecond, 2, 0, minGap},
		{8 * time.Millisecond, 9, 0, minGap},
		{8 * time.Millisecond, 0, 1, 4250 * us},
		{8 * time.Millisecond, 1, 6, 24500 * us},
	}
	for _, tt := range tests {
		if got := tieWindow(tt.gap, tt.collisions, tt.peers); got != tt.want {
			t.Errorf("tieWindow(%v, %d, %d): got %v, want %v", tt.gap, tt.collisions, tt.peers, got, tt.want)
		}
	}
}

// TestGapOutweighsCollisions: one delayed Create that collided widens the
// gap by more than a dozen that won narrow it, and the gap stays within
// [minGap, maxGap].
func TestGapOutweighsCollisions(t *testing.T) {
	lw := &leaseWatch{herd: herd{gap: firstGap}}
	lw.collided()
	for range 12 {
		lw.won()
	}
	if lw.gap <= firstGap {
		t.Errorf("gap after a collision and 12 wins: got %v, want more than %v", lw.gap, firstGap)
	}
	for range 200 {
		lw.won()
	}
	if lw.gap != minGap {
		t.Errorf("gap after 200 more wins: got %v, want %v", lw.gap, minGap)
	}
	for range 20 {
		lw.collided()
	}
	if lw.gap != maxGap {
		t.Errorf("gap after 20 collisions: got %v, want %v", lw.gap, maxGap)
	}
}

// TestPeers: only a waiter that lost one handoff more than the last winner
// had is tied with a cohort, and its peers are the rest of the queue that
// has not had its turn.
func TestPeers(t *testing.T) {
	tests := []struct {
		name                string
		lost, rounds, queue int
		want                int
	}{
		{"8 asked together, first handoff done", 1, 0, 8, 6},
		{"8 asked together, 6 handoffs done", 6, 5, 8, 1},
		{"last of the cohort", 7, 6, 8, 0},
		{"8 asked together, the first Create won", 0, 0, 8, 6},
		{"head of a queue served in order", 7, 7, 8, 0},
		{"behind the head", 3, 7, 8, 0},
		{"passed by the last winner", 5, 1, 8, 0},
		{"queue not known yet", 1, 0, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := peers(tt.lost, tt.rounds, tt.queue); got != tt.want {
				t.Errorf("peers(%d, %d, %d): got %d, want %d", tt.lost, tt.rounds, tt.queue, got, tt.want)
			}
		})
	}
}

// TestHerdDelayCohort: a waiter tied with a cohort bigger than the queue
// its watch knows spreads its Create over its spread, but over no more than
// the head start of a locker that asks again after its turn (rounds gaps);
// a waiter whose peers the queue counts, and the head of a queue served in
// order, do not spread.
func TestHerdDelayCohort(t *testing.T) {
	const gap, spread = 4 * time.Millisecond, 20 * time.Millisecond
	tests := []struct {
		name                string
		lost, rounds, queue int
		cohort              bool
		window              time.Duration
	}{
		{"first handoff of lockers that asked together", 0, 0, 0, true, headTie},
		{"the cohort, two handoffs on", 2, 1, 2, true, gap},
		{"the cohort, ten handoffs on", 10, 9, 10, true, spread},
		{"a cohort as big as a queue seen before", 1, 0, 8, false, headTie + 6*gap/2},
		{"head of a queue served in order", 7, 7, 8, false, headTie},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := herd{gap: gap, queue: tt.queue}
			var longest time.Duration
			for range 200 {
				// Seen at the deletion: the delay counts from it.
				d, cohort := h.delayFor(tt.rounds, turns{handoffs: tt.lost, spread: spread}, 0)
				if cohort != tt.cohort {
					t.Fatalf("delayFor(%d, {%d, %v}) with queue %d: got cohort %t, want %t", tt.rounds, tt.lost, spread, tt.queue, cohort, tt.cohort)
				}
				longest = max(longest, d)
			}
			if longest > tt.window || longest <= tt.window/2 {
				t.Errorf("longest of 200 delays: got %v, want in (%v, %v]", longest, tt.window/2, tt.window)
			}
		})
	}
}

// TestCohortSpread: in a cohort, a Create that collided spreads the next
// ones over the time it took, up to maxSpread, and each handoff another
// waiter wins cleanly narrows the spread again; outside a cohort the spread
// stays as it was.
func TestCohortSpread(t *testing.T) {
	a := &turns{cohort: true}
	a.rtt = 15 * time.Millisecond
	a.lost(true)
	if a.spread != 15*time.Millisecond {
		t.Fatalf("after a collision whose Create took 15ms: got spread %v, want 15ms", a.spread)
	}
	a.lost(false)
	if a.spread != 9*time.Millisecond {
		t.Fatalf("after a clean handoff: got spread %v, want 9ms", a.spread)
	}
	a.rtt = time.Second
	a.lost(true)
	if a.spread != maxSpread {
		t.Fatalf("after a Create that took 1s: got spread %v, want %v", a.spread, maxSpread)
	}
	for range 20 {
		a.lost(false)
	}
	if a.spread != headTie {
		t.Fatalf("after 20 clean handoffs: got spread %v, want %v", a.spread, headTie)
	}
	a.cohort = false
	a.lost(true)
	if a.spread != headTie {
		t.Errorf("a collision outside a cohort: got spread %v, want %v", a.spread, headTie)
	}
}

// TestQueueEstimate: the queue is one more than the most handoffs a recent
// winner waited, and forgets lockers that left once twice its length of
// winners have waited less.
func TestQueueEstimate(t *testing.T) {
	lw := &leaseWatch{changed: make(chan struct{})}
	see := func(waited ...int) {
		for _, n := range waited {
			lw.update(&coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{
				Annotations: map[string]string{HandoffsAnnotation: strconv.Itoa(n)},
			}})
		}
	}
	see(0, 1, 2, 3, 4, 5, 6, 7) // a round of 8 that asked together
	if lw.queue != 8 {
		t.Fatalf("after a round of 8: got queue %d, want 8", lw.queue)
	}
	see(0, 1, 2, 3, 4, 5, 6) // the next round, not over yet
	if lw.queue != 8 {
		t.Fatalf("within the next round: got queue %d, want 8", lw.queue)
	}
	see(1, 1, 1, 1, 1, 1, 1, 1, 1, 1) // six left; two take turns
	if lw.queue != 2 {
		t.Fatalf("after two took turns 10 times: got queue %d, want 2", lw.queue)
	}
}

// TestHerdOutlivesWatch: a watch that closes leaves its queue estimate and
// gap to the next watch of the same Lease, so replicas that ask together
// again after the linger still know how many they are.
func TestHerdOutlivesWatch(t *testing.T) {
	c := fake.NewClientBuilder().Build()
	rl := NewResourceLocker(c, "default", WithMetrics(nil))
	lease := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "l", Namespace: "default"}}
	if err := c.Create(context.Background(), lease); err != nil {
		t.Fatal(err)
	}
	lw := rl.watches.watch(context.Background(), lease)
	if lw == nil {
		t.Fatal("watch: got nil, want a watch")
	}
	lw.set(&coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{
		Name: "l", Annotations: map[string]string{HandoffsAnnotation: "7"},
	}})
	lw.collided()
	wantGap := lw.gap
	rl.watches.end(lw, true)
	next := rl.watches.watch(context.Background(), lease)
	if next == nil {
		t.Fatal("watch after end: got nil, want a watch")
	}
	defer rl.watches.end(next, true)
	if next == lw {
		t.Fatal("watch after end: got the ended watch")
	}
	if got := next.state().lease; got != lease {
		t.Errorf("new watch starts from %v, want the Lease it was opened with", got)
	}
	next.mu.Lock()
	h := next.herd
	next.mu.Unlock()
	if h.queue != 8 {
		t.Errorf("queue of the next watch: got %d, want 8", h.queue)
	}
	if h.gap != wantGap || h.gap == firstGap {
		t.Errorf("gap of the next watch: got %v, want %v", h.gap, wantGap)
	}
}

// TestFollowCountsCoalescedHandoffs: a waiter whose watch shows a new
// holder, without the deletion between, still counts the handoff it lost;
// a renewal by the same holder is no handoff.
func TestFollowCountsCoalescedHandoffs(t *testing.T) {
	lease := func(uid types.UID, holder, rv string) *coordinationv1.Lease {
		return &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Name: "l", UID: uid, ResourceVersion: rv},
			Spec:       coordinationv1.LeaseSpec{HolderIdentity: ptr.To(holder)},
		}
	}
	tests := []struct {
		name       string
		before     *coordinationv1.Lease
		after      *coordinationv1.Lease
		wantCounts int
	}{
		{"deleted and created again", lease("1", "a", "10"), lease("2", "b", "12"), 1},
		{"taken over in place", lease("1", "a", "10"), lease("1", "b", "11"), 1},
		{"renewed by its holder", lease("1", "a", "10"), lease("1", "a", "11"), 0},
		{"deleted", lease("1", "a", "10"), nil, 0},
		{"nothing known before", nil, lease("2", "b", "12"), 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := &acquirer{lease: tt.before}
			if _, ok := a.follow(watchState{lease: tt.after, seq: 2, healthy: true}); !ok {
				t.Fatal("follow of a healthy watch: got false")
			}
			if a.turns.handoffs != tt.wantCounts {
				t.Errorf("handoffs: got %d, want %d", a.turns.handoffs, tt.wantCounts)
			}
			if a.lease != tt.after {
				t.Errorf("lease: got %v, want the watch's", a.lease)
			}
		})
	}
}

// TestContendedLockWatchesFirst: a locker that saw others take turns at a
// lock shortly before watches it before it creates it, so that replicas that
// ask together again do not all send a Create that must fail. Without that
// memory, or with a stale one, it creates first.
func TestContendedLockWatchesFirst(t *testing.T) {
	held := &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Name: "l", Namespace: "default"},
		Spec: coordinationv1.LeaseSpec{
			HolderIdentity:       ptr.To("other"),
			LeaseDurationSeconds: ptr.To(int32(60)),
			RenewTime:            ptr.To(metav1.NewMicroTime(time.Now())),
		},
	}
	recent := herd{gap: firstGap, queue: 3, ended: time.Now()}
	tests := []struct {
		name      string
		herd      *herd // what an earlier watch of the lock learned
		held      bool
		wantVerbs []string
	}{
		{name: "free, no memory", wantVerbs: []string{"create"}},
		{name: "held, no memory", held: true, wantVerbs: []string{"create", "watch"}},
		{name: "free, contended a moment ago", herd: &recent, wantVerbs: []string{"watch", "create"}},
		{name: "held, contended a moment ago", herd: &recent, held: true, wantVerbs: []string{"watch"}},
		{name: "free, one locker at a time", herd: &herd{gap: firstGap, queue: 1, ended: time.Now()}, wantVerbs: []string{"create"}},
		{name: "free, contended long ago", herd: &herd{gap: firstGap, queue: 3, ended: time.Now().Add(-2 * contendedFor)}, wantVerbs: []string{"create"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			base := fake.NewClientBuilder().Build()
			if tt.held {
				if err := base.Create(context.Background(), held.DeepCopy()); err != nil {
					t.Fatal(err)
				}
			}
			var verbs []string
			var mu sync.Mutex
			log := func(verb string) {
				mu.Lock()
				defer mu.Unlock()
				verbs = append(verbs, verb)
			}
			c := interceptor.NewClient(WatchListFake{base}, interceptor.Funcs{
				Create: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
					log("create")
					return c.Create(ctx, obj, opts...)
				},
				Get: func(ctx context.Context, c client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
					log("get")
					return c.Get(ctx, key, obj, opts...)
				},
				Watch: func(ctx context.Context, c client.WithWatch, list client.ObjectList, opts ...client.ListOption) (watch.Interface, error) {
					log("watch")
					return c.Watch(ctx, list, opts...)
				},
			})
			// A second: the held cases wait it out on their watch, with no
			// request, while a shorter one (20ms once) can pass during the
			// lost Create on a loaded machine, and the call then reads
			// instead of watching, as it should past its deadline.
			rl := NewResourceLocker(c, "default", WithMetrics(nil), WithRetryTimeout(time.Second))
			if tt.herd != nil {
				rl.watches.herds["l"] = *tt.herd
			}
			err := rl.AcquireLock(context.Background(), "l", "me")
			if tt.held != errors.Is(err, ErrLockHeld) {
				t.Fatalf("AcquireLock: got %v, want ErrLockHeld: %v", err, tt.held)
			}
			mu.Lock()
			defer mu.Unlock()
			if !slices.Equal(verbs, tt.wantVerbs) {
				t.Errorf("requests: got %v, want %v", verbs, tt.wantVerbs)
			}
		})
	}
}

// TestBusyWatchListTurnsPlain: a watch-list is replaced by a plain watch
// from the last version it sent when a call takes it up as it lingers, not
// while other calls use it; a plain watch is never replaced, and the
// changes after the switch still arrive.
func TestBusyWatchListTurnsPlain(t *testing.T) {
	base := fake.NewClientBuilder().Build()
	held := &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Name: "l", Namespace: "default"},
		Spec:       coordinationv1.LeaseSpec{HolderIdentity: ptr.To("other")},
	}
	if err := base.Create(context.Background(), held); err != nil {
		t.Fatal(err)
	}
	type request struct {
		list bool
		rv   string
	}
	var mu sync.Mutex
	var watches []request
	plain := make(chan struct{}, 1)
	c := interceptor.NewClient(WatchListFake{base}, interceptor.Funcs{
		Watch: func(ctx context.Context, c client.WithWatch, list client.ObjectList, opts ...client.ListOption) (watch.Interface, error) {
			w, err := c.Watch(ctx, list, opts...)
			o := (&client.ListOptions{}).ApplyOptions(opts)
			mu.Lock()
			watches = append(watches, request{IsWatchList(opts), o.Raw.ResourceVersion})
			mu.Unlock()
			if !IsWatchList(opts) {
				plain <- struct{}{}
			}
			return w, err
		},
	})
	rl := NewResourceLocker(c, "default", WithMetrics(nil))
	requests := func() []request {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(watches)
	}

	first := rl.watches.sync(context.Background(), "l")
	if first == nil {
		t.Fatal("sync: got nil, want the watch")
	}
	second := rl.watches.existing("l") // a concurrent waiter
	rl.watches.drop(second)
	rl.watches.drop(first) // lingers
	if got, want := requests(), []request{{list: true}}; !slices.Equal(got, want) {
		t.Fatalf("watches while in use: got %v, want %v", got, want)
	}

	busy := rl.watches.existing("l")
	t.Cleanup(func() { rl.watches.end(busy, true) })
	select {
	case <-plain:
	case <-time.After(10 * time.Second): // a hang, not a speed limit
		t.Fatal("no plain watch after a lingering watch-list was taken up")
	}
	if got, want := requests(), []request{{list: true}, {rv: held.ResourceVersion}}; !slices.Equal(got, want) {
		t.Errorf("watches after the lock got busy: got %v, want %v", got, want)
	}

	s := busy.state()
	if err := base.Delete(context.Background(), held); err != nil {
		t.Fatal(err)
	}
	for s.lease != nil {
		select {
		case <-s.changed:
		case <-time.After(10 * time.Second):
			t.Fatal("the plain watch did not show the deletion")
		}
		if s = busy.state(); !s.healthy {
			t.Fatal("the watch ended, want it healthy")
		}
	}

	rl.watches.drop(busy)
	again := rl.watches.existing("l")
	if again != busy {
		t.Fatal("existing: got another watch, want the lingering one")
	}
	select {
	case <-plain:
		t.Error("a plain watch was replaced")
	case <-time.After(100 * time.Millisecond):
	}
}

// TestUnlistSkipsReplayedChanges: while the plain watch that replaces a
// watch-list is sent, the watch-list's changes still apply; the plain watch
// sends them again, and they apply once. From the switch on, only the
// plain watch's events apply.
func TestUnlistSkipsReplayedChanges(t *testing.T) {
	list, plain := watch.NewFake(), watch.NewFake()
	lw := &leaseWatch{name: "l", clock: clock.RealClock{}, streams: streams{w: list, next: func() {}}, healthy: true, changed: make(chan struct{})}
	version := func(rv string) *coordinationv1.Lease {
		return &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "l", ResourceVersion: rv}}
	}
	step := func(w watch.Interface, ev watch.Event, wantSeq uint64) {
		t.Helper()
		lw.apply(w, ev)
		if lw.seq != wantSeq {
			t.Fatalf("after %s %s: seq got %d, want %d", ev.Type, ev.Object.(*coordinationv1.Lease).ResourceVersion, lw.seq, wantSeq)
		}
	}
	step(list, watch.Event{Type: watch.Added, Object: version("5")}, 1)
	step(list, watch.Event{Type: watch.Deleted, Object: version("6")}, 2)

	lw.next, lw.w = nil, plain // unlist switches
	if lw.apply(list, watch.Event{Type: watch.Added, Object: version("7")}) {
		t.Error("the watch-list's events apply after the switch")
	}
	step(plain, watch.Event{Type: watch.Added, Object: version("5")}, 2)
	step(plain, watch.Event{Type: watch.Deleted, Object: version("6")}, 2)
	if lw.lease != nil {
		t.Errorf("lease: got %v, want nil: it was deleted", lw.lease)
	}
	step(plain, watch.Event{Type: watch.Added, Object: version("7")}, 3)
	if lw.lease == nil || lw.lease.ResourceVersion != "7" {
		t.Errorf("lease: got %v, want version 7", lw.lease)
	}
}

// TestDeadWatchIsNotRegistered: a watch whose connection dropped after it
// started, before the call that opened it registered it (a watch-list that
// sent the Lease, then ended with a server restart), is not registered. Its
// end found nothing to forget, and nothing else would: every later waiter
// of the Lease would open watches only to drop them, and poll.
func TestDeadWatchIsNotRegistered(t *testing.T) {
	lease := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "l", Namespace: "default", ResourceVersion: "5"}}
	dropped := true
	c := interceptor.NewClient(fake.NewClientBuilder().WithObjects(lease.DeepCopy()).Build(), interceptor.Funcs{
		Watch: func(ctx context.Context, c client.WithWatch, list client.ObjectList, opts ...client.ListOption) (watch.Interface, error) {
			if !dropped {
				return c.Watch(ctx, list, opts...)
			}
			events := make(chan watch.Event)
			close(events) // the connection drops at once
			return watch.NewProxyWatcher(events), nil
		},
	})
	rl := NewResourceLocker(c, "default", WithMetrics(nil))
	lw, err := rl.watches.start(context.Background(), "l", lease, &metav1.ListOptions{ResourceVersion: "5"})
	if err != nil {
		t.Fatal(err)
	}
	for lw.state().healthy {
		<-lw.state().changed // until the pump has seen the end
	}
	if got := rl.watches.register(lw); got != nil {
		t.Errorf("register of an ended watch: got a watch (healthy %v), want nil", got.state().healthy)
	}
	if got := rl.watches.existing("l"); got != nil {
		t.Fatalf("existing after the ended watch: got one (healthy %v), want none", got.state().healthy)
	}
	dropped = false
	next := rl.watches.watch(context.Background(), lease)
	if next == nil || !next.state().healthy {
		t.Fatal("watch once the server answers: got no healthy watch")
	}
	defer rl.watches.end(next, true)
	if got := rl.watches.existing("l"); got != next {
		t.Errorf("existing: got %p, want the new watch %p", got, next)
	} else {
		rl.watches.drop(got)
	}
}

// heldByOther returns the Lease "l" in "default", held by "other" from now
// for 15s.
func heldByOther() *coordinationv1.Lease {
	return &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Name: "l", Namespace: "default"},
		Spec: coordinationv1.LeaseSpec{
			HolderIdentity:       ptr.To("other"),
			LeaseDurationSeconds: ptr.To[int32](15),
			RenewTime:            ptr.To(metav1.NewMicroTime(time.Now())),
		},
	}
}

// TestWaitFollowsAnotherCallsWatch has a call read the Lease held, and
// another call of the same locker register a watch meanwhile that has
// already shown the Lease deleted. The first call, taking up that watch to
// wait, must act on the deletion it shows, not wait for a change after it:
// nothing would come, and it would wait out its retry timeout while the
// lock is free.
func TestWaitFollowsAnotherCallsWatch(t *testing.T) {
	held := heldByOther()
	events := make(chan watch.Event) // the other call's watch: open, silent
	var rl *ResourceLocker
	var other *leaseWatch
	c := interceptor.NewClient(fake.NewClientBuilder().WithObjects(held.DeepCopy()).Build(), interceptor.Funcs{
		Watch: func(context.Context, client.WithWatch, client.ObjectList, ...client.ListOption) (watch.Interface, error) {
			return watch.NewProxyWatcher(events), nil
		},
		Get: func(ctx context.Context, c client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
			if err := c.Get(ctx, key, obj, opts...); err != nil || other != nil {
				return err
			}
			// The holder releases right after this read, and another call
			// of the locker, whose watch saw it, registers that watch.
			if err := c.Delete(ctx, obj.DeepCopyObject().(client.Object)); err != nil {
				return err
			}
			var err error
			if other, err = rl.watches.start(ctx, "l", obj.(*coordinationv1.Lease).DeepCopy(), &metav1.ListOptions{}); err != nil {
				return err
			}
			other.set(nil)
			if rl.watches.register(other) != other {
				return errors.New("the other call's watch was not registered")
			}
			return nil
		},
	})
	rl = NewResourceLocker(c, "default", WithRetryTimeout(2*time.Second), WithMetrics(nil))
	rl.watches.noWatchLists(logr.Discard(), errors.New("refused")) // read, as against a server without watch-lists
	defer func() {
		if other != nil {
			rl.watches.end(other, true)
		}
		close(events) // a ProxyWatcher's results end only when its channel does
	}()
	if err := rl.AcquireLock(context.Background(), "l", "me"); err != nil {
		t.Fatalf("AcquireLock with the lock free: %v", err)
	}
	if other == nil {
		t.Fatal("the other call's watch was never registered: the test did not run its case")
	}
	if err := rl.ReleaseLock(context.Background(), "l", "me"); err != nil {
		t.Fatalf("ReleaseLock: %v", err)
	}
}

// TestTryLockDoesNotWaitOnAWatch has a try-lock (retry timeout 0) find a
// watch of the same locker that shows the Lease deleted, while another
// locker's Lease is already there. It must make its one attempt and return
// ErrLockHeld, without the head start that orders waiters (here a long
// one) and without waiting on the watch for the winner's Lease (here up to
// the retry interval, a minute), and its lost Create must not widen the gap
// between waiters' head starts.
func TestTryLockDoesNotWaitOnAWatch(t *testing.T) {
	held := heldByOther()
	events := make(chan watch.Event)
	c := interceptor.NewClient(fake.NewClientBuilder().WithObjects(held.DeepCopy()).Build(), interceptor.Funcs{
		Watch: func(context.Context, client.WithWatch, client.ObjectList, ...client.ListOption) (watch.Interface, error) {
			return watch.NewProxyWatcher(events), nil
		},
	})
	rl := NewResourceLocker(c, "default", WithRetryTimeout(0), WithRetryInterval(time.Minute), WithMetrics(nil))
	lw, err := rl.watches.start(context.Background(), "l", held.DeepCopy(), &metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer close(events)
	defer rl.watches.end(lw, true)
	lw.mu.Lock()
	lw.rounds = 10000 // a head start of 10000 gaps, 20s or more
	gap := lw.gap
	lw.mu.Unlock()
	lw.set(nil)
	if rl.watches.register(lw) != lw {
		t.Fatal("the watch was not registered")
	}
	done := make(chan error, 1)
	go func() { done <- rl.AcquireLock(context.Background(), "l", "me") }()
	select {
	case err := <-done:
		if !errors.Is(err, ErrLockHeld) {
			t.Errorf("try-lock: got %v, want ErrLockHeld", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("try-lock: still waiting after 10s, want it to return at once")
	}
	// Its lost Create took no head start: it says nothing of how far apart
	// the waiters' head starts should be.
	lw.mu.Lock()
	defer lw.mu.Unlock()
	if lw.gap != gap {
		t.Errorf("gap after the try-lock: got %v, want %v, unchanged", lw.gap, gap)
	}
}

// TestEndRunsOnce: a watch ended from outside (its linger ran out, a
// waiter gave up on it) stops its stream, whose pump then calls end again.
// That second end must do nothing: it would write the herd's record anew,
// over one that a newer watch of the Lease may have left.
func TestEndRunsOnce(t *testing.T) {
	rl := NewResourceLocker(fake.NewClientBuilder().Build(), "default", WithMetrics(nil))
	reg := rl.watches
	w := watch.NewFake()
	lw := newLeaseWatch(context.Background(), reg.clock, "l", streams{w: w, cancel: func() {}}, false,
		&coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "l"}}, herd{gap: firstGap, queue: 3})
	reg.open["l"] = &entry{lw: lw, refs: 1}
	pumped := make(chan struct{})
	go func() {
		defer close(pumped)
		reg.stream(lw, w)
	}()
	reg.end(lw, true)
	reg.mu.Lock()
	first := reg.herds["l"].ended
	reg.mu.Unlock()
	<-pumped // the pump saw its stream stop, and has ended lw too if it would
	reg.mu.Lock()
	got := reg.herds["l"]
	_, registered := reg.open["l"]
	reg.mu.Unlock()
	if !got.ended.Equal(first) {
		t.Errorf("herd record ended at %v after the pump, want %v: end ran twice", got.ended, first)
	}
	if registered {
		t.Error("the ended watch is still registered")
	}
}

// TestRegisterLoserLeavesTheHerd: of two watches of one Lease opened at
// once, the one that registers second closes at once. It served no waiter,
// so the herd's record stays the one it found.
func TestRegisterLoserLeavesTheHerd(t *testing.T) {
	rl := NewResourceLocker(fake.NewClientBuilder().Build(), "default", WithMetrics(nil))
	reg := rl.watches
	recorded := herd{gap: maxGap, queue: 9, ended: time.Now().Add(-time.Second)}
	reg.herds["l"] = recorded
	open := func(queue int) *leaseWatch {
		return newLeaseWatch(context.Background(), reg.clock, "l", streams{w: watch.NewFake(), cancel: func() {}}, false,
			nil, herd{gap: firstGap, queue: queue})
	}
	winner, loser := open(2), open(5)
	if got := reg.register(winner); got != winner {
		t.Fatalf("register of the first: got %p, want %p", got, winner)
	}
	defer reg.end(winner, true)
	got := reg.register(loser)
	if got != winner {
		t.Fatalf("register of the second: got %p, want the first, %p", got, winner)
	}
	reg.drop(got)
	if loser.state().healthy {
		t.Error("the second watch is still open")
	}
	reg.mu.Lock()
	h := reg.herds["l"]
	reg.mu.Unlock()
	if h != recorded {
		t.Errorf("herd record after the loser closed: got %+v, want %+v", h, recorded)
	}
}
