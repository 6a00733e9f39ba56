package resourcelock_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr/funcr"
	"github.com/prometheus/client_golang/prometheus"
	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/scheme"
	testingclock "k8s.io/utils/clock/testing"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/leaselock/leaselock/resourcelock"
)

// These are the fast unit tests: controller-runtime's fake client, with
// interceptor.Funcs to inject faults, and a fake clock that the test steps.
// The fake client differs from the API server (it ignores a UID precondition
// on Delete, it turns an Update of a missing Lease into a failed Create), so
// integration_test.go proves the same claims against a real one.

const (
	unitNS      = "locks"
	unitLock    = "cm-lock"
	holderMe    = "holder-me"
	holderOther = "holder-other"
	seededUID   = types.UID("uid-seeded")
)

// epoch is the fake clock's time when a test starts: whole seconds, so that
// it comes back unchanged from a Lease, which keeps microseconds.
var epoch = time.Date(2030, time.January, 2, 3, 4, 5, 0, time.UTC)

var leasesResource = coordinationv1.Resource("leases")

// newFake returns a fake client with client-go's scheme, holding objs, that
// answers a watch-list as the API server does (see WatchListFake).
func newFake(objs ...client.Object) client.WithWatch {
	return resourcelock.WatchListFake{fake.NewClientBuilder().WithScheme(scheme.Scheme).WithObjects(objs...).Build()}
}

func microTime(t time.Time) *metav1.MicroTime {
	m := metav1.NewMicroTime(t)
	return &m
}

// leaseWith returns the Lease unitNS/unitLock with spec, as another locker
// (or the API server) left it; the fake client gives it resourceVersion 999.
func leaseWith(spec coordinationv1.LeaseSpec) *coordinationv1.Lease {
	return &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Name: unitLock, Namespace: unitNS, UID: seededUID},
		Spec:       spec,
	}
}

// heldLease returns the Lease unitNS/unitLock held by holder since renewed,
// for seconds, after two transitions.
func heldLease(holder string, renewed time.Time, seconds int32) *coordinationv1.Lease {
	return leaseWith(coordinationv1.LeaseSpec{
		HolderIdentity:       ptr.To(holder),
		LeaseDurationSeconds: ptr.To(seconds),
		AcquireTime:          microTime(renewed),
		RenewTime:            microTime(renewed),
		LeaseTransitions:     ptr.To(int32(2)),
	})
}

// storedLease returns the Lease unitNS/unitLock as c holds it, or nil.
func storedLease(t *testing.T, c client.Client) *coordinationv1.Lease {
	t.Helper()
	lease := &coordinationv1.Lease{}
	err := c.Get(context.Background(), client.ObjectKey{Namespace: unitNS, Name: unitLock}, lease)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		t.Fatalf("get Lease %s/%s: %v", unitNS, unitLock, err)
	}
	return lease
}

// holderOf returns the holder of lease, "<none>" when lease is nil.
func holderOf(lease *coordinationv1.Lease) string {
	if lease == nil {
		return "<none>"
	}
	return ptr.Deref(lease.Spec.HolderIdentity, "")
}

// callLog counts the requests a client sends, by verb.
type callLog struct {
	mu sync.Mutex
	n  map[string]int
}

func (l *callLog) add(verb string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.n == nil {
		l.n = make(map[string]int)
	}
	l.n[verb]++
}

func (l *callLog) count(verb string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.n[verb]
}

func (l *callLog) total() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, v := range l.n {
		n += v
	}
	return n
}

func (l *callLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return fmt.Sprint(l.n)
}

// counted wraps c so that every request is counted in log, then handled by
// inject where it sets a func and by c otherwise.
func counted(c client.WithWatch, log *callLog, inject interceptor.Funcs) client.WithWatch {
	return interceptor.NewClient(interceptor.NewClient(c, inject), interceptor.Funcs{
		Get: func(ctx context.Context, c client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
			log.add("get")
			return c.Get(ctx, key, obj, opts...)
		},
		List: func(ctx context.Context, c client.WithWatch, list client.ObjectList, opts ...client.ListOption) error {
			log.add("list")
			return c.List(ctx, list, opts...)
		},
		Create: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
			log.add("create")
			return c.Create(ctx, obj, opts...)
		},
		Update: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.UpdateOption) error {
			log.add("update")
			return c.Update(ctx, obj, opts...)
		},
		Delete: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.DeleteOption) error {
			log.add("delete")
			return c.Delete(ctx, obj, opts...)
		},
		DeleteAllOf: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.DeleteAllOfOption) error {
			log.add("deleteallof")
			return c.DeleteAllOf(ctx, obj, opts...)
		},
		Patch: func(ctx context.Context, c client.WithWatch, obj client.Object, patch client.Patch, opts ...client.PatchOption) error {
			log.add("patch")
			return c.Patch(ctx, obj, patch, opts...)
		},
		Watch: func(ctx context.Context, c client.WithWatch, list client.ObjectList, opts ...client.ListOption) (watch.Interface, error) {
			log.add("watch")
			return c.Watch(ctx, list, opts...)
		},
		SubResource: func(c client.WithWatch, subResource string) client.SubResourceClient {
			log.add("subresource")
			return c.SubResource(subResource)
		},
	})
}

// pendingCall is an AcquireLock or ReleaseLock running in a goroutine of its
// own while the test drives the fake clock.
type pendingCall struct {
	t    *testing.T
	clk  *testingclock.FakeClock
	done chan struct{}
	err  error // set before done is closed
}

// goCall runs fn on a ctx derived from parent. When the test ends first, its
// cleanup cancels that ctx and steps the clock until fn returns, so that no
// goroutine outlives the test.
func goCall(t *testing.T, clk *testingclock.FakeClock, parent context.Context, fn func(context.Context) error) *pendingCall {
	ctx, cancel := context.WithCancel(parent)
	c := &pendingCall{t: t, clk: clk, done: make(chan struct{})}
	go func() {
		defer close(c.done)
		c.err = fn(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		for c.await(clk.HasWaiters) {
			clk.Step(time.Hour)
		}
	})
	return c
}

func goAcquire(t *testing.T, rl *resourcelock.ResourceLocker, clk *testingclock.FakeClock, parent context.Context, lockerID string) *pendingCall {
	return goCall(t, clk, parent, func(ctx context.Context) error { return rl.AcquireLock(ctx, unitLock, lockerID) })
}

// await polls until cond holds (true) or the call has returned (false).
// Nothing here measures speed: the 30 seconds of real time only turn a hang into
// a failure.
func (c *pendingCall) await(cond func() bool) bool {
	c.t.Helper()
	limit := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-c.done:
			return false
		default:
		}
		if cond() {
			return true
		}
		if time.Now().After(limit) {
			c.t.Fatalf("the call neither returned nor waited on the clock within 30s")
		}
		runtime.Gosched()
	}
}

// waiting returns once the call waits on the clock, and fails the test if it
// returns instead.
func (c *pendingCall) waiting() {
	c.t.Helper()
	if !c.await(c.clk.HasWaiters) {
		c.t.Fatalf("the call returned %v, want it to wait on the clock", c.err)
	}
}

// woke reports whether the last Step ended the call's wait, when reads
// counts the Gets the call sends and was before before the Step (Step fires
// timers before it returns). The clock's waiters alone can miss it: the
// call may already be waiting on a new timer when the test looks. Whatever the interleaving, a call whose wait ended has
// left the clock without a waiter, or read the Lease again, or returned.
func (c *pendingCall) woke(reads func() int, before int) bool {
	select {
	case <-c.done:
		return true
	default:
	}
	return !c.clk.HasWaiters() || reads() > before
}

// finish returns the call's error, stepping the clock by d whenever the call
// waits on it.
func (c *pendingCall) finish(d time.Duration) error {
	c.t.Helper()
	for c.await(c.clk.HasWaiters) {
		c.clk.Step(d)
	}
	return c.err
}

// result returns the call's error without touching the clock.
func (c *pendingCall) result() error {
	c.t.Helper()
	c.await(func() bool { return false })
	return c.err
}

// handoff returns the call's error after its watch showed the Lease
// deleted, stepping the clock by a millisecond whenever the call waits its
// turn (a head start of at most headTie, beside the maxConfirm timer, so two
// timers at once): the watch, not the clock, ended its wait for the holder.
func (c *pendingCall) handoff() error {
	c.t.Helper()
	for c.await(func() bool { return c.clk.Waiters() >= 2 }) {
		c.clk.Step(time.Millisecond)
	}
	return c.err
}

// noWait returns the call's error and fails the test if the call waits on
// the clock first.
func (c *pendingCall) noWait() error {
	c.t.Helper()
	if c.await(c.clk.HasWaiters) {
		c.t.Fatalf("the call waits on the clock, want it to return without waiting")
	}
	return c.err
}

