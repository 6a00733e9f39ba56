package resourcelock_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/version"
	testingclock "k8s.io/utils/clock/testing"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	"github.com/leaselock/leaselock/internal/testenv"
	"github.com/leaselock/leaselock/resourcelock"
)

// These tests run against a real kube-apiserver and etcd: the fake client
// ignores a UID precondition on Delete and never creates on Update, which are
// exactly the behaviours the lock rests on.

func getLease(t *testing.T, c client.Client, ns, name string) *coordinationv1.Lease {
	t.Helper()
	lease := &coordinationv1.Lease{}
	err := c.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, lease)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		t.Fatalf("get Lease %s/%s: %v", ns, name, err)
	}
	return lease
}

func TestServerAcquireReleaseLeavesNoLease(t *testing.T) {
	c := testenv.Client(t)
	ns := testenv.Namespace(t, c)
	rl := resourcelock.NewResourceLocker(c, ns)
	ctx := context.Background()

	if err := rl.AcquireLock(ctx, "cm-lock", "holder-a"); err != nil {
		t.Fatalf("AcquireLock: %v", err)
	}
	lease := getLease(t, c, ns, "cm-lock")
	if lease == nil {
		t.Fatal("no Lease after AcquireLock")
	}
	if got, want := ptr.Deref(lease.Spec.HolderIdentity, ""), "holder-a"; got != want {
		t.Errorf("holderIdentity: got %q, want %q", got, want)
	}
	if got, want := ptr.Deref(lease.Spec.LeaseDurationSeconds, 0), int32(15); got != want {
		t.Errorf("leaseDurationSeconds: got %d, want %d", got, want)
	}
	if lease.Spec.AcquireTime == nil || lease.Spec.RenewTime == nil {
		t.Errorf("acquireTime %v, renewTime %v: want both set", lease.Spec.AcquireTime, lease.Spec.RenewTime)
	}
	if err := rl.ReleaseLock(ctx, "cm-lock", "holder-a"); err != nil {
		t.Fatalf("ReleaseLock: %v", err)
	}
	if lease := getLease(t, c, ns, "cm-lock"); lease != nil {
		t.Fatalf("Lease still there after ReleaseLock: %+v", lease.Spec)
	}
}

// modes are the two ways a waiter waits: on a watch of the Lease (the
// default for a client that can watch), and polling.
var modes = []struct {
	name string
	opts []resourcelock.Option
}{
	{"watch", nil},
	{"poll", []resourcelock.Option{resourcelock.WithoutWatch()}},
}

func TestServerContendedGivesHeldErrorNamingHolder(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode.name, func(t *testing.T) { testContended(t, mode.opts) })
	}
}

func testContended(t *testing.T, opts []resourcelock.Option) {
	c := testenv.Client(t)
	ns := testenv.Namespace(t, c)
	a := resourcelock.NewResourceLocker(c, ns)
	b := resourcelock.NewResourceLocker(testenv.Client(t), ns, append(opts,
		resourcelock.WithRetryInterval(50*time.Millisecond), resourcelock.WithRetryTimeout(300*time.Millisecond))...)
	ctx := context.Background()

	if err := a.AcquireLock(ctx, "contended", "holder-a"); err != nil {
		t.Fatalf("AcquireLock a: %v", err)
	}
	defer a.ReleaseLock(ctx, "contended", "holder-a")
	start := time.Now()
	err := b.AcquireLock(ctx, "contended", "holder-b")
	if !errors.Is(err, resourcelock.ErrLockHeld) {
		t.Fatalf("AcquireLock b: got %v, want ErrLockHeld", err)
	}
	if waited := time.Since(start); waited < 300*time.Millisecond {
		t.Errorf("AcquireLock b gave up after %v, want it to retry for the 300ms retry timeout", waited)
	}
	var held *resourcelock.HeldError
	if !errors.As(err, &held) {
		t.Fatalf("got %T, want *HeldError", err)
	}
	if held.Holder != "holder-a" || held.Name != "contended" || held.Namespace != ns || held.Until.IsZero() {
		t.Errorf("HeldError: got %+v, want holder-a on %s/contended with an expiry", held, ns)
	}
	t.Logf("b got: %v", err)
}

