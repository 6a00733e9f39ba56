package withlock_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"k8s.io/client-go/kubernetes/scheme"
	testingclock "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/leaselock/leaselock/resourcelock"
	"github.com/leaselock/leaselock/withlock"
)

// TestLockLostIsCountedAndLogged runs fn past its lease on a fake clock: the
// locks-lost counter of the ResourceLocker's registerer goes to 1 and an
// Info line names the lock and holder.
func TestLockLostIsCountedAndLogged(t *testing.T) {
	reg := prometheus.NewRegistry()
	ctx, logged := captureLog(context.Background())

	clk := testingclock.NewFakeClock(time.Now())
	c := fake.NewClientBuilder().WithScheme(scheme.Scheme).Build()
	rl := resourcelock.NewResourceLocker(c, "metrics", resourcelock.WithClock(clk),
		resourcelock.WithLeaseDuration(10*time.Second), resourcelock.WithMetrics(reg))
	l := withlock.New(rl, withlock.WithIdentity("pod-a"))

	outliveLease(t, ctx, l, clk, "slow")
	want := `
# HELP leaselock_locks_lost_total Functions run by withlock that outlived their lock: its lease could have expired, or a renewal found it taken.
# TYPE leaselock_locks_lost_total counter
leaselock_locks_lost_total 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "leaselock_locks_lost_total"); err != nil {
		t.Error(err)
	}
	lines := logged()
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
// ResourceLocker: the locks-lost counter of a Locker built on it takes the
// label too, and is exported.
func TestLockLostFollowsTheRegisterersLabel(t *testing.T) {
	reg := prometheus.NewRegistry()
	clk := testingclock.NewFakeClock(time.Now())
	c := fake.NewClientBuilder().WithScheme(scheme.Scheme).Build()
	rl := resourcelock.NewResourceLocker(c, "metrics", resourcelock.WithClock(clk),
		resourcelock.WithLeaseDuration(10*time.Second), resourcelock.WithMetrics(reg), resourcelock.WithLockNameLabel())
	l := withlock.New(rl)

	outliveLease(t, context.Background(), l, clk, "slow")
	want := `
# HELP leaselock_locks_lost_total Functions run by withlock that outlived their lock: its lease could have expired, or a renewal found it taken.
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
		l := withlock.New(rl)
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
// resourcelock's WithMetrics, and loses a lock through withlock: nothing is recorded, not
// even with controller-runtime's registry (the default), as for nil, and
// nothing panics. The same with the defaults records there, which shows
// that the count would see it.
func TestTypedNilRegistererRecordsNothing(t *testing.T) {
	tests := []struct {
		name   string
		rlOpts []resourcelock.Option
		want   float64
	}{
		{"default", nil, 1},
		{"nil registry", []resourcelock.Option{resourcelock.WithMetrics((*prometheus.Registry)(nil))}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lost := func() float64 { return counterSum(t, ctrlmetrics.Registry, "leaselock_locks_lost_total") }
			acquired := func() float64 {
				return counterSum(t, ctrlmetrics.Registry, "leaselock_acquire_duration_seconds")
			}
			lost0, acquired0 := lost(), acquired()
			clk := testingclock.NewFakeClock(time.Now())
			c := fake.NewClientBuilder().WithScheme(scheme.Scheme).Build()
			rl := resourcelock.NewResourceLocker(c, "metrics", append(tt.rlOpts, resourcelock.WithClock(clk),
				resourcelock.WithLeaseDuration(10*time.Second))...)
			l := withlock.New(rl)
			err := l.WithLock(t.Context(), "quiet", func(context.Context) error {
				clk.Step(9 * time.Second) // past 10s less the 2s default margin
				return nil
			})
			if !errors.Is(err, withlock.ErrLockLost) {
				t.Fatalf("WithLock: got %v, want ErrLockLost", err)
			}
			if got := lost() - lost0; got != tt.want {
				t.Errorf("locks lost recorded with controller-runtime's registry: got %v, want %v", got, tt.want)
			}
			if got := acquired() - acquired0; got != tt.want {
				t.Errorf("acquisitions recorded with controller-runtime's registry: got %v, want %v", got, tt.want)
			}
		})
	}
}

// counterSum is the sum over every series of the counter, or of the sample
// counts of the histogram, name in reg.
func counterSum(t *testing.T, reg prometheus.Gatherer, name string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var total float64
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			total += m.GetCounter().GetValue() + float64(m.GetHistogram().GetSampleCount())
		}
	}
	return total
}