func TestAcquireCreatesAbsentLease(t *testing.T) {
	base := newFake()
	var log callLog
	clk := testingclock.NewFakeClock(epoch)
	rl := resourcelock.NewResourceLocker(counted(base, &log, interceptor.Funcs{}), unitNS, resourcelock.WithClock(clk))

	if err := goAcquire(t, rl, clk, context.Background(), holderMe).noWait(); err != nil {
		t.Fatalf("AcquireLock: got %v, want nil", err)
	}
	lease := storedLease(t, base)
	if lease == nil {
		t.Fatal("Lease: got none, want one")
	}
	if got, want := holderOf(lease), holderMe; got != want {
		t.Errorf("holderIdentity: got %q, want %q", got, want)
	}
	if got, want := ptr.Deref(lease.Spec.LeaseDurationSeconds, 0), int32(15); got != want {
		t.Errorf("leaseDurationSeconds: got %d, want %d", got, want)
	}
	for field, got := range map[string]*metav1.MicroTime{"acquireTime": lease.Spec.AcquireTime, "renewTime": lease.Spec.RenewTime} {
		if got == nil || !got.Time.Equal(epoch) {
			t.Errorf("%s: got %v, want %v", field, got, epoch)
		}
	}
	if got, want := lease.Labels[resourcelock.ManagedByLabel], "leaselock"; got != want {
		t.Errorf("label %s: got %q, want %q", resourcelock.ManagedByLabel, got, want)
	}
	if got, want := log.count("create"), 1; got != want || log.total() != want {
		t.Errorf("requests: got %v, want exactly 1 create", &log)
	}
}

func TestAcquireTakesOverExpiredLease(t *testing.T) {
	base := newFake(heldLease(holderOther, epoch.Add(-20*time.Second), 15))
	before := storedLease(t, base)
	var sentVersion string
	clk := testingclock.NewFakeClock(epoch)
	c := counted(base, new(callLog), interceptor.Funcs{
		Update: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.UpdateOption) error {
			sentVersion = obj.GetResourceVersion()
			return c.Update(ctx, obj, opts...)
		},
	})
	rl := resourcelock.NewResourceLocker(c, unitNS, resourcelock.WithClock(clk))

	if err := goAcquire(t, rl, clk, context.Background(), holderMe).noWait(); err != nil {
		t.Fatalf("AcquireLock: got %v, want nil", err)
	}
	if got, want := sentVersion, before.ResourceVersion; got != want {
		t.Errorf("resourceVersion sent with the Update: got %q, want %q, the one read", got, want)
	}
	after := storedLease(t, base)
	if got, want := holderOf(after), holderMe; got != want {
		t.Errorf("holderIdentity: got %q, want %q", got, want)
	}
	if got, want := after.UID, before.UID; got != want {
		t.Errorf("UID: got %q, want %q, the same Lease updated in place", got, want)
	}
	for field, got := range map[string]*metav1.MicroTime{"acquireTime": after.Spec.AcquireTime, "renewTime": after.Spec.RenewTime} {
		if got == nil || !got.Time.Equal(epoch) {
			t.Errorf("%s: got %v, want %v", field, got, epoch)
		}
	}
	if got, want := ptr.Deref(after.Spec.LeaseTransitions, 0), ptr.Deref(before.Spec.LeaseTransitions, 0)+1; got != want {
		t.Errorf("leaseTransitions: got %d, want %d", got, want)
	}
	if got, want := ptr.Deref(after.Spec.LeaseDurationSeconds, 0), int32(15); got != want {
		t.Errorf("leaseDurationSeconds: got %d, want %d", got, want)
	}
}

// TestAcquireHeldLeaseWaitsThenGivesUp polls (no watch) and steps the clock
// around each wait: a millisecond short of the retry interval the waiter
// still sleeps, past the interval's 10% jitter it has woken, and the last
// wait ends exactly at the retry timeout.
func TestAcquireHeldLeaseWaitsThenGivesUp(t *testing.T) {
	renewed := epoch.Add(-5 * time.Second)
	base := newFake(heldLease(holderOther, renewed, 60))
	var log callLog
	clk := testingclock.NewFakeClock(epoch)
	rl := resourcelock.NewResourceLocker(counted(base, &log, interceptor.Funcs{}), unitNS, resourcelock.WithClock(clk),
		resourcelock.WithRetryInterval(time.Second), resourcelock.WithRetryTimeout(3*time.Second), resourcelock.WithoutWatch())

	call := goAcquire(t, rl, clk, context.Background(), holderMe)
	steps := []struct {
		step      time.Duration
		wantFired bool
		wantGets  int
	}{
		{999 * time.Millisecond, false, 1},
		{101 * time.Millisecond, true, 1}, // now 1.1s
		{999 * time.Millisecond, false, 2},
		{101 * time.Millisecond, true, 2},  // now 2.2s
		{799 * time.Millisecond, false, 3}, // the last wait is cut to the deadline, 0.8s
		{1 * time.Millisecond, true, 3},    // now 3s
	}
	for i, s := range steps {
		call.waiting()
		if got := log.count("get"); got != s.wantGets {
			t.Fatalf("step %d: gets before it: got %d, want %d", i, got, s.wantGets)
		}
		gets := log.count("get")
		clk.Step(s.step)
		if got := call.woke(func() int { return log.count("get") }, gets); got != s.wantFired {
			t.Fatalf("step %d of %v to %v: woke the waiter: got %v, want %v", i, s.step, clk.Now().Sub(epoch), got, s.wantFired)
		}
	}
	err := call.noWait()
	if !errors.Is(err, resourcelock.ErrLockHeld) {
		t.Fatalf("AcquireLock: got %v, want ErrLockHeld", err)
	}
	var held *resourcelock.HeldError
	if !errors.As(err, &held) {
		t.Fatalf("AcquireLock: got %T, want *HeldError", err)
	}
	if held.Namespace != unitNS || held.Name != unitLock || held.Holder != holderOther {
		t.Errorf("HeldError: got Lease %s/%s held by %q, want %s/%s held by %q",
			held.Namespace, held.Name, held.Holder, unitNS, unitLock, holderOther)
	}
	if want := renewed.Add(60 * time.Second); !held.Until.Equal(want) {
		t.Errorf("HeldError.Until: got %v, want %v (renewTime + duration)", held.Until, want)
	}
	if want := 3 * time.Second; held.Waited != want {
		t.Errorf("HeldError.Waited: got %v, want %v", held.Waited, want)
	}
	if got, want := log.count("get"), 4; got != want {
		t.Errorf("gets: got %d, want %d (one per try)", got, want)
	}
	if got := holderOf(storedLease(t, base)); got != holderOther {
		t.Errorf("holderIdentity after giving up: got %q, want %q", got, holderOther)
	}
}

// TestAcquireWaitsOnWatch is the wait when the client can watch (the fake
// client can): the waiter learns the Lease from its watch, not by reading it,
// sends no request while it waits, wakes at once when the Lease changes, and
// otherwise sleeps on the locker's clock until the Lease expires or the retry
// timeout.
func TestAcquireWaitsOnWatch(t *testing.T) {
	renewed := epoch.Add(-5 * time.Second)
	tests := []struct {
		name string
		// change alters the Lease, as another locker would, while the
		// waiter waits.
		change func(t *testing.T, base client.WithWatch)
		// step is how far the clock moves once the waiter waits; zero: not
		// at all.
		step       time.Duration
		wantHeld   bool
		wantWaited time.Duration // of a HeldError
	}{
		{
			name: "deleted by its holder",
			change: func(t *testing.T, base client.WithWatch) {
				if err := base.Delete(context.Background(), heldLease(holderOther, renewed, 60)); err != nil {
					t.Fatalf("delete the Lease as its holder: %v", err)
				}
			},
		},
		{
			name: "handed to a holder-less Lease",
			change: func(t *testing.T, base client.WithWatch) {
				lease := storedLease(t, base)
				lease.Spec.HolderIdentity = nil
				if err := base.Update(context.Background(), lease); err != nil {
					t.Fatalf("clear the holder: %v", err)
				}
			},
		},
		{
			name:       "held until the retry timeout",
			step:       time.Second,
			wantHeld:   true,
			wantWaited: 3 * time.Second,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			base := newFake(heldLease(holderOther, renewed, 60))
			var log callLog
			clk := testingclock.NewFakeClock(epoch)
			rl := resourcelock.NewResourceLocker(counted(base, &log, interceptor.Funcs{}), unitNS, resourcelock.WithClock(clk),
				resourcelock.WithRetryInterval(100*time.Millisecond), resourcelock.WithRetryTimeout(3*time.Second))

			call := goAcquire(t, rl, clk, context.Background(), holderMe)
			call.waiting()
			if tt.change != nil {
				tt.change(t, base)
			}
			var err error
			if tt.step > 0 {
				err = call.finish(tt.step)
			} else {
				// The waiter's timer stays on the clock until the watch
				// event ends its wait; the clock moves only for its turn
				// after a deletion.
				err = call.handoff()
			}
			if got := log.count("get"); got != 0 {
				t.Errorf("gets: got %d, want 0: the watch sends the Lease, and a watching waiter does not poll", got)
			}
			if got := log.count("watch"); got != 1 {
				t.Errorf("watches: got %d, want 1", got)
			}
			if !tt.wantHeld {
				if err != nil {
					t.Fatalf("AcquireLock: got %v, want nil", err)
				}
				if got := holderOf(storedLease(t, base)); got != holderMe {
					t.Errorf("holderIdentity: got %q, want %q", got, holderMe)
				}
				if got := clk.Since(epoch); got > time.Millisecond {
					t.Errorf("fake clock moved %v, want at most 1ms, the turn after a deletion: the watch, not the clock, woke the waiter", got)
				}
				return
			}
			var held *resourcelock.HeldError
			if !errors.As(err, &held) {
				t.Fatalf("AcquireLock: got %v, want a *HeldError", err)
			}
			if held.Waited != tt.wantWaited {
				t.Errorf("HeldError.Waited: got %v, want %v", held.Waited, tt.wantWaited)
			}
		})
	}
}