func TestServerExpiredLeaseIsTakenOver(t *testing.T) {
	c := testenv.Client(t)
	ns := testenv.Namespace(t, c)
	ctx := context.Background()
	a := resourcelock.NewResourceLocker(c, ns, resourcelock.WithLeaseDuration(time.Second))
	if err := a.AcquireLock(ctx, "expiring", "holder-a"); err != nil {
		t.Fatalf("AcquireLock a: %v", err)
	}
	before := getLease(t, c, ns, "expiring")

	// b's clock runs two seconds ahead, so a's one-second Lease is expired for
	// it; the takeover is an Update with the resourceVersion b read.
	ahead := testingclock.NewFakeClock(time.Now().Add(2 * time.Second))
	b := resourcelock.NewResourceLocker(testenv.Client(t), ns, resourcelock.WithClock(ahead), resourcelock.WithRetryTimeout(0))
	if err := b.AcquireLock(ctx, "expiring", "holder-b"); err != nil {
		t.Fatalf("AcquireLock b on an expired Lease: %v", err)
	}
	after := getLease(t, c, ns, "expiring")
	if after.UID != before.UID {
		t.Errorf("UID: got %s, want the same Lease %s updated in place", after.UID, before.UID)
	}
	if got := ptr.Deref(after.Spec.HolderIdentity, ""); got != "holder-b" {
		t.Errorf("holderIdentity: got %q, want holder-b", got)
	}
	if got, want := ptr.Deref(after.Spec.LeaseTransitions, 0), ptr.Deref(before.Spec.LeaseTransitions, 0)+1; got != want {
		t.Errorf("leaseTransitions: got %d, want %d", got, want)
	}
	if !after.Spec.AcquireTime.Time.Equal(after.Spec.RenewTime.Time) || !after.Spec.AcquireTime.After(before.Spec.AcquireTime.Time) {
		t.Errorf("acquireTime %v, renewTime %v: want both the takeover time, after %v",
			after.Spec.AcquireTime, after.Spec.RenewTime, before.Spec.AcquireTime)
	}

	// a's release is now a no-op: the Lease is b's.
	if err := a.ReleaseLock(ctx, "expiring", "holder-a"); err != nil {
		t.Fatalf("ReleaseLock a after takeover: %v", err)
	}
	if got := getLease(t, c, ns, "expiring"); got == nil || ptr.Deref(got.Spec.HolderIdentity, "") != "holder-b" {
		t.Fatalf("after a's release: got %v, want the Lease still held by holder-b", got)
	}
	if err := b.ReleaseLock(ctx, "expiring", "holder-b"); err != nil {
		t.Fatalf("ReleaseLock b: %v", err)
	}
}