// TestNestedLockLostIsTheOuters runs a WithLock inside another, without
// renewal, and lets the outer lock's lease pass while the inner one's has seconds to go. The
// inner fn's ctx ends, since the outer's does, but the inner lock was not
// lost: only the outer call reports ErrLockLost, and the metric counts the
// outer lock alone.
func TestNestedLockLostIsTheOuters(t *testing.T) {
	reg := prometheus.NewRegistry()
	clk := testingclock.NewFakeClock(time.Now())
	c := fake.NewClientBuilder().WithScheme(scheme.Scheme).Build()
	rl := resourcelock.NewResourceLocker(c, "metrics", resourcelock.WithClock(clk),
		resourcelock.WithLeaseDuration(10*time.Second), resourcelock.WithMetrics(reg), resourcelock.WithLockNameLabel())
	l := withlock.New(rl, withlock.WithoutRenewal())

	var innerErr error
	outerErr := l.WithLock(t.Context(), "outer", func(ctx context.Context) error {
		clk.Step(5 * time.Second) // the outer lock ends at +8s (10s less the 2s margin)
		innerErr = l.WithLock(ctx, "inner", func(ctx context.Context) error {
			for clk.Waiters() < 2 { // both locks' timers
				time.Sleep(time.Millisecond)
			}
			clk.Step(4 * time.Second) // +9s: past the outer's end, 4s before the inner's
			<-ctx.Done()
			return nil
		})
		return nil
	})
	if errors.Is(innerErr, withlock.ErrLockLost) {
		t.Errorf("inner WithLock: got %v, want no ErrLockLost: its lock ends at +13s", innerErr)
	}
	if !errors.Is(outerErr, withlock.ErrLockLost) {
		t.Errorf("outer WithLock: got %v, want ErrLockLost", outerErr)
	}
	want := `
# HELP leaselock_locks_lost_total Functions run by withlock that outlived their lock: its lease could have expired, or a renewal found it taken.
# TYPE leaselock_locks_lost_total counter
leaselock_locks_lost_total{lock="outer"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "leaselock_locks_lost_total"); err != nil {
		t.Error(err)
	}
}

// captureLog returns ctx with a logger that keeps every line, and a
// function that returns the lines so far.
func captureLog(ctx context.Context) (context.Context, func() []string) {
	log, logged := captureLogger()
	return logf.IntoContext(ctx, log), logged
}

// captureLogger returns a logger that keeps every line, and a function
// that returns the lines so far.
func captureLogger() (logr.Logger, func() []string) {
	var mu sync.Mutex
	var lines []string
	log := funcr.New(func(_, args string) {
		mu.Lock()
		defer mu.Unlock()
		lines = append(lines, args)
	}, funcr.Options{})
	return log, func() []string {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(lines)
	}
}

// TestLockLostLogsThroughTheLockersLogger loses a lock with and without a
// logger in the ctx: the line goes to the ctx's logger when it has one,
// else to the Locker's (WithLogger).
func TestLockLostLogsThroughTheLockersLogger(t *testing.T) {
	for _, inCtx := range []bool{true, false} {
		t.Run(fmt.Sprintf("logger in ctx: %t", inCtx), func(t *testing.T) {
			lockers, lockersLines := captureLogger()
			ctx, ctxLines := captureLog(t.Context())
			if !inCtx {
				ctx = t.Context()
			}
			clk := testingclock.NewFakeClock(time.Now())
			c := fake.NewClientBuilder().WithScheme(scheme.Scheme).Build()
			rl := resourcelock.NewResourceLocker(c, "metrics", resourcelock.WithClock(clk),
				resourcelock.WithLeaseDuration(10*time.Second), resourcelock.WithMetrics(nil))
			outliveLease(t, ctx, withlock.New(rl, withlock.WithLogger(lockers)), clk, "slow")
			want, other := lockersLines(), ctxLines()
			if inCtx {
				want, other = other, want
			}
			if len(want) != 1 || !strings.Contains(want[0], `"function outlived its lock"`) {
				t.Errorf("got lines %q, want the line that the function outlived its lock", want)
			}
			if len(other) != 0 {
				t.Errorf("got lines %q in the other logger, want none", other)
			}
		})
	}
}