// TestAcquireRetriesRaces has another locker win each race once, for real
// where the fake client can tell (AlreadyExists, Conflict) and injected
// where it cannot (an Update of a Lease deleted meanwhile).
func TestAcquireRetriesRaces(t *testing.T) {
	expired := heldLease(holderOther, epoch.Add(-time.Minute), 15)
	tests := []struct {
		name   string
		seed   []client.Object
		inject func(raced *int) interceptor.Funcs
	}{
		{
			name: "AlreadyExists on Create",
			inject: func(raced *int) interceptor.Funcs {
				return interceptor.Funcs{Create: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
					if *raced == 0 {
						*raced++
						// Another locker created it first and released it, leaving it free.
						if err := c.Create(ctx, leaseWith(coordinationv1.LeaseSpec{})); err != nil {
							return err
						}
					}
					return c.Create(ctx, obj, opts...)
				}}
			},
		},
		{
			name: "Conflict on Update",
			seed: []client.Object{expired.DeepCopy()},
			inject: func(raced *int) interceptor.Funcs {
				return interceptor.Funcs{Update: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.UpdateOption) error {
					if *raced == 0 {
						*raced++
						// Another writer changed the Lease after it was read.
						lease := &coordinationv1.Lease{}
						if err := c.Get(ctx, client.ObjectKeyFromObject(obj), lease); err != nil {
							return err
						}
						lease.Annotations = map[string]string{"touched": "yes"}
						if err := c.Update(ctx, lease); err != nil {
							return err
						}
					}
					return c.Update(ctx, obj, opts...)
				}}
			},
		},
		{
			name: "NotFound on Update",
			seed: []client.Object{expired.DeepCopy()},
			inject: func(raced *int) interceptor.Funcs {
				return interceptor.Funcs{Update: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.UpdateOption) error {
					if *raced == 0 {
						*raced++
						// The holder released it after it was read.
						if err := c.Delete(ctx, leaseWith(coordinationv1.LeaseSpec{})); err != nil {
							return err
						}
						return apierrors.NewNotFound(leasesResource, obj.GetName())
					}
					return c.Update(ctx, obj, opts...)
				}}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			base := newFake(tt.seed...)
			raced := 0
			clk := testingclock.NewFakeClock(epoch)
			rl := resourcelock.NewResourceLocker(counted(base, new(callLog), tt.inject(&raced)), unitNS, resourcelock.WithClock(clk))

			// At once: the clock never moves. (After a lost race the call
			// may wait on a watch for the winner's change, with a timer
			// that the change, not the clock, ends.)
			if err := goAcquire(t, rl, clk, context.Background(), holderMe).result(); err != nil {
				t.Fatalf("AcquireLock: got %v, want nil", err)
			}
			if raced != 1 {
				t.Fatalf("races: got %d, want 1", raced)
			}
			if got := holderOf(storedLease(t, base)); got != holderMe {
				t.Errorf("holderIdentity: got %q, want %q", got, holderMe)
			}
		})
	}
}

func TestAcquireSameHolderRenews(t *testing.T) {
	tests := []struct {
		name    string
		renewed time.Time
	}{
		{name: "valid", renewed: epoch.Add(-5 * time.Second)},
		{name: "expired", renewed: epoch.Add(-time.Hour)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			base := newFake(heldLease(holderMe, tt.renewed, 15))
			before := storedLease(t, base)
			clk := testingclock.NewFakeClock(epoch)
			rl := resourcelock.NewResourceLocker(base, unitNS, resourcelock.WithClock(clk), resourcelock.WithRetryTimeout(0))

			if err := goAcquire(t, rl, clk, context.Background(), holderMe).noWait(); err != nil {
				t.Fatalf("AcquireLock by the holder: got %v, want nil", err)
			}
			after := storedLease(t, base)
			if got := after.Spec.RenewTime; got == nil || !got.Time.Equal(epoch) {
				t.Errorf("renewTime: got %v, want %v", got, epoch)
			}
			if got, want := after.Spec.AcquireTime, before.Spec.AcquireTime; !got.Equal(want) {
				t.Errorf("acquireTime: got %v, want %v, unchanged", got, want)
			}
			if got, want := ptr.Deref(after.Spec.LeaseTransitions, 0), ptr.Deref(before.Spec.LeaseTransitions, 0); got != want {
				t.Errorf("leaseTransitions: got %d, want %d, unchanged", got, want)
			}
			if got := holderOf(after); got != holderMe {
				t.Errorf("holderIdentity: got %q, want %q", got, holderMe)
			}
		})
	}
}

// TestAcquireFailedRefreshKeepsTheLock has a locker that holds the lock
// refresh it (AcquireLock again with the same lockerID), and the refresh
// fail or be cancelled while its Update is in flight. The caller holds the
// lock from its first call: the Lease must stay, held by it, and another
// locker must still find the lock held. A failed first acquisition, by
// contrast, releases what its unseen write may have won (TestAcquireCancel).
func TestAcquireFailedRefreshKeepsTheLock(t *testing.T) {
	tests := []struct {
		name   string
		update func(ctx context.Context, c client.WithWatch, obj client.Object, cancel context.CancelFunc) error
	}{
		{"server unavailable until the retry timeout", func(context.Context, client.WithWatch, client.Object, context.CancelFunc) error {
			return apierrors.NewServiceUnavailable("etcd leader changed")
		}},
		{"cancelled while the Update was in flight", func(ctx context.Context, c client.WithWatch, obj client.Object, cancel context.CancelFunc) error {
			cancel()
			return c.Update(ctx, obj)
		}},
		{"renewed with the response lost, then unavailable", func() func(context.Context, client.WithWatch, client.Object, context.CancelFunc) error {
			landed := false
			return func(ctx context.Context, c client.WithWatch, obj client.Object, _ context.CancelFunc) error {
				if landed {
					return apierrors.NewServiceUnavailable("etcd leader changed")
				}
				landed = true
				if err := c.Update(ctx, obj); err != nil {
					return err
				}
				return apierrors.NewTimeoutError("response lost", 0)
			}
		}()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var refreshing atomic.Bool
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			clk := testingclock.NewFakeClock(epoch)
			base := newFake()
			c := counted(base, new(callLog), interceptor.Funcs{
				// A Create in a refresh can only fail; one whose outcome
				// the call cannot see must not make it release the Lease
				// it holds.
				Create: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
					if refreshing.Load() {
						return apierrors.NewServiceUnavailable("etcd leader changed")
					}
					return c.Create(ctx, obj, opts...)
				},
				Update: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.UpdateOption) error {
					if !refreshing.Load() {
						return c.Update(ctx, obj, opts...)
					}
					return tt.update(ctx, c, obj, cancel)
				},
			})
			rl := resourcelock.NewResourceLocker(c, unitNS, resourcelock.WithClock(clk), resourcelock.WithoutWatch(),
				resourcelock.WithRetryTimeout(time.Second), resourcelock.WithMetrics(nil))
			if err := goAcquire(t, rl, clk, context.Background(), holderMe).noWait(); err != nil {
				t.Fatalf("first AcquireLock: %v", err)
			}
			refreshing.Store(true)
			if err := goAcquire(t, rl, clk, ctx, holderMe).finish(100 * time.Millisecond); err == nil {
				t.Fatal("refresh: got nil, want an error")
			}
			refreshing.Store(false)
			if got := holderOf(storedLease(t, base)); got != holderMe {
				t.Fatalf("after the failed refresh: got a Lease held by %q, want one held by %q", got, holderMe)
			}
			if _, ok := rl.AcquiredAt(unitLock, holderMe); !ok {
				t.Error("AcquiredAt after the failed refresh: got not held, want held")
			}
			other := resourcelock.NewResourceLocker(c, unitNS, resourcelock.WithClock(clk), resourcelock.WithRetryTimeout(0), resourcelock.WithMetrics(nil))
			if err := goAcquire(t, other, clk, context.Background(), holderOther).noWait(); !errors.Is(err, resourcelock.ErrLockHeld) {
				t.Errorf("another locker's try-lock: got %v, want ErrLockHeld", err)
			}
			if err := rl.ReleaseLock(context.Background(), unitLock, holderMe); err != nil {
				t.Fatalf("ReleaseLock: %v", err)
			}
			if lease := storedLease(t, base); lease != nil {
				t.Errorf("after ReleaseLock: got a Lease held by %q, want none", holderOf(lease))
			}
		})
	}
}

