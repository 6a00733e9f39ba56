package withlock_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	"github.com/leaselock/leaselock/internal/testenv"
	"github.com/leaselock/leaselock/resourcelock"
	"github.com/leaselock/leaselock/withlock"
)

// leftoverAge is the age of the removals in these tests: its period is
// 30s.
const leftoverAge = time.Minute

// sweep steps clk past the removal's period, jitter and all, and waits
// until the removal has run and waits again.
func sweep(t *testing.T, clk *clocktesting.FakeClock) {
	t.Helper()
	waitForWaiters(t, clk, 1, nil)
	clk.Step(withlock.LeftoverPeriod(leftoverAge) * 11 / 10)
	waitForWaiters(t, clk, 1, nil)
}

// leaseNames returns the names of the Leases in f's store.
func leaseNames(t *testing.T, f *fixture) []string {
	t.Helper()
	var names []string
	for _, l := range f.leases(t) {
		names = append(names, l.Name)
	}
	slices.Sort(names)
	return names
}

// TestLeftoverRemoval leaves Leases in the store: of the Leases of the
// library's label, the removal deletes the one expired for more than the
// age, and leaves the one held and the one expired for less; it leaves a
// Lease without the label whatever its age. Close stops it.
func TestLeftoverRemoval(t *testing.T) {
	f := newFixture(t, interceptor.Funcs{},
		newLease("crashed", "pod-a_1", epoch.Add(-time.Hour), 15, true),
		newLease("held", "pod-b_1", epoch, 3600, true),
		// Expired 5s before the removal starts: less than a minute when it runs.
		newLease("recent", "pod-c_1", epoch.Add(-20*time.Second), 15, true),
		newLease("foreign", "other", epoch.Add(-time.Hour), 15, false),
	)
	l := withlock.New(f.locker())
	withlock.StartRemoval(l, leftoverAge)
	sweep(t, f.clock)
	if got, want := leaseNames(t, f), []string{"foreign", "held", "recent"}; !slices.Equal(got, want) {
		t.Errorf("got Leases %q after the removal, want %q", got, want)
	}
	if err := l.Close(); err != nil {
		t.Errorf("Close: got %v, want nil", err)
	}
	if got := f.clock.Waiters(); got != 0 {
		t.Errorf("got %d timers after Close, want 0: the removal goes on", got)
	}
}

// TestLeftoverRemovalLeavesChangedLeases changes two expired Leases between
// the removal's List and its Deletes: one renewed, one deleted and created
// again. The Deletes carry what was listed, so both stay.
func TestLeftoverRemovalLeavesChangedLeases(t *testing.T) {
	var f *fixture
	f = newFixture(t, interceptor.Funcs{
		List: func(ctx context.Context, c client.WithWatch, list client.ObjectList, opts ...client.ListOption) error {
			if err := c.List(ctx, list, opts...); err != nil {
				return err
			}
			renewed := newLease("renewed", "pod-a_2", f.clock.Now(), 15, true)
			var current coordinationv1.Lease
			if err := c.Get(ctx, client.ObjectKeyFromObject(renewed), &current); err != nil {
				return err
			}
			current.Spec = renewed.Spec
			if err := c.Update(ctx, &current); err != nil {
				return err
			}
			recreated := newLease("recreated", "pod-b_2", f.clock.Now(), 15, true)
			if err := c.Delete(ctx, recreated); err != nil {
				return err
			}
			return c.Create(ctx, recreated)
		},
	},
		newLease("renewed", "pod-a_1", epoch.Add(-time.Hour), 15, true),
		newLease("recreated", "pod-b_1", epoch.Add(-time.Hour), 15, true),
	)
	l := withlock.New(f.locker())
	withlock.StartRemoval(l, leftoverAge)
	sweep(t, f.clock)
	_ = l.Close()
	for _, lease := range f.leases(t) {
		if lease.Spec.RenewTime.Time.Before(epoch) {
			t.Errorf("got Lease %s as listed, want it changed", lease.Name)
		}
	}
	if got, want := leaseNames(t, f), []string{"recreated", "renewed"}; !slices.Equal(got, want) {
		t.Errorf("got Leases %q, want %q: a Lease changed since the List was deleted", got, want)
	}
	if got := f.calls.count("delete", &coordinationv1.Lease{}); got != 2 {
		t.Errorf("got %d Deletes, want 2: the removal did not try", got)
	}
}