// TestServerRacingTakeoversHaveOneWinner has 8 lockers, each with a client
// of its own, try at once to take over a Lease whose holder crashed an hour
// ago, round after round: the server's resourceVersion check lets exactly
// one win each round, and the others find the lock held by it.
func TestServerRacingTakeoversHaveOneWinner(t *testing.T) {
	const lockers, rounds = 8, 10
	admin := testenv.Client(t)
	ns := testenv.Namespace(t, admin)
	rls := make([]*resourcelock.ResourceLocker, lockers)
	for i := range rls {
		rls[i] = resourcelock.NewResourceLocker(testenv.Client(t), ns, resourcelock.WithRetryTimeout(0))
	}
	for round := range rounds {
		name := fmt.Sprint("crashed-", round)
		stale := metav1.NewMicroTime(time.Now().Add(-time.Hour))
		if err := admin.Create(t.Context(), &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
			Spec: coordinationv1.LeaseSpec{HolderIdentity: ptr.To("crashed"), LeaseDurationSeconds: ptr.To(int32(15)),
				AcquireTime: &stale, RenewTime: &stale},
		}); err != nil {
			t.Fatal(err)
		}
		start := make(chan struct{})
		errs := make([]error, lockers)
		var wg sync.WaitGroup
		for i, rl := range rls {
			wg.Go(func() {
				<-start
				errs[i] = rl.AcquireLock(t.Context(), name, fmt.Sprint("locker-", i))
			})
		}
		close(start)
		wg.Wait()
		winner := -1
		for i, err := range errs {
			switch {
			case err == nil && winner < 0:
				winner = i
			case err == nil:
				t.Errorf("round %d: lockers %d and %d both took the Lease over", round, winner, i)
			case !errors.Is(err, resourcelock.ErrLockHeld):
				t.Errorf("round %d: locker %d: got %v, want nil or ErrLockHeld", round, i, err)
			}
		}
		if winner < 0 {
			t.Fatalf("round %d: no locker took the expired Lease over", round)
		}
		if got := ptr.Deref(getLease(t, admin, ns, name).Spec.HolderIdentity, ""); got != fmt.Sprint("locker-", winner) {
			t.Errorf("round %d: Lease held by %q, want locker-%d", round, got, winner)
		}
		if err := rls[winner].ReleaseLock(t.Context(), name, fmt.Sprint("locker-", winner)); err != nil {
			t.Fatal(err)
		}
	}
}

// TestServerSameHolderReacquires: AcquireLock by the holder renews its
// Lease, with a read and an Update and no Create (a Create could only fail,
// and one whose answer was lost would leave the call unsure).
func TestServerSameHolderReacquires(t *testing.T) {
	c := testenv.Client(t)
	ns := testenv.Namespace(t, c)
	ctx := context.Background()
	var reqs testenv.Requests
	rl := resourcelock.NewResourceLocker(testenv.CountedClient(t, &reqs), ns, resourcelock.WithRetryTimeout(0))
	if err := rl.AcquireLock(ctx, "again", "holder-a"); err != nil {
		t.Fatalf("AcquireLock: %v", err)
	}
	first := getLease(t, c, ns, "again")
	time.Sleep(5 * time.Millisecond) // renewTime has microsecond precision
	reqs.Reset()
	if err := rl.AcquireLock(ctx, "again", "holder-a"); err != nil {
		t.Fatalf("AcquireLock again by the same holder: %v", err)
	}
	for verb, want := range map[string]int{"create": 0, "get": 1, "update": 1, "watch": 0} {
		if got := reqs.Count(verb, "leases"); got != want {
			t.Errorf("renewal: got %d Lease %ss, want %d", got, verb, want)
		}
	}
	second := getLease(t, c, ns, "again")
	if !second.Spec.RenewTime.After(first.Spec.RenewTime.Time) {
		t.Errorf("renewTime: got %v, want later than %v", second.Spec.RenewTime, first.Spec.RenewTime)
	}
	if !second.Spec.AcquireTime.Equal(first.Spec.AcquireTime) {
		t.Errorf("acquireTime: got %v, want unchanged %v", second.Spec.AcquireTime, first.Spec.AcquireTime)
	}
	if err := rl.ReleaseLock(ctx, "again", "holder-a"); err != nil {
		t.Fatalf("ReleaseLock: %v", err)
	}
}