// TestAcquireCreateWithLostResponse has the Create reach the server and its
// answer be lost: AcquireLock must find the Lease its own and succeed, and
// the release after it must leave no Lease.
func TestAcquireCreateWithLostResponse(t *testing.T) {
	tests := []struct {
		name string
		err  error
	}{
		{name: "gateway timeout", err: apierrors.NewTimeoutError("response lost", 0)},
		{name: "server timeout", err: apierrors.NewServerTimeout(leasesResource, "create", 0)},
		{name: "client deadline", err: fmt.Errorf("post lease: %w", context.DeadlineExceeded)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			base := newFake()
			lost := 0
			clk := testingclock.NewFakeClock(epoch)
			c := counted(base, new(callLog), interceptor.Funcs{
				Create: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
					if err := c.Create(ctx, obj, opts...); err != nil || lost > 0 {
						return err
					}
					lost++
					return tt.err
				},
			})
			rl := resourcelock.NewResourceLocker(c, unitNS, resourcelock.WithClock(clk))

			if err := goAcquire(t, rl, clk, context.Background(), holderMe).finish(time.Second); err != nil {
				t.Fatalf("AcquireLock after a lost Create response: got %v, want nil", err)
			}
			if lost != 1 {
				t.Fatalf("lost responses: got %d, want 1", lost)
			}
			if got := holderOf(storedLease(t, base)); got != holderMe {
				t.Errorf("holderIdentity: got %q, want %q", got, holderMe)
			}
			if err := rl.ReleaseLock(context.Background(), unitLock, holderMe); err != nil {
				t.Fatalf("ReleaseLock: got %v, want nil", err)
			}
			if lease := storedLease(t, base); lease != nil {
				t.Errorf("after ReleaseLock: got a Lease held by %q, want none", holderOf(lease))
			}
		})
	}
}

// TestAcquireExpiry is the expiry rule, judged on the locker's clock with a
// try-lock: free Leases are taken over, held ones give ErrLockHeld.
func TestAcquireExpiry(t *testing.T) {
	const seconds = 10
	d := seconds * time.Second
	tests := []struct {
		name     string
		spec     coordinationv1.LeaseSpec
		wantFree bool
	}{
		{
			name:     "no holder",
			spec:     coordinationv1.LeaseSpec{LeaseDurationSeconds: ptr.To[int32](seconds), RenewTime: microTime(epoch)},
			wantFree: true,
		},
		{
			name:     "empty holder",
			spec:     coordinationv1.LeaseSpec{HolderIdentity: ptr.To(""), LeaseDurationSeconds: ptr.To[int32](seconds), RenewTime: microTime(epoch)},
			wantFree: true,
		},
		{
			name:     "no leaseDurationSeconds",
			spec:     coordinationv1.LeaseSpec{HolderIdentity: ptr.To(holderOther), RenewTime: microTime(epoch)},
			wantFree: true,
		},
		{
			name:     "zero leaseDurationSeconds",
			spec:     coordinationv1.LeaseSpec{HolderIdentity: ptr.To(holderOther), LeaseDurationSeconds: ptr.To[int32](0), RenewTime: microTime(epoch)},
			wantFree: true,
		},
		{
			name:     "renewTime plus duration past",
			spec:     coordinationv1.LeaseSpec{HolderIdentity: ptr.To(holderOther), LeaseDurationSeconds: ptr.To[int32](seconds), RenewTime: microTime(epoch.Add(-d - time.Millisecond))},
			wantFree: true,
		},
		{
			name:     "renewTime plus duration ahead",
			spec:     coordinationv1.LeaseSpec{HolderIdentity: ptr.To(holderOther), LeaseDurationSeconds: ptr.To[int32](seconds), RenewTime: microTime(epoch.Add(-d + time.Millisecond))},
			wantFree: false,
		},
		{
			name: "renewTime past wins over a recent acquireTime",
			spec: coordinationv1.LeaseSpec{HolderIdentity: ptr.To(holderOther), LeaseDurationSeconds: ptr.To[int32](seconds),
				AcquireTime: microTime(epoch), RenewTime: microTime(epoch.Add(-2 * d))},
			wantFree: true,
		},
		{
			name:     "only acquireTime, plus duration past",
			spec:     coordinationv1.LeaseSpec{HolderIdentity: ptr.To(holderOther), LeaseDurationSeconds: ptr.To[int32](seconds), AcquireTime: microTime(epoch.Add(-d - time.Millisecond))},
			wantFree: true,
		},
		{
			name:     "only acquireTime, plus duration ahead",
			spec:     coordinationv1.LeaseSpec{HolderIdentity: ptr.To(holderOther), LeaseDurationSeconds: ptr.To[int32](seconds), AcquireTime: microTime(epoch.Add(-time.Second))},
			wantFree: false,
		},
		{
			name:     "renewTime in the future, holder clock ahead",
			spec:     coordinationv1.LeaseSpec{HolderIdentity: ptr.To(holderOther), LeaseDurationSeconds: ptr.To[int32](seconds), RenewTime: microTime(epoch.Add(time.Hour))},
			wantFree: false,
		},
		{
			name:     "no times at all",
			spec:     coordinationv1.LeaseSpec{HolderIdentity: ptr.To(holderOther), LeaseDurationSeconds: ptr.To[int32](seconds)},
			wantFree: false,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			base := newFake(leaseWith(tt.spec))
			clk := testingclock.NewFakeClock(epoch)
			rl := resourcelock.NewResourceLocker(base, unitNS, resourcelock.WithClock(clk), resourcelock.WithRetryTimeout(0))

			err := goAcquire(t, rl, clk, context.Background(), holderMe).noWait()
			if tt.wantFree {
				if err != nil {
					t.Fatalf("AcquireLock of a free Lease: got %v, want nil", err)
				}
				if got := holderOf(storedLease(t, base)); got != holderMe {
					t.Errorf("holderIdentity: got %q, want %q", got, holderMe)
				}
				return
			}
			if !errors.Is(err, resourcelock.ErrLockHeld) {
				t.Fatalf("AcquireLock of a held Lease: got %v, want ErrLockHeld", err)
			}
			if got, want := holderOf(storedLease(t, base)), ptr.Deref(tt.spec.HolderIdentity, ""); got != want {
				t.Errorf("holderIdentity: got %q, want %q, unchanged", got, want)
			}
		})
	}
}

