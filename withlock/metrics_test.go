package withlock_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr/funcr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"k8s.io/client-go/kubernetes/scheme"
	testingclock "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/leaselock/leaselock/resourcelock"
	"github.com/leaselock/leaselock/withlock"
)

// TestLockLostIsCountedAndLogged runs fn past its lease on a fake clock: the
// locks-lost counter goes to 1 and an Info line names the lock and holder.
func TestLockLostIsCountedAndLogged(t *testing.T) {
	reg := prometheus.NewRegistry()
	var mu sync.Mutex
	var lines []string
	log := funcr.New(func(_, args string) {
		mu.Lock()
		defer mu.Unlock()
		lines = append(lines, args)
	}, funcr.Options{})
	ctx := logf.IntoContext(context.Background(), log)

	clk := testingclock.NewFakeClock(time.Now())
	c := fake.NewClientBuilder().WithScheme(scheme.Scheme).Build()
	rl := resourcelock.NewResourceLocker(c, "metrics", resourcelock.WithClock(clk),
		resourcelock.WithLeaseDuration(10*time.Second), resourcelock.WithMetrics(nil))
	l := withlock.New(rl, withlock.WithMetrics(reg), withlock.WithIdentity("pod-a"))

	outliveLease(t, ctx, l, clk, "slow")
	want := `
# HELP leaselock_locks_lost_total Functions run by withlock that outlived their lease.
# TYPE leaselock_locks_lost_total counter
leaselock_locks_lost_total 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "leaselock_locks_lost_total"); err != nil {
		t.Error(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(lines) != 1 {
		t.Fatalf("log lines: got %q, want one", lines)
	}
	for _, want := range []string{`"function outlived its lock"`, `"lock"="slow"`, `"namespace"="metrics"`, `"holder"="pod-a_`} {
		if !strings.Contains(lines[0], want) {
			t.Errorf("log line %s: want %s in it", lines[0], want)
		}
	}
}

// TestLockLostFollowsTheRegisterersLabel gives the lock name label to the
// ResourceLocker only: the locks-lost counter of a Locker on the same
// registerer takes the label too, and is exported.
func TestLockLostFollowsTheRegisterersLabel(t *testing.T) {
	reg := prometheus.NewRegistry()
	clk := testingclock.NewFakeClock(time.Now())
	c := fake.NewClientBuilder().WithScheme(scheme.Scheme).Build()
	rl := resourcelock.NewResourceLocker(c, "metrics", resourcelock.WithClock(clk),
		resourcelock.WithLeaseDuration(10*time.Second), resourcelock.WithMetrics(reg), resourcelock.WithLockNameLabel())
	l := withlock.New(rl, withlock.WithMetrics(reg))

	outliveLease(t, context.Background(), l, clk, "slow")
	want := `
# HELP leaselock_locks_lost_total Functions run by withlock that outlived their lease.
# TYPE leaselock_locks_lost_total counter
leaselock_locks_lost_total{lock="slow"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "leaselock_locks_lost_total"); err != nil {
		t.Error(err)
	}
}

// outliveLease runs a function under l's lock name until the fake clock
// has passed the lease less the margin (lease 10s, default margin 2s), and
// checks that the call reports the lock lost.
func outliveLease(t *testing.T, ctx context.Context, l *withlock.Locker, clk *testingclock.FakeClock, name string) {
	t.Helper()
	err := l.WithLock(ctx, name, func(ctx context.Context) error {
		for !clk.HasWaiters() {
			time.Sleep(time.Millisecond) // until the lock-lost timer waits on the clock
		}
		clk.Step(9 * time.Second)
		select {
		case <-ctx.Done():
		case <-time.After(10 * time.Second):
			t.Error("fn's ctx not cancelled after the clock passed the lease less the margin")
		}
		return nil
	})
	if !errors.Is(err, withlock.ErrLockLost) {
		t.Fatalf("got %v, want ErrLockLost", err)
	}
}

// TestLockLostWhenFnReturnsPastExpiry steps the clock past the lease less
// the margin and returns at once, without waiting for its ctx: the call
// still reports the lock lost, whether or not the timer got to cancel fn's
// ctx first.
func TestLockLostWhenFnReturnsPastExpiry(t *testing.T) {
	for range 20 {
		clk := testingclock.NewFakeClock(time.Now())
		c := fake.NewClientBuilder().WithScheme(scheme.Scheme).Build()
		rl := resourcelock.NewResourceLocker(c, "metrics", resourcelock.WithClock(clk),
			resourcelock.WithLeaseDuration(10*time.Second), resourcelock.WithMetrics(nil))
		l := withlock.New(rl, withlock.WithMetrics(nil))
		err := l.WithLock(context.Background(), "quick", func(ctx context.Context) error {
			clk.Step(9 * time.Second) // past 10s less the 2s default margin
			return nil
		})
		if !errors.Is(err, withlock.ErrLockLost) {
			t.Fatalf("got %v, want ErrLockLost", err)
		}
	}
}

// TestTypedNilRegistererRecordsNothing passes a nil *prometheus.Registry to
// both packages' WithMetrics: it records nothing, as nil does, and panics
// nowhere.
func TestTypedNilRegistererRecordsNothing(t *testing.T) {
	var reg *prometheus.Registry
	c := fake.NewClientBuilder().WithScheme(scheme.Scheme).Build()
	rl := resourcelock.NewResourceLocker(c, "metrics", resourcelock.WithMetrics(reg))
	l := withlock.New(rl, withlock.WithMetrics(reg))
	if err := l.WithLock(t.Context(), "quiet", func(context.Context) error { return nil }); err != nil {
		t.Fatalf("WithLock: %v", err)
	}
}