// TestLeftoverRemovalForbiddenLogsOnce forbids the List: the removal logs
// it once, through the Locker's logger, and stops, however long the
// Locker lives.
func TestLeftoverRemovalForbiddenLogsOnce(t *testing.T) {
	forbidden := apierrors.NewForbidden(leasesResource, "", errors.New("no list for you"))
	f := newFixture(t, interceptor.Funcs{
		List: func(context.Context, client.WithWatch, client.ObjectList, ...client.ListOption) error {
			return forbidden
		},
	})
	log, logged := captureLogger()
	l := withlock.New(f.locker(), withlock.WithLogger(log))
	defer l.Close()
	withlock.StartRemoval(l, leftoverAge)
	waitForWaiters(t, f.clock, 1, nil)
	f.clock.Step(withlock.LeftoverPeriod(leftoverAge) * 11 / 10)
	for deadline := time.Now().Add(10 * time.Second); len(logged()) == 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("got no log line of the Forbidden")
		}
	}
	// A removal that went on would wait for its next turn.
	for deadline := time.Now().Add(100 * time.Millisecond); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if f.clock.Waiters() != 0 {
			f.clock.Step(withlock.LeftoverPeriod(leftoverAge) * 11 / 10)
		}
	}
	lines := logged()
	if len(lines) != 1 {
		t.Fatalf("got log lines %q, want one", lines)
	}
	for _, want := range []string{"will not be removed", "no list for you", `"namespace"="locks"`} {
		if !strings.Contains(lines[0], want) {
			t.Errorf("got log line %s, want %q in it", lines[0], want)
		}
	}
	if got := f.calls.count("list", &coordinationv1.LeaseList{}); got != 1 {
		t.Errorf("got %d Lists, want 1", got)
	}
}

// TestServerLeftoverRemoval shows the removal on the real server. A Locker
// from NewForConfig, on a fake clock that paces it, deletes the Lease of
// the library's label that a crashed holder left, and leaves the one held,
// the one expired for less than the age, and one without the label. Then
// two expired Leases change between a removal's List and its Deletes, one
// renewed and one deleted and created again: the server refuses both
// Deletes, whose preconditions carry the UID and resourceVersion listed,
// and both stay.
func TestServerLeftoverRemoval(t *testing.T) {
	admin := testenv.Client(t)
	ns := testenv.Namespace(t, admin)
	t.Cleanup(func() {
		_ = admin.DeleteAllOf(context.Background(), &coordinationv1.Lease{}, client.InNamespace(ns))
	})
	now := time.Now()
	create := func(lease *coordinationv1.Lease) {
		t.Helper()
		lease.Namespace = ns
		if err := admin.Create(t.Context(), lease); err != nil {
			t.Fatalf("create Lease %s: %v", lease.Name, err)
		}
	}
	names := func() []string {
		t.Helper()
		var list coordinationv1.LeaseList
		if err := admin.List(t.Context(), &list, client.InNamespace(ns)); err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, l := range list.Items {
			names = append(names, l.Name)
		}
		slices.Sort(names)
		return names
	}

	t.Run("expired for long", func(t *testing.T) {
		create(newLease("crashed", "pod-a_1", now.Add(-time.Hour), 15, true))
		create(newLease("held", "pod-b_1", now, 3600, true))
		create(newLease("recent", "pod-c_1", now.Add(-20*time.Second), 15, true))
		create(newLease("foreign", "other", now.Add(-time.Hour), 15, false))
		clk := clocktesting.NewFakeClock(now)
		l, err := withlock.NewForConfig(testenv.Config(t), ns, withlock.WithLeftoverRemoval(leftoverAge),
			withlock.WithResourceLockerOptions(resourcelock.WithClock(clk)))
		if err != nil {
			t.Fatalf("NewForConfig: %v", err)
		}
		defer l.Close()
		sweep(t, clk)
		if got, want := names(), []string{"foreign", "held", "recent"}; !slices.Equal(got, want) {
			t.Errorf("got Leases %q after the removal, want %q", got, want)
		}
	})

	t.Run("changed between List and Delete", func(t *testing.T) {
		_ = admin.DeleteAllOf(t.Context(), &coordinationv1.Lease{}, client.InNamespace(ns))
		create(newLease("renewed", "pod-a_1", now.Add(-time.Hour), 15, true))
		create(newLease("recreated", "pod-b_1", now.Add(-time.Hour), 15, true))
		var deletes, refused int
		c := interceptor.NewClient(testenv.Client(t), interceptor.Funcs{
			List: func(ctx context.Context, c client.WithWatch, list client.ObjectList, opts ...client.ListOption) error {
				if err := c.List(ctx, list, opts...); err != nil {
					return err
				}
				var renewed coordinationv1.Lease
				if err := admin.Get(ctx, client.ObjectKey{Namespace: ns, Name: "renewed"}, &renewed); err != nil {
					return err
				}
				renewed.Spec = newLease("renewed", "pod-a_2", now, 15, true).Spec
				if err := admin.Update(ctx, &renewed); err != nil {
					return err
				}
				recreated := newLease("recreated", "pod-b_2", now, 15, true)
				recreated.Namespace = ns
				if err := admin.Delete(ctx, recreated); err != nil {
					return err
				}
				return admin.Create(ctx, recreated)
			},
			Delete: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.DeleteOption) error {
				deletes++
				err := c.Delete(ctx, obj, opts...)
				if apierrors.IsConflict(err) {
					refused++
				}
				return err
			},
		})
		clk := clocktesting.NewFakeClock(now)
		l := withlock.New(resourcelock.NewResourceLocker(c, ns, resourcelock.WithClock(clk)))
		withlock.StartRemoval(l, leftoverAge)
		sweep(t, clk)
		_ = l.Close()
		if deletes != 2 || refused != 2 {
			t.Errorf("got %d Deletes, %d refused with Conflict, want 2 and 2", deletes, refused)
		}
		if got, want := names(), []string{"recreated", "renewed"}; !slices.Equal(got, want) {
			t.Errorf("got Leases %q, want %q", got, want)
		}
	})
}