// TestAcquireWithoutWatchList: a waiter whose client does not answer a
// watch-list (controller-runtime's fake client ignores one; a server without
// the WatchList feature refuses it) reads the Lease, watches from that read,
// and still wakes on the watch. Its locker does not ask for a watch-list
// again until WatchListRecheck has passed on its clock, and then asks once:
// a watch-list answered late once (a server that queued it) must not turn
// them off for the locker's life.
func TestAcquireWithoutWatchList(t *testing.T) {
	tests := []struct {
		name   string
		inject interceptor.Funcs
	}{
		{name: "ignored"},
		{
			name: "refused",
			inject: interceptor.Funcs{Watch: func(ctx context.Context, c client.WithWatch, list client.ObjectList, opts ...client.ListOption) (watch.Interface, error) {
				if resourcelock.IsWatchList(opts) {
					return nil, apierrors.NewBadRequest("sendInitialEvents is forbidden for watch unless the WatchList feature gate is enabled")
				}
				return c.Watch(ctx, list, opts...)
			}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			base := fake.NewClientBuilder().WithScheme(scheme.Scheme).Build()
			var log callLog
			var lists atomic.Int32
			c := interceptor.NewClient(counted(base, &log, tt.inject), interceptor.Funcs{
				Watch: func(ctx context.Context, c client.WithWatch, list client.ObjectList, opts ...client.ListOption) (watch.Interface, error) {
					if resourcelock.IsWatchList(opts) {
						lists.Add(1)
					}
					return c.Watch(ctx, list, opts...)
				},
			})
			clk := testingclock.NewFakeClock(epoch)
			rl := resourcelock.NewResourceLocker(c, unitNS, resourcelock.WithClock(clk),
				resourcelock.WithRetryInterval(20*time.Millisecond), resourcelock.WithRetryTimeout(time.Minute))
			other := resourcelock.NewResourceLocker(base, unitNS, resourcelock.WithClock(clk))
			var logMu sync.Mutex
			var logged []string
			ctx := logf.IntoContext(context.Background(), funcr.New(func(_, args string) {
				logMu.Lock()
				defer logMu.Unlock()
				logged = append(logged, args)
			}, funcr.Options{Verbosity: 1}))

			// Two locks, so that the second waiter cannot use the first's
			// watch; the third comes after the recheck.
			for _, name := range []string{"first", "second", "third"} {
				if name == "third" {
					if got := lists.Load(); got != 1 {
						t.Errorf("watch-lists asked for before the recheck: got %d, want 1", got)
					}
					clk.Step(resourcelock.WatchListRecheck)
				}
				if err := other.AcquireLock(ctx, name, holderOther); err != nil {
					t.Fatalf("AcquireLock %s by the other locker: %v", name, err)
				}
				call := goCall(t, clk, ctx, func(ctx context.Context) error { return rl.AcquireLock(ctx, name, holderMe) })
				call.waiting()
				if err := other.ReleaseLock(ctx, name, holderOther); err != nil {
					t.Fatalf("ReleaseLock %s by the other locker: %v", name, err)
				}
				// The watch, not the clock, wakes the waiter.
				if err := call.handoff(); err != nil {
					t.Fatalf("AcquireLock %s: got %v, want nil once the other released", name, err)
				}
			}
			if got := lists.Load(); got != 2 {
				t.Errorf("watch-lists asked for: got %d, want 2, the second after the recheck", got)
			}
			logMu.Lock()
			defer logMu.Unlock()
			said := 0
			for _, line := range logged {
				if strings.Contains(line, "watch-lists not served") {
					said++
				}
			}
			if said != 1 {
				t.Errorf("logged that watch-lists are not served %d times, want once: %q", said, logged)
			}
			if got, want := log.count("get"), 3; got != want {
				t.Errorf("gets: got %d, want %d, one per waiter", got, want)
			}
			if got, want := clk.Since(epoch), resourcelock.WatchListRecheck; got < want || got > want+3*time.Millisecond {
				t.Errorf("fake clock moved %v, want %v and at most a millisecond per waiter's turn, stepped only to the recheck", got, want)
			}
		})
	}
}

// TestAcquireUnchangedLeaseExpires is the rule for a Lease whose renewTime
// lies in the future: it is free once this locker has seen it unchanged (same
// UID and resourceVersion) for a full lease duration on its own clock, and a
// change restarts the count. Each try is a try-lock; the clock moves between
// them.
func TestAcquireUnchangedLeaseExpires(t *testing.T) {
	const seconds = 10
	d := seconds * time.Second
	ahead := heldLease(holderOther, epoch.Add(time.Hour), seconds)
	type try struct {
		after    time.Duration // clock step before the try
		change   bool          // the Lease changes before the try
		wantFree bool
	}
	tests := []struct {
		name string
		// change makes the change a try asks for; newUID makes every read
		// show a new UID from then on.
		change func(t *testing.T, base client.WithWatch, newUID *bool)
		tries  []try
	}{
		{
			name: "unchanged",
			tries: []try{
				{after: 0, wantFree: false},
				{after: d - time.Millisecond, wantFree: false},
				{after: time.Millisecond, wantFree: true},
			},
		},
		{
			name: "resourceVersion changes",
			change: func(t *testing.T, base client.WithWatch, _ *bool) {
				lease := storedLease(t, base)
				lease.Spec.RenewTime = microTime(lease.Spec.RenewTime.Add(time.Second))
				if err := base.Update(context.Background(), lease); err != nil {
					t.Fatalf("renew the Lease as its holder: %v", err)
				}
			},
			tries: []try{
				{after: 0, wantFree: false},
				{after: d / 2, change: true, wantFree: false},
				{after: d / 2, wantFree: false},
				{after: d/2 - time.Millisecond, wantFree: false},
				{after: time.Millisecond, wantFree: true},
			},
		},
		{
			name: "UID changes, resourceVersion the same",
			change: func(t *testing.T, _ client.WithWatch, newUID *bool) {
				*newUID = true
			},
			tries: []try{
				{after: 0, wantFree: false},
				{after: d / 2, change: true, wantFree: false},
				{after: d / 2, wantFree: false},
				{after: d/2 - time.Millisecond, wantFree: false},
				{after: time.Millisecond, wantFree: true},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			base := newFake(ahead.DeepCopy())
			// newUID makes every read show the Lease as recreated with the
			// same resourceVersion, which the fake client cannot do itself.
			newUID := false
			c := counted(base, new(callLog), interceptor.Funcs{
				Get: func(ctx context.Context, c client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
					err := c.Get(ctx, key, obj, opts...)
					if err == nil && newUID {
						obj.SetUID("uid-recreated")
					}
					return err
				},
			})
			clk := testingclock.NewFakeClock(epoch)
			rl := resourcelock.NewResourceLocker(c, unitNS, resourcelock.WithClock(clk), resourcelock.WithRetryTimeout(0))

			for i, try := range tt.tries {
				clk.Step(try.after)
				if try.change {
					tt.change(t, base, &newUID)
				}
				err := goAcquire(t, rl, clk, context.Background(), holderMe).noWait()
				at := clk.Now().Sub(epoch)
				if try.wantFree {
					if err != nil {
						t.Fatalf("try %d at %v: got %v, want nil (free)", i, at, err)
					}
					continue
				}
				if !errors.Is(err, resourcelock.ErrLockHeld) {
					t.Fatalf("try %d at %v: got %v, want ErrLockHeld", i, at, err)
				}
			}
			if got := holderOf(storedLease(t, base)); got != holderMe {
				t.Errorf("holderIdentity after the last try: got %q, want %q", got, holderMe)
			}
		})
	}
}

// TestAcquireWaitsOutLeaseFromClockAhead is the same rule inside one
// AcquireLock whose retry timeout is longer than the lease duration: it takes
// the Lease over once it has seen it unchanged for the duration, not before.
func TestAcquireWaitsOutLeaseFromClockAhead(t *testing.T) {
	const seconds = 10
	d := seconds * time.Second
	tests := []struct {
		name string
		opts []resourcelock.Option
	}{
		{name: "polling", opts: []resourcelock.Option{resourcelock.WithoutWatch()}},
		{name: "watching"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			base := newFake(heldLease(holderOther, epoch.Add(time.Hour), seconds))
			clk := testingclock.NewFakeClock(epoch)
			rl := resourcelock.NewResourceLocker(base, unitNS, append(tt.opts, resourcelock.WithClock(clk),
				resourcelock.WithRetryInterval(time.Second), resourcelock.WithRetryTimeout(3*d))...)

			const tick = 100 * time.Millisecond
			if err := goAcquire(t, rl, clk, context.Background(), holderMe).finish(tick); err != nil {
				t.Fatalf("AcquireLock: got %v, want nil once the Lease was seen unchanged for %v", err, d)
			}
			lease := storedLease(t, base)
			if got := holderOf(lease); got != holderMe {
				t.Fatalf("holderIdentity: got %q, want %q", got, holderMe)
			}
			// The waiter wakes at the expiry, not at its next retry interval:
			// the takeover lands in the first tick past it.
			got := lease.Spec.AcquireTime.Sub(epoch)
			if got < d || got > d+tick {
				t.Errorf("takeover at %v after the first read, want in [%v, %v]", got, d, d+tick)
			}
		})
	}
}

// deleteRecorder is an interceptor.Funcs whose Delete records the options
// it was given, applied, before it passes the call on.
func deleteRecorder(seen *[]client.DeleteOptions) interceptor.Funcs {
	return interceptor.Funcs{
		Delete: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.DeleteOption) error {
			var do client.DeleteOptions
			do.ApplyOptions(opts)
			*seen = append(*seen, do)
			return c.Delete(ctx, obj, opts...)
		},
	}
}