func TestServerCreateWithLostResponseIsAcquired(t *testing.T) {
	c := testenv.Client(t)
	ns := testenv.Namespace(t, c)
	ctx := context.Background()
	lost := 0
	flaky := interceptor.NewClient(c, interceptor.Funcs{
		Create: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
			if err := c.Create(ctx, obj, opts...); err != nil || lost > 0 {
				return err
			}
			lost++
			return apierrors.NewTimeoutError("response lost", 0)
		},
	})
	rl := resourcelock.NewResourceLocker(flaky, ns)
	if err := rl.AcquireLock(ctx, "lost", "holder-a"); err != nil {
		t.Fatalf("AcquireLock after a Create whose response was lost: %v", err)
	}
	if lost != 1 {
		t.Fatalf("lost responses: got %d, want 1", lost)
	}
	if got := ptr.Deref(getLease(t, c, ns, "lost").Spec.HolderIdentity, ""); got != "holder-a" {
		t.Errorf("holderIdentity: got %q, want holder-a", got)
	}
	if err := rl.ReleaseLock(ctx, "lost", "holder-a"); err != nil {
		t.Fatalf("ReleaseLock: %v", err)
	}
}

func TestServerReleaseByNonHolderIsNoop(t *testing.T) {
	c := testenv.Client(t)
	ns := testenv.Namespace(t, c)
	ctx := context.Background()
	rl := resourcelock.NewResourceLocker(c, ns)
	if err := rl.ReleaseLock(ctx, "absent", "holder-a"); err != nil {
		t.Fatalf("ReleaseLock of an absent Lease: got %v, want nil", err)
	}
	if err := rl.AcquireLock(ctx, "mine", "holder-a"); err != nil {
		t.Fatalf("AcquireLock: %v", err)
	}
	other := resourcelock.NewResourceLocker(testenv.Client(t), ns)
	if err := other.ReleaseLock(ctx, "mine", "holder-b"); err != nil {
		t.Fatalf("ReleaseLock by a non-holder: got %v, want nil", err)
	}
	if got := getLease(t, c, ns, "mine"); got == nil || ptr.Deref(got.Spec.HolderIdentity, "") != "holder-a" {
		t.Fatalf("after a non-holder's release: got %v, want the Lease held by holder-a", got)
	}
	if err := rl.ReleaseLock(ctx, "mine", "holder-a"); err != nil {
		t.Fatalf("ReleaseLock: %v", err)
	}
}

// TestServerReleaseNeverDeletesATakeover races a stale holder's release
// against another locker's takeover of the same expired Lease, many times.
// Whichever reaches the server first, the Lease must end up held by the new
// holder: a release that read the Lease and then deleted it without
// preconditions would sometimes delete the takeover.
func TestServerReleaseNeverDeletesATakeover(t *testing.T) {
	c := testenv.Client(t)
	ns := testenv.Namespace(t, c)
	ctx := context.Background()
	const rounds = 60
	for i := range rounds {
		name := fmt.Sprintf("race-%d", i)
		a := resourcelock.NewResourceLocker(c, ns, resourcelock.WithLeaseDuration(time.Second))
		if err := a.AcquireLock(ctx, name, "stale"); err != nil {
			t.Fatalf("round %d: AcquireLock stale: %v", i, err)
		}
		// b sees the stale holder's Lease as expired at once.
		ahead := testingclock.NewFakeClock(time.Now().Add(2 * time.Second))
		b := resourcelock.NewResourceLocker(testenv.Client(t), ns, resourcelock.WithClock(ahead), resourcelock.WithRetryTimeout(0))
		// Half the rounds the stale holder forgot its version (a fresh locker,
		// as after a restart), so its release reads before it deletes.
		if i%2 == 1 {
			a = resourcelock.NewResourceLocker(c, ns)
		}

		var wg sync.WaitGroup
		var releaseErr, acquireErr error
		// b needs three requests (Create, Get, Update) to a's one; a random
		// start for a's release spreads the rounds over every interleaving.
		delay := time.Duration(rand.IntN(8000)) * time.Microsecond
		wg.Go(func() {
			time.Sleep(delay)
			releaseErr = a.ReleaseLock(ctx, name, "stale")
		})
		wg.Go(func() { acquireErr = b.AcquireLock(ctx, name, "new") })
		wg.Wait()
		if releaseErr != nil || acquireErr != nil {
			t.Fatalf("round %d: release %v, acquire %v: want both nil", i, releaseErr, acquireErr)
		}
		lease := getLease(t, c, ns, name)
		if lease == nil || ptr.Deref(lease.Spec.HolderIdentity, "") != "new" {
			t.Fatalf("round %d: got Lease %v, want it held by the new holder", i, lease)
		}
		if err := b.ReleaseLock(ctx, name, "new"); err != nil {
			t.Fatalf("round %d: ReleaseLock new: %v", i, err)
		}
	}
}