// TestReleaseDeletesWithPreconditions checks the options of the Delete: the
// fake client ignores a UID precondition, so the check is on what it was
// given.
func TestReleaseDeletesWithPreconditions(t *testing.T) {
	tests := []struct {
		name string
		// acquire, when set, has the releasing locker acquire the Lease first,
		// so it remembers the version it holds.
		acquire  bool
		wantGets int // reads during the release
	}{
		{name: "remembered from AcquireLock", acquire: true, wantGets: 0},
		{name: "read by a locker that did not acquire it", acquire: false, wantGets: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			base := newFake(heldLease(holderMe, epoch.Add(-time.Second), 15))
			var seen []client.DeleteOptions
			var log callLog
			clk := testingclock.NewFakeClock(epoch)
			rl := resourcelock.NewResourceLocker(counted(base, &log, deleteRecorder(&seen)), unitNS, resourcelock.WithClock(clk))
			if tt.acquire {
				if err := goAcquire(t, rl, clk, context.Background(), holderMe).noWait(); err != nil {
					t.Fatalf("AcquireLock: %v", err)
				}
			}
			held := storedLease(t, base)

			gets := log.count("get")
			if err := rl.ReleaseLock(context.Background(), unitLock, holderMe); err != nil {
				t.Fatalf("ReleaseLock: got %v, want nil", err)
			}
			if got := log.count("get") - gets; got != tt.wantGets {
				t.Errorf("reads during ReleaseLock: got %d, want %d", got, tt.wantGets)
			}
			if len(seen) != 1 {
				t.Fatalf("deletes: got %d, want 1", len(seen))
			}
			pre := seen[0].Preconditions
			if pre == nil || pre.UID == nil || pre.ResourceVersion == nil {
				t.Fatalf("preconditions: got %+v, want UID and ResourceVersion", pre)
			}
			if *pre.UID != held.UID || *pre.ResourceVersion != held.ResourceVersion {
				t.Errorf("preconditions: got UID %q resourceVersion %q, want %q %q",
					*pre.UID, *pre.ResourceVersion, held.UID, held.ResourceVersion)
			}
			if lease := storedLease(t, base); lease != nil {
				t.Errorf("after ReleaseLock: got a Lease held by %q, want none", holderOf(lease))
			}
		})
	}
}

func TestReleaseLeavesOthersLease(t *testing.T) {
	tests := []struct {
		name string
		seed []client.Object
		// takeover, when set, has holderMe acquire the Lease with the
		// releasing locker and holderOther take it over after it expired.
		takeover   bool
		wantHolder string
		wantDelete int
	}{
		{name: "absent", wantHolder: "<none>"},
		{name: "held by another", seed: []client.Object{heldLease(holderOther, epoch, 15)}, wantHolder: holderOther},
		// The locker remembers the version it acquired; the Delete's
		// precondition fails, and the read that follows finds the new holder.
		{name: "taken over since acquired", takeover: true, wantHolder: holderOther, wantDelete: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			base := newFake(tt.seed...)
			var log callLog
			clk := testingclock.NewFakeClock(epoch)
			rl := resourcelock.NewResourceLocker(counted(base, &log, interceptor.Funcs{}), unitNS, resourcelock.WithClock(clk))
			if tt.takeover {
				if err := goAcquire(t, rl, clk, context.Background(), holderMe).noWait(); err != nil {
					t.Fatalf("AcquireLock: %v", err)
				}
				later := testingclock.NewFakeClock(epoch.Add(time.Hour))
				other := resourcelock.NewResourceLocker(base, unitNS, resourcelock.WithClock(later), resourcelock.WithRetryTimeout(0))
				if err := goAcquire(t, other, later, context.Background(), holderOther).noWait(); err != nil {
					t.Fatalf("AcquireLock by %s after expiry: %v", holderOther, err)
				}
			}

			if err := rl.ReleaseLock(context.Background(), unitLock, holderMe); err != nil {
				t.Fatalf("ReleaseLock: got %v, want nil", err)
			}
			if got := holderOf(storedLease(t, base)); got != tt.wantHolder {
				t.Errorf("holderIdentity after ReleaseLock: got %q, want %q", got, tt.wantHolder)
			}
			if got := log.count("delete"); got != tt.wantDelete {
				t.Errorf("deletes: got %d, want %d", got, tt.wantDelete)
			}
		})
	}
}

// TestReleaseRereadsOnConflict injects a failed precondition on the first
// Delete: ReleaseLock must read the Lease again and decide again.
func TestReleaseRereadsOnConflict(t *testing.T) {
	tests := []struct {
		name string
		// meanwhile changes the Lease before the failed Delete answers.
		meanwhile  func(ctx context.Context, c client.WithWatch) error
		wantHolder string
		wantDelete int
	}{
		{
			name:       "still the holder",
			meanwhile:  func(context.Context, client.WithWatch) error { return nil },
			wantHolder: "<none>",
			wantDelete: 2,
		},
		{
			name: "another holder took over",
			meanwhile: func(ctx context.Context, c client.WithWatch) error {
				lease := &coordinationv1.Lease{}
				if err := c.Get(ctx, client.ObjectKey{Namespace: unitNS, Name: unitLock}, lease); err != nil {
					return err
				}
				lease.Spec.HolderIdentity = ptr.To(holderOther)
				return c.Update(ctx, lease)
			},
			wantHolder: holderOther,
			wantDelete: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			base := newFake(heldLease(holderMe, epoch, 15))
			var log callLog
			failed := 0
			c := counted(base, &log, interceptor.Funcs{
				Delete: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.DeleteOption) error {
					if failed > 0 {
						return c.Delete(ctx, obj, opts...)
					}
					failed++
					if err := tt.meanwhile(ctx, c); err != nil {
						return err
					}
					return apierrors.NewConflict(leasesResource, obj.GetName(), errors.New("precondition failed: UID in precondition does not match"))
				},
			})
			clk := testingclock.NewFakeClock(epoch)
			rl := resourcelock.NewResourceLocker(c, unitNS, resourcelock.WithClock(clk))

			if err := goCall(t, clk, context.Background(), func(ctx context.Context) error {
				return rl.ReleaseLock(ctx, unitLock, holderMe)
			}).noWait(); err != nil {
				t.Fatalf("ReleaseLock: got %v, want nil", err)
			}
			if got := holderOf(storedLease(t, base)); got != tt.wantHolder {
				t.Errorf("holderIdentity after ReleaseLock: got %q, want %q", got, tt.wantHolder)
			}
			if got := log.count("delete"); got != tt.wantDelete {
				t.Errorf("deletes: got %d, want %d", got, tt.wantDelete)
			}
		})
	}
}

func TestReleaseRetriesTransientError(t *testing.T) {
	base := newFake(heldLease(holderMe, epoch, 15))
	var log callLog
	failed := 0
	c := counted(base, &log, interceptor.Funcs{
		Delete: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.DeleteOption) error {
			if failed > 0 {
				return c.Delete(ctx, obj, opts...)
			}
			failed++
			return apierrors.NewServiceUnavailable("etcd leader changed")
		},
	})
	clk := testingclock.NewFakeClock(epoch)
	rl := resourcelock.NewResourceLocker(c, unitNS, resourcelock.WithClock(clk))

	call := goCall(t, clk, context.Background(), func(ctx context.Context) error {
		return rl.ReleaseLock(ctx, unitLock, holderMe)
	})
	if err := call.finish(time.Second); err != nil {
		t.Fatalf("ReleaseLock: got %v, want nil", err)
	}
	if got, want := log.count("delete"), 2; got != want {
		t.Errorf("deletes: got %d, want %d", got, want)
	}
	if lease := storedLease(t, base); lease != nil {
		t.Errorf("after ReleaseLock: got a Lease held by %q, want none", holderOf(lease))
	}
}

// cancelDuring is an interceptor.Funcs whose Create and Update reach the
// (fake) server, then see the caller's ctx cancelled before the answer
// comes back.
func cancelDuring(cancel context.CancelFunc) interceptor.Funcs {
	return interceptor.Funcs{
		Create: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
			if err := c.Create(ctx, obj, opts...); err != nil {
				return err
			}
			cancel()
			return ctx.Err()
		},
		Update: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.UpdateOption) error {
			if err := c.Update(ctx, obj, opts...); err != nil {
				return err
			}
			cancel()
			return ctx.Err()
		},
	}
}

func TestAcquireCancel(t *testing.T) {
	tests := []struct {
		name string
		seed []client.Object
		// inject builds the faults, given the caller's cancel.
		inject func(cancel context.CancelFunc) interceptor.Funcs
		opts   []resourcelock.Option
		// cancelFirst cancels the ctx before AcquireLock is called.
		cancelFirst bool
		// drive runs the call to its end; it may cancel.
		drive      func(call *pendingCall, cancel context.CancelFunc) error
		wantHolder string
		wantCalls  int // -1: any
	}{
		{
			name: "cancelled during a polling wait",
			seed: []client.Object{heldLease(holderOther, epoch, 15)},
			opts: []resourcelock.Option{resourcelock.WithoutWatch()},
			drive: func(call *pendingCall, cancel context.CancelFunc) error {
				call.waiting()
				cancel()
				return call.result()
			},
			wantHolder: holderOther,
			wantCalls:  2, // create, get
		},
		{
			name: "cancelled during a watching wait",
			seed: []client.Object{heldLease(holderOther, epoch, 15)},
			drive: func(call *pendingCall, cancel context.CancelFunc) error {
				call.waiting()
				cancel()
				return call.result()
			},
			wantHolder: holderOther,
			wantCalls:  2, // create, watch (which sends the Lease first)
		},
		{
			// A server that queues requests (API Priority and Fairness) may
			// not answer a watch for long: the cancel must not wait for it.
			name: "cancelled while the watch is being opened",
			seed: []client.Object{heldLease(holderOther, epoch, 15)},
			inject: func(cancel context.CancelFunc) interceptor.Funcs {
				return interceptor.Funcs{Watch: func(ctx context.Context, _ client.WithWatch, _ client.ObjectList, _ ...client.ListOption) (watch.Interface, error) {
					cancel()
					<-ctx.Done() // no answer until the request is given up
					return nil, ctx.Err()
				}}
			},
			drive: func(call *pendingCall, cancel context.CancelFunc) error {
				return call.result()
			},
			wantHolder: holderOther,
			wantCalls:  -1,
		},
		{
			name:        "cancelled before the call",
			seed:        []client.Object{heldLease(holderOther, epoch, 15)},
			cancelFirst: true,
			drive: func(call *pendingCall, cancel context.CancelFunc) error {
				return call.noWait()
			},
			wantHolder: holderOther,
			wantCalls:  0,
		},
		{
			name:   "Create reached the server, then cancelled",
			inject: cancelDuring,
			drive: func(call *pendingCall, cancel context.CancelFunc) error {
				return call.noWait()
			},
			wantHolder: "<none>",
			wantCalls:  -1,
		},
		{
			name:   "takeover Update reached the server, then cancelled",
			seed:   []client.Object{heldLease(holderOther, epoch.Add(-time.Hour), 15)},
			inject: cancelDuring,
			drive: func(call *pendingCall, cancel context.CancelFunc) error {
				return call.noWait()
			},
			wantHolder: "<none>",
			wantCalls:  -1,
		},
		{
			name: "cancelled in the backoff after a lost Create response",
			inject: func(context.CancelFunc) interceptor.Funcs {
				return interceptor.Funcs{Create: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
					if err := c.Create(ctx, obj, opts...); err != nil {
						return err
					}
					return apierrors.NewTimeoutError("response lost", 0)
				}}
			},
			drive: func(call *pendingCall, cancel context.CancelFunc) error {
				call.waiting()
				cancel()
				return call.result()
			},
			wantHolder: "<none>",
			wantCalls:  -1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			base := newFake(tt.seed...)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var inject interceptor.Funcs
			if tt.inject != nil {
				inject = tt.inject(cancel)
			}
			var log callLog
			clk := testingclock.NewFakeClock(epoch)
			rl := resourcelock.NewResourceLocker(counted(base, &log, inject), unitNS,
				append(tt.opts, resourcelock.WithClock(clk), resourcelock.WithRetryTimeout(time.Minute))...)
			if tt.cancelFirst {
				cancel()
			}

			err := tt.drive(goAcquire(t, rl, clk, ctx, holderMe), cancel)
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("AcquireLock: got %v, want context.Canceled", err)
			}
			if got := holderOf(storedLease(t, base)); got != tt.wantHolder {
				t.Errorf("holderIdentity after a cancelled AcquireLock: got %q, want %q", got, tt.wantHolder)
			}
			if got := log.total(); tt.wantCalls >= 0 && got != tt.wantCalls {
				t.Errorf("requests: got %v, want %d", &log, tt.wantCalls)
			}
			if got := clk.Now(); !got.Equal(epoch) {
				t.Errorf("fake clock: got %v, want %v, never stepped", got, epoch)
			}
		})
	}
}

// TestAcquireCancelledWatchIsNoVerdict cancels a call while its
// watch-list is being opened. The cancel is neither counted as an API
// error nor taken for a server that refuses watch-lists: the locker's next
// call asks for a watch-list again.
func TestAcquireCancelledWatchIsNoVerdict(t *testing.T) {
	reg := prometheus.NewRegistry()
	first, cancelFirst := context.WithCancel(context.Background())
	defer cancelFirst()
	var mu sync.Mutex
	var lists []bool // whether each watch asked for the Lease first
	inject := interceptor.Funcs{Watch: func(ctx context.Context, _ client.WithWatch, _ client.ObjectList, opts ...client.ListOption) (watch.Interface, error) {
		o := (&client.ListOptions{}).ApplyOptions(opts)
		mu.Lock()
		lists = append(lists, o.Raw != nil && ptr.Deref(o.Raw.SendInitialEvents, false))
		n := len(lists)
		mu.Unlock()
		if n == 1 {
			cancelFirst()
			<-ctx.Done() // no answer until the request is given up
			return nil, ctx.Err()
		}
		return nil, apierrors.NewServiceUnavailable("busy")
	}}
	clk := testingclock.NewFakeClock(epoch)
	rl := resourcelock.NewResourceLocker(counted(newFake(heldLease(holderOther, epoch, 15)), new(callLog), inject), unitNS,
		resourcelock.WithClock(clk), resourcelock.WithRetryTimeout(time.Minute), resourcelock.WithMetrics(reg))

	if err := goAcquire(t, rl, clk, first, holderMe).result(); !errors.Is(err, context.Canceled) {
		t.Fatalf("first AcquireLock: got %v, want context.Canceled", err)
	}
	// The lost Create and the busy server count; the cancel would count
	// as an error of kind Unknown.
	if got := metric(t, reg, "leaselock_api_errors_total", map[string]string{"kind": "Unknown"}); got != 0 {
		t.Errorf("API errors of kind Unknown after the cancelled watch: got %v, want 0", got)
	}
	mu.Lock()
	before := len(lists)
	mu.Unlock()
	second, cancelSecond := context.WithCancel(context.Background())
	call := goAcquire(t, rl, clk, second, holderMe)
	call.waiting() // its watches failed: it polls
	cancelSecond()
	if err := call.result(); !errors.Is(err, context.Canceled) {
		t.Fatalf("second AcquireLock: got %v, want context.Canceled", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(lists) <= before || !lists[before] {
		t.Errorf("watches asking for the Lease first: got %v, want the second call's first one (at %d) to", lists, before)
	}
}

// TestAcquireCancelledWriteRunsToItsEnd: a client gives up on a request whose
// ctx is cancelled while the server may still apply it. Here the server
// applies every write, but the client reports the cancel whenever the ctx it
// was given is done by the time the response arrives, and the write lands
// only after AcquireLock returned. AcquireLock must not leave that lock held:
// it lets a write it sent run to its end, then releases what it won.
func TestAcquireCancelledWriteRunsToItsEnd(t *testing.T) {
	for _, tt := range []struct {
		name string
		seed []client.Object
		verb string // the write in flight when the caller cancels
	}{
		{"Create", nil, "create"},
		{"takeover Update", []client.Object{heldLease(holderOther, epoch.Add(-time.Hour), 15)}, "update"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			base := newFake(tt.seed...)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var late []func() // writes the server applies after the client gave up
			// respond models the request in flight when the caller cancels.
			respond := func(ctx context.Context, verb string, apply func() error) error {
				if verb != tt.verb {
					return apply()
				}
				cancel()
				if ctx.Err() != nil {
					late = append(late, func() { _ = apply() })
					return ctx.Err()
				}
				return apply()
			}
			inject := interceptor.Funcs{
				Create: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
					return respond(ctx, "create", func() error { return c.Create(context.Background(), obj, opts...) })
				},
				Update: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.UpdateOption) error {
					return respond(ctx, "update", func() error { return c.Update(context.Background(), obj, opts...) })
				},
			}
			var log callLog
			rl := resourcelock.NewResourceLocker(counted(base, &log, inject), unitNS,
				resourcelock.WithClock(testingclock.NewFakeClock(epoch)), resourcelock.WithoutWatch())

			err := rl.AcquireLock(ctx, "cm-lock", holderMe)
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("AcquireLock: got %v, want context.Canceled", err)
			}
			for _, apply := range late {
				apply()
			}
			if got := holderOf(storedLease(t, base)); got == holderMe {
				t.Errorf("holderIdentity after a cancelled AcquireLock: got %q, want the lock not held by it (requests %v)", got, &log)
			}
		})
	}
}