func TestServerCancelEndsWait(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode.name, func(t *testing.T) { testCancelEndsWait(t, mode.opts) })
	}
}

func testCancelEndsWait(t *testing.T, opts []resourcelock.Option) {
	c := testenv.Client(t)
	ns := testenv.Namespace(t, c)
	a := resourcelock.NewResourceLocker(c, ns)
	if err := a.AcquireLock(context.Background(), "busy", "holder-a"); err != nil {
		t.Fatalf("AcquireLock a: %v", err)
	}
	defer a.ReleaseLock(context.Background(), "busy", "holder-a")

	// A retry interval of 20s: a wait that ends on the cancel ends long
	// before the next try would, however slow the machine.
	b := resourcelock.NewResourceLocker(testenv.Client(t), ns,
		append(opts, resourcelock.WithRetryTimeout(time.Minute), resourcelock.WithRetryInterval(20*time.Second))...)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	start := time.Now()
	err := b.AcquireLock(ctx, "busy", "holder-b")
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("AcquireLock with a cancelled ctx: got %v, want context.Canceled", err)
	}
	if waited := time.Since(start); waited > 10*time.Second {
		t.Errorf("AcquireLock returned %v after start, want it to end at the cancel (100ms), not at the next try (20s)", waited)
	}
}

func TestServerForbiddenReturnsAtOnce(t *testing.T) {
	admin := testenv.Client(t)
	ns := testenv.Namespace(t, admin)
	c, err := client.New(testenv.UserConfig(t, "no-rights"), client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	rl := resourcelock.NewResourceLocker(c, ns)
	err = rl.AcquireLock(context.Background(), "forbidden", "holder-a")
	if !apierrors.IsForbidden(err) {
		t.Fatalf("AcquireLock without RBAC: got %v, want an error for which apierrors.IsForbidden holds", err)
	}
	if errors.Is(err, resourcelock.ErrLockHeld) {
		t.Errorf("got %v: a Forbidden error must not read as ErrLockHeld", err)
	}
}

// TestServerIdleWaitersWatchWithoutPolling counts, on the client side, what
// waiters on a held lock send: with a watch, a Create and one watch each,
// however long they wait (the watch sends the Lease first, so none reads
// it); polling, a Get every retry interval.
func TestServerIdleWaitersWatchWithoutPolling(t *testing.T) {
	c := testenv.Client(t)
	ns := testenv.Namespace(t, c)
	ctx := context.Background()
	holder := resourcelock.NewResourceLocker(c, ns)
	if err := holder.AcquireLock(ctx, "idle", "holder"); err != nil {
		t.Fatal(err)
	}
	defer holder.ReleaseLock(ctx, "idle", "holder")

	const waiters = 4
	wait := func(opts ...resourcelock.Option) *testenv.Requests {
		var reqs testenv.Requests
		var wg sync.WaitGroup
		for i := range waiters {
			opts := append([]resourcelock.Option{resourcelock.WithRetryInterval(50 * time.Millisecond),
				resourcelock.WithRetryTimeout(time.Second)}, opts...)
			rl := resourcelock.NewResourceLocker(testenv.CountedClient(t, &reqs), ns, opts...)
			wg.Go(func() {
				if err := rl.AcquireLock(ctx, "idle", fmt.Sprint("waiter-", i)); !errors.Is(err, resourcelock.ErrLockHeld) {
					t.Errorf("waiter %d: got %v, want ErrLockHeld", i, err)
				}
			})
		}
		wg.Wait()
		return &reqs
	}

	watched := wait()
	if got, want := watched.Count("watch", "leases"), waiters; got != want {
		t.Errorf("watches: got %d, want %d, one per waiter", got, want)
	}
	if got := watched.Count("get", "leases"); got != 0 {
		t.Errorf("gets while watching for 1s: got %d, want 0", got)
	}
	polled := wait(resourcelock.WithoutWatch())
	t.Logf("4 waiters for 1s at a 50ms retry interval: %d Gets watching, %d polling",
		watched.Count("get", "leases"), polled.Count("get", "leases"))
	if got := polled.Count("watch", "leases"); got != 0 {
		t.Errorf("watches with WithoutWatch: got %d, want 0", got)
	}
	if got := polled.Count("get", "leases"); got < 5*waiters {
		t.Errorf("gets while polling for 1s every 50ms: got %d, want at least %d", got, 5*waiters)
	}
}

// TestServerCancelMidWriteLeavesNoLease cancels acquisitions at random
// moments, many of them while the Create is in flight. The client gives up on
// a cancelled request at once, but the server may still apply it: an
// AcquireLock that returned an error must not leave a Lease behind, not even
// one that lands after it returned.
func TestServerCancelMidWriteLeavesNoLease(t *testing.T) {
	c := testenv.Client(t)
	ns := testenv.Namespace(t, c)
	rl := resourcelock.NewResourceLocker(c, ns)
	const rounds = 200
	cancelled := 0
	for i := range rounds {
		name := fmt.Sprintf("cancel-%d", i)
		ctx, cancel := context.WithCancel(context.Background())
		// A Create takes about 2ms here: cancel before, during and after it.
		time.AfterFunc(time.Duration(rand.N(4000))*time.Microsecond, cancel)
		err := rl.AcquireLock(ctx, name, "holder-a")
		cancel()
		switch {
		case err == nil:
			if err := rl.ReleaseLock(context.Background(), name, "holder-a"); err != nil {
				t.Fatalf("ReleaseLock %s: %v", name, err)
			}
		case errors.Is(err, context.Canceled):
			cancelled++
		default:
			t.Fatalf("AcquireLock %s: got %v, want nil or context.Canceled", name, err)
		}
	}
	t.Logf("%d of %d acquisitions cancelled", cancelled, rounds)
	if cancelled == 0 {
		t.Fatal("no acquisition was cancelled: the test cancelled too late to mean anything")
	}
	// A write the server applies after its client gave up lands within a
	// few milliseconds; give it a generous margin before counting.
	time.Sleep(500 * time.Millisecond)
	var leases coordinationv1.LeaseList
	if err := c.List(context.Background(), &leases, client.InNamespace(ns)); err != nil {
		t.Fatalf("list Leases: %v", err)
	}
	for _, l := range leases.Items {
		t.Errorf("Lease %s left behind by a cancelled AcquireLock, held by %q", l.Name, ptr.Deref(l.Spec.HolderIdentity, ""))
		if err := c.Delete(context.Background(), &l); err != nil {
			t.Errorf("delete Lease %s: %v", l.Name, err)
		}
	}
}

// TestServerContendedLockWatchedFirst: two lockers take turns at a lock
// while a third holds it, so their watches learn that lockers queue for it.
// Those watches close (WatchLinger), and a burst later each locker watches
// the held lock before it asks for it: a watch and no Create that must fail.
func TestServerContendedLockWatchedFirst(t *testing.T) {
	admin := testenv.Client(t)
	ns := testenv.Namespace(t, admin)
	ctx := context.Background()
	holder := resourcelock.NewResourceLocker(admin, ns)
	if err := holder.AcquireLock(ctx, "burst", "holder"); err != nil {
		t.Fatal(err)
	}

	reqs := make([]*testenv.Requests, 2)
	lockers := make([]*resourcelock.ResourceLocker, 2)
	for i := range lockers {
		reqs[i] = new(testenv.Requests)
		lockers[i] = resourcelock.NewResourceLocker(testenv.CountedClient(t, reqs[i]), ns)
	}
	// Both wait for the holder, then take turns: the second to go has
	// waited one handoff, which its Lease records for both watches to see.
	// Each holds the lock a moment, so that the other's watch shows its
	// Lease: a Lease that comes and goes between two looks of a loaded
	// waiter is no handoff it counts.
	var wg sync.WaitGroup
	for i, rl := range lockers {
		wg.Go(func() {
			id := fmt.Sprint("replica-", i)
			if err := rl.AcquireLock(ctx, "burst", id); err != nil {
				t.Errorf("replica %d: AcquireLock: %v", i, err)
				return
			}
			time.Sleep(200 * time.Millisecond)
			if err := rl.ReleaseLock(ctx, "burst", id); err != nil {
				t.Errorf("replica %d: ReleaseLock: %v", i, err)
			}
		})
	}
	// Nothing here measures speed: the 30s only turn a hang into a failure.
	for limit := time.Now().Add(30 * time.Second); reqs[0].Count("watch", "leases")+reqs[1].Count("watch", "leases") < 2; {
		if time.Now().After(limit) {
			t.Fatal("the replicas did not both watch the held lock within 30s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := holder.ReleaseLock(ctx, "burst", "holder"); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	time.Sleep(resourcelock.WatchLinger + 500*time.Millisecond) // the watches close

	if err := holder.AcquireLock(ctx, "burst", "holder"); err != nil {
		t.Fatal(err)
	}
	defer holder.ReleaseLock(ctx, "burst", "holder")
	for i, rl := range lockers {
		reqs[i].Reset()
		wctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		err := rl.AcquireLock(wctx, "burst", fmt.Sprint("replica-", i))
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("replica %d: AcquireLock on a held lock: got %v, want context.DeadlineExceeded", i, err)
		}
		if got := reqs[i].Count("create", "leases"); got != 0 {
			t.Errorf("replica %d: creates: got %d, want 0: the lock was contended a moment ago", i, got)
		}
		if got := reqs[i].Count("watch", "leases"); got != 1 {
			t.Errorf("replica %d: watches: got %d, want 1", i, got)
		}
		if got := reqs[i].Count("get", "leases"); got != 0 {
			t.Errorf("replica %d: gets: got %d, want 0", i, got)
		}
	}
}

// TestServerBusyLockWatchedPlain: a waiter's first watch sends the Lease
// first (a watch-list), which kube-apiserver 1.37 and later compress event
// by event (the WatchListCompression feature; 1.36 and earlier do not).
// When a second acquire takes up that watch as it lingers, the lock is busy:
// the locker replaces it with a plain watch from the last version it saw,
// whose events come uncompressed, and the waiter still wakes on it.
func TestServerBusyLockWatchedPlain(t *testing.T) {
	admin := testenv.Client(t)
	ns := testenv.Namespace(t, admin)
	ctx := context.Background()
	holder := resourcelock.NewResourceLocker(admin, ns)
	var reqs testenv.Requests
	rl := resourcelock.NewResourceLocker(testenv.CountedClient(t, &reqs), ns, resourcelock.WithRetryTimeout(30*time.Second))

	for turn, watches := range []int{1, 2} {
		if err := holder.AcquireLock(ctx, "busy", "holder"); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- rl.AcquireLock(ctx, "busy", "me") }()
		// Nothing here measures speed: the 30s only turn a hang into a
		// failure.
		for limit := time.Now().Add(30 * time.Second); reqs.Count("watch", "leases") < watches; {
			if time.Now().After(limit) {
				t.Fatalf("turn %d: watches: got %d within 30s, want %d", turn, reqs.Count("watch", "leases"), watches)
			}
			time.Sleep(10 * time.Millisecond)
		}
		if err := holder.ReleaseLock(ctx, "busy", "holder"); err != nil {
			t.Fatal(err)
		}
		if err := <-done; err != nil {
			t.Fatalf("turn %d: AcquireLock: %v", turn, err)
		}
		if err := rl.ReleaseLock(ctx, "busy", "me"); err != nil {
			t.Fatalf("turn %d: ReleaseLock: %v", turn, err)
		}
	}
	if got, want := reqs.Count("watch", "leases"), 2; got != want {
		t.Errorf("watches: got %d, want %d: a watch-list, then a plain watch", got, want)
	}
	server := testenv.ServerVersion(t)
	wantCompressed, which := 0, "none: this release does not compress watch-lists"
	if server.AtLeast(version.MajorMinor(1, 37)) {
		wantCompressed, which = 1, "the watch-list only"
	}
	if got := reqs.Compressed("watch", "leases"); got != wantCompressed {
		t.Errorf("kube-apiserver %s: watches answered compressed: got %d, want %d, %s", server, got, wantCompressed, which)
	}
	// The waiter woke on the watch: it neither read the Lease nor waited for
	// it to expire, which would have sent an Update.
	if got := reqs.Count("get", "leases") + reqs.Count("update", "leases"); got != 0 {
		t.Errorf("gets and updates: got %d, want 0", got)
	}
}

// TestServerCloseWhileWaiting closes a locker while one of its calls waits
// on a watch of a held lock. Close ends the watch's stream at once, not at
// the end of the call; the call goes on by polling, opens no watch again,
// and gets the lock once it is released.
func TestServerCloseWhileWaiting(t *testing.T) {
	c := testenv.Client(t)
	ns := testenv.Namespace(t, c)
	ctx := context.Background()
	other := resourcelock.NewResourceLocker(c, ns)
	if err := other.AcquireLock(ctx, "closing", "other"); err != nil {
		t.Fatal(err)
	}
	var reqs testenv.Requests
	rl := resourcelock.NewResourceLocker(testenv.CountedClient(t, &reqs), ns,
		resourcelock.WithRetryInterval(50*time.Millisecond), resourcelock.WithRetryTimeout(30*time.Second))
	done := make(chan error, 1)
	go func() { done <- rl.AcquireLock(ctx, "closing", "me") }()

	// A stream's goroutine runs watchRegistry.stream while it is open.
	streaming := func() bool {
		buf := make([]byte, 1<<20)
		return strings.Contains(string(buf[:runtime.Stack(buf, true)]), "resourcelock.(*watchRegistry).stream")
	}
	// The limits turn a hang into a failure; they measure no speed.
	for limit := time.Now().Add(10 * time.Second); !streaming(); time.Sleep(time.Millisecond) {
		if time.Now().After(limit) {
			t.Fatal("the waiter opened no watch within 10s")
		}
	}
	if err := rl.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	for limit := time.Now().Add(10 * time.Second); streaming(); time.Sleep(time.Millisecond) {
		if time.Now().After(limit) {
			t.Fatal("the watch still streams 10s after Close, with its call still waiting")
		}
	}
	select {
	case err := <-done:
		t.Fatalf("AcquireLock returned %v on Close, want it to go on waiting", err)
	default:
	}
	watches := reqs.Count("watch", "leases")
	if err := other.ReleaseLock(ctx, "closing", "other"); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("AcquireLock waiting across Close: got %v, want the lock once released", err)
	}
	if got := reqs.Count("watch", "leases"); got != watches {
		t.Errorf("watches after Close: got %d, want %d, none more", got, watches)
	}
	if err := rl.ReleaseLock(ctx, "closing", "me"); err != nil {
		t.Fatal(err)
	}
}