// TestAcquireRejectedErrorsReturnAtOnce: an error that says the request was
// refused for good ends AcquireLock after that one request.
func TestAcquireRejectedErrorsReturnAtOnce(t *testing.T) {
	tests := []struct {
		name string
		err  error
		is   func(error) bool
	}{
		{
			name: "Forbidden",
			err:  apierrors.NewForbidden(leasesResource, unitLock, errors.New("no RBAC rule")),
			is:   apierrors.IsForbidden,
		},
		{
			name: "Invalid",
			err: apierrors.NewInvalid(schema.GroupKind{Group: "coordination.k8s.io", Kind: "Lease"}, unitLock,
				field.ErrorList{field.Invalid(field.NewPath("spec", "leaseDurationSeconds"), 0, "must be positive")}),
			is: apierrors.IsInvalid,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			base := newFake()
			var log callLog
			c := counted(base, &log, interceptor.Funcs{
				Create: func(context.Context, client.WithWatch, client.Object, ...client.CreateOption) error { return tt.err },
			})
			clk := testingclock.NewFakeClock(epoch)
			rl := resourcelock.NewResourceLocker(c, unitNS, resourcelock.WithClock(clk))

			err := goAcquire(t, rl, clk, context.Background(), holderMe).noWait()
			if !tt.is(err) {
				t.Fatalf("AcquireLock: got %v, want an error for which apierrors.Is%s holds", err, tt.name)
			}
			if err == tt.err {
				t.Errorf("AcquireLock: got the client's error %q itself, want it wrapped", err)
			}
			if errors.Is(err, resourcelock.ErrLockHeld) {
				t.Errorf("AcquireLock: got %v, which reads as ErrLockHeld, want it not to", err)
			}
			if got := log.total(); got != 1 {
				t.Errorf("requests: got %v, want exactly 1", &log)
			}
		})
	}
}

// transientErrors are the errors that say the server may answer differently
// soon.
var transientErrors = []struct {
	name string
	err  error
}{
	{name: "InternalError", err: apierrors.NewInternalError(errors.New("etcdserver: request timed out"))},
	{name: "TooManyRequests", err: apierrors.NewTooManyRequests("slow down", 1)},
	{name: "ServiceUnavailable", err: apierrors.NewServiceUnavailable("apiserver is shutting down")},
	{name: "ServerTimeout", err: apierrors.NewServerTimeout(leasesResource, "create", 1)},
	{name: "client deadline", err: context.DeadlineExceeded},
}

func TestAcquireRetriesTransientErrors(t *testing.T) {
	for _, tt := range transientErrors {
		t.Run(tt.name, func(t *testing.T) {
			base := newFake()
			var log callLog
			failed := 0
			c := counted(base, &log, interceptor.Funcs{
				Create: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
					if failed < 2 {
						failed++
						return tt.err
					}
					return c.Create(ctx, obj, opts...)
				},
			})
			clk := testingclock.NewFakeClock(epoch)
			rl := resourcelock.NewResourceLocker(c, unitNS, resourcelock.WithClock(clk))

			call := goAcquire(t, rl, clk, context.Background(), holderMe)
			// The backoff waits on the clock between tries; a retry
			// interval (the backoff's cap, doubled by jitter) always ends it.
			if err := call.finish(2 * resourcelock.DefaultRetryInterval); err != nil {
				t.Fatalf("AcquireLock: got %v, want nil after two %s errors", err, tt.name)
			}
			if got, want := log.count("create"), 3; got != want {
				t.Errorf("creates: got %d, want %d", got, want)
			}
			if elapsed := clk.Now().Sub(epoch); elapsed == 0 || elapsed > resourcelock.DefaultRetryTimeout {
				t.Errorf("fake time spent: got %v, want backoff waits within the %v retry timeout", elapsed, resourcelock.DefaultRetryTimeout)
			}
			if got := holderOf(storedLease(t, base)); got != holderMe {
				t.Errorf("holderIdentity: got %q, want %q", got, holderMe)
			}
		})
	}
}

func TestAcquireTransientErrorPastRetryTimeout(t *testing.T) {
	for _, tt := range transientErrors {
		t.Run(tt.name, func(t *testing.T) {
			base := newFake()
			var log callLog
			c := counted(base, &log, interceptor.Funcs{
				Create: func(context.Context, client.WithWatch, client.Object, ...client.CreateOption) error { return tt.err },
			})
			clk := testingclock.NewFakeClock(epoch)
			rl := resourcelock.NewResourceLocker(c, unitNS, resourcelock.WithClock(clk), resourcelock.WithRetryTimeout(2*time.Second))

			err := goAcquire(t, rl, clk, context.Background(), holderMe).finish(100 * time.Millisecond)
			if !errors.Is(err, tt.err) {
				t.Fatalf("AcquireLock: got %v, want the %s error", err, tt.name)
			}
			if errors.Is(err, resourcelock.ErrLockHeld) {
				t.Errorf("AcquireLock: got %v, which reads as ErrLockHeld, want it not to", err)
			}
			if got := log.count("create"); got < 2 {
				t.Errorf("creates: got %d, want retries", got)
			}
			if got, want := clk.Now().Sub(epoch), 2*time.Second; got != want {
				t.Errorf("gave up after %v of fake time, want %v, the retry timeout", got, want)
			}
			if lease := storedLease(t, base); lease != nil {
				t.Errorf("got a Lease held by %q, want none", holderOf(lease))
			}
		})
	}
}

// TestAcquireConflictsEndAtRetryTimeout has another writer touch the Lease
// before every Update, each request taking 100ms of the locker's clock. The
// doc promises conflicts are retried "within the timeout window": AcquireLock
// must give up near the retry timeout, not retry for as long as the conflicts
// last.
func TestAcquireConflictsEndAtRetryTimeout(t *testing.T) {
	const (
		latency      = 100 * time.Millisecond
		retryTimeout = 2 * time.Second
		// A correct AcquireLock gives up after about retryTimeout/latency
		// updates; the test stops a runaway one at giveUpAt.
		wantAtMost = 2 * int(retryTimeout/latency)
		giveUpAt   = 3 * wantAtMost
	)
	base := newFake(heldLease(holderOther, epoch.Add(-time.Hour), 15))
	clk := testingclock.NewFakeClock(epoch)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	updates := 0
	c := counted(base, new(callLog), interceptor.Funcs{
		Update: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.UpdateOption) error {
			clk.Step(latency)
			updates++
			if updates >= giveUpAt {
				cancel()
				return ctx.Err()
			}
			lease := &coordinationv1.Lease{}
			if err := c.Get(ctx, client.ObjectKeyFromObject(obj), lease); err != nil {
				return err
			}
			lease.Annotations = map[string]string{"touched": fmt.Sprint(updates)}
			if err := c.Update(ctx, lease); err != nil {
				return err
			}
			return c.Update(ctx, obj, opts...)
		},
	})
	rl := resourcelock.NewResourceLocker(c, unitNS, resourcelock.WithClock(clk), resourcelock.WithRetryTimeout(retryTimeout))

	err := goAcquire(t, rl, clk, ctx, holderMe).finish(latency)
	if !errors.Is(err, resourcelock.ErrLockHeld) || !apierrors.IsConflict(err) {
		t.Fatalf("AcquireLock: got %v, want ErrLockHeld wrapping the last Conflict: every Update conflicted", err)
	}
	if updates > wantAtMost {
		t.Errorf("updates: got %d (%v of the locker's clock, ended by %v), want at most %d within the %v retry timeout",
			updates, clk.Now().Sub(epoch), err, wantAtMost, retryTimeout)
	}
	if got := holderOf(storedLease(t, base)); got != holderOther {
		t.Errorf("holderIdentity: got %q, want %q", got, holderOther)
	}
}

// TestHeldAfterUnsureWriteSendsNoRelease: a Create that failed without an
// answer (a 503) may have made the caller the holder, so a call that gives
// up after it releases. But a call that then reads the Lease held by
// another locker knows that no write of its own won: it returns ErrLockHeld
// after its one read, with no release (a Get) after it.
func TestHeldAfterUnsureWriteSendsNoRelease(t *testing.T) {
	base := newFake(heldLease(holderOther, epoch, 60))
	var log callLog
	clk := testingclock.NewFakeClock(epoch)
	c := counted(base, &log, interceptor.Funcs{
		Create: func(context.Context, client.WithWatch, client.Object, ...client.CreateOption) error {
			return apierrors.NewServiceUnavailable("etcd leader changed")
		},
	})
	rl := resourcelock.NewResourceLocker(c, unitNS, resourcelock.WithClock(clk), resourcelock.WithoutWatch(),
		resourcelock.WithRetryTimeout(time.Second))
	// The backoff after the 503 passes the deadline: the call reads once.
	err := goAcquire(t, rl, clk, context.Background(), holderMe).finish(time.Second)
	if !errors.Is(err, resourcelock.ErrLockHeld) {
		t.Fatalf("AcquireLock: got %v, want ErrLockHeld", err)
	}
	if got := log.count("get"); got != 1 {
		t.Errorf("gets: got %d, want 1, the read that found the holder, and no release", got)
	}
}
