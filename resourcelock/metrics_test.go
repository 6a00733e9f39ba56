package resourcelock_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr/funcr"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/scheme"
	testingclock "k8s.io/utils/clock/testing"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/leaselock/leaselock/resourcelock"
)

// metric returns the value of the counter, or the sample count of the
// histogram, named name whose labels include want; 0 when there is none.
func metric(t *testing.T, reg prometheus.Gatherer, name string, want map[string]string) float64 {
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
			if !hasLabels(m, want) {
				continue
			}
			switch {
			case m.Counter != nil:
				total += m.Counter.GetValue()
			case m.Histogram != nil:
				total += float64(m.Histogram.GetSampleCount())
			}
		}
	}
	return total
}

func hasLabels(m *dto.Metric, want map[string]string) bool {
	got := map[string]string{}
	for _, l := range m.GetLabel() {
		got[l.GetName()] = l.GetValue()
	}
	for k, v := range want {
		if got[k] != v {
			return false
		}
	}
	return true
}

const metricsNS = "metrics"

// leaseHeldBy is a Lease held by holder, renewed at renew, for 15s.
func leaseHeldBy(name, holder string, renew time.Time) *coordinationv1.Lease {
	return &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: metricsNS},
		Spec: coordinationv1.LeaseSpec{
			HolderIdentity:       ptr.To(holder),
			LeaseDurationSeconds: ptr.To(int32(15)),
			RenewTime:            &metav1.MicroTime{Time: renew},
		},
	}
}

// enforcePreconditions makes the fake client's Delete honour UID and
// resourceVersion preconditions, as the API server does.
var enforcePreconditions = interceptor.Funcs{
	Delete: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.DeleteOption) error {
		var do client.DeleteOptions
		do.ApplyOptions(opts)
		current := &coordinationv1.Lease{}
		if err := c.Get(ctx, client.ObjectKeyFromObject(obj), current); err != nil {
			return err
		}
		if p := do.Preconditions; p != nil &&
			(p.UID != nil && *p.UID != current.UID || p.ResourceVersion != nil && *p.ResourceVersion != current.ResourceVersion) {
			return apierrors.NewConflict(schema.GroupResource{Group: "coordination.k8s.io", Resource: "leases"}, obj.GetName(), errors.New("precondition failed"))
		}
		return c.Delete(ctx, obj, opts...)
	},
}

func TestMetrics(t *testing.T) {
	now := time.Now()
	tests := []struct {
		name    string
		objects []client.Object
		funcs   interceptor.Funcs
		// run drives the locker; the clock starts at now.
		run  func(t *testing.T, rl *resourcelock.ResourceLocker, clk *testingclock.FakeClock)
		want map[string]map[string]string // metric name -> labels, each must count exactly 1
	}{
		{
			name: "acquired and held for a while",
			run: func(t *testing.T, rl *resourcelock.ResourceLocker, clk *testingclock.FakeClock) {
				mustAcquire(t, rl, "free", "me")
				clk.Step(time.Second)
				if err := rl.ReleaseLock(context.Background(), "free", "me"); err != nil {
					t.Fatal(err)
				}
			},
			want: map[string]map[string]string{
				"leaselock_acquire_duration_seconds": {"result": "acquired"},
				"leaselock_hold_duration_seconds":    {},
			},
		},
		{
			name:    "held: gave up",
			objects: []client.Object{leaseHeldBy("busy", "other", now)},
			run: func(t *testing.T, rl *resourcelock.ResourceLocker, _ *testingclock.FakeClock) {
				if err := rl.AcquireLock(context.Background(), "busy", "me"); !errors.Is(err, resourcelock.ErrLockHeld) {
					t.Fatalf("got %v, want ErrLockHeld", err)
				}
			},
			want: map[string]map[string]string{
				"leaselock_acquire_duration_seconds":     {"result": "held"},
				"leaselock_contended_acquisitions_total": {},
				"leaselock_api_errors_total":             {"kind": "AlreadyExists"},
			},
		},
		{
			name: "error: forbidden",
			funcs: interceptor.Funcs{Create: func(context.Context, client.WithWatch, client.Object, ...client.CreateOption) error {
				return apierrors.NewForbidden(schema.GroupResource{Resource: "leases"}, "x", errors.New("no"))
			}},
			run: func(t *testing.T, rl *resourcelock.ResourceLocker, _ *testingclock.FakeClock) {
				if err := rl.AcquireLock(context.Background(), "forbidden", "me"); !apierrors.IsForbidden(err) {
					t.Fatalf("got %v, want Forbidden", err)
				}
			},
			want: map[string]map[string]string{
				"leaselock_acquire_duration_seconds": {"result": "error"},
				"leaselock_api_errors_total":         {"kind": "Forbidden"},
			},
		},
		{
			name:    "expired takeover",
			objects: []client.Object{leaseHeldBy("stale", "crashed", now.Add(-time.Minute))},
			run: func(t *testing.T, rl *resourcelock.ResourceLocker, _ *testingclock.FakeClock) {
				mustAcquire(t, rl, "stale", "me")
			},
			want: map[string]map[string]string{
				"leaselock_acquire_duration_seconds": {"result": "acquired"},
				"leaselock_expired_takeovers_total":  {},
			},
		},
		{
			name:  "release found the lock taken over",
			funcs: enforcePreconditions,
			run: func(t *testing.T, rl *resourcelock.ResourceLocker, clk *testingclock.FakeClock) {
				mustAcquire(t, rl, "slow", "me")
				clk.Step(20 * time.Second) // past the 15s lease
				mustAcquire(t, rl, "slow", "next")
				if err := rl.ReleaseLock(context.Background(), "slow", "me"); err != nil {
					t.Fatal(err)
				}
			},
			want: map[string]map[string]string{
				"leaselock_release_taken_over_total": {},
				"leaselock_expired_takeovers_total":  {},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			clk := testingclock.NewFakeClock(now)
			c := interceptor.NewClient(fake.NewClientBuilder().WithScheme(scheme.Scheme).WithObjects(tt.objects...).Build(), tt.funcs)
			rl := resourcelock.NewResourceLocker(c, metricsNS, resourcelock.WithMetrics(reg), resourcelock.WithClock(clk), resourcelock.WithRetryTimeout(0))
			tt.run(t, rl, clk)
			for name, labels := range tt.want {
				if got := metric(t, reg, name, labels); got != 1 {
					t.Errorf("%s%v: got %v, want 1", name, labels, got)
				}
			}
		})
	}
}

func mustAcquire(t *testing.T, rl *resourcelock.ResourceLocker, name, holder string) {
	t.Helper()
	if err := rl.AcquireLock(context.Background(), name, holder); err != nil {
		t.Fatalf("AcquireLock %s by %s: %v", name, holder, err)
	}
}

func TestMetricsCancelled(t *testing.T) {
	reg := prometheus.NewRegistry()
	clk := testingclock.NewFakeClock(time.Now())
	c := fake.NewClientBuilder().WithScheme(scheme.Scheme).WithObjects(leaseHeldBy("busy", "other", clk.Now())).Build()
	rl := resourcelock.NewResourceLocker(c, metricsNS, resourcelock.WithMetrics(reg), resourcelock.WithClock(clk))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- rl.AcquireLock(ctx, "busy", "me") }()
	for !clk.HasWaiters() {
		time.Sleep(time.Millisecond) // until AcquireLock waits on the fake clock
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want context.Canceled", err)
	}
	if got := metric(t, reg, "leaselock_acquire_duration_seconds", map[string]string{"result": "cancelled"}); got != 1 {
		t.Errorf("cancelled acquisitions: got %v, want 1", got)
	}
}

func TestMetricsLockNameLabel(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := fake.NewClientBuilder().WithScheme(scheme.Scheme).Build()
	rl := resourcelock.NewResourceLocker(c, metricsNS, resourcelock.WithMetrics(reg), resourcelock.WithLockNameLabel())
	mustAcquire(t, rl, "named", "me")
	if got := metric(t, reg, "leaselock_acquire_duration_seconds", map[string]string{"lock": "named"}); got != 1 {
		t.Errorf("acquisitions labelled lock=named: got %v, want 1", got)
	}
}

// TestMetricsNone shows that a locker without a registerer (nil, or a nil
// *prometheus.Registry) records nothing, not even with controller-runtime's
// registry, the default; a locker with the default records there, which
// shows that the count would see it.
func TestMetricsNone(t *testing.T) {
	tests := []struct {
		name string
		opts []resourcelock.Option
		want float64
	}{
		{"default", nil, 1},
		{"nil", []resourcelock.Option{resourcelock.WithMetrics(nil)}, 0},
		{"nil registry", []resourcelock.Option{resourcelock.WithMetrics((*prometheus.Registry)(nil))}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := fake.NewClientBuilder().WithScheme(scheme.Scheme).Build()
			rl := resourcelock.NewResourceLocker(c, metricsNS, tt.opts...)
			before := metric(t, ctrlmetrics.Registry, "leaselock_acquire_duration_seconds", nil)
			mustAcquire(t, rl, "unmetered", "me")
			got := metric(t, ctrlmetrics.Registry, "leaselock_acquire_duration_seconds", nil) - before
			if got != tt.want {
				t.Errorf("acquisitions recorded with controller-runtime's registry: got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestTakeoverIsLoggedAtInfo(t *testing.T) {
	var lines []string
	log := funcr.New(func(prefix, args string) { lines = append(lines, args) }, funcr.Options{Verbosity: 0})
	ctx := logf.IntoContext(context.Background(), log)
	c := fake.NewClientBuilder().WithScheme(scheme.Scheme).WithObjects(leaseHeldBy("stale", "crashed", time.Now().Add(-time.Minute))).Build()
	rl := resourcelock.NewResourceLocker(c, metricsNS, resourcelock.WithMetrics(nil))
	if err := rl.AcquireLock(ctx, "stale", "me"); err != nil {
		t.Fatal(err)
	}
	if err := rl.ReleaseLock(ctx, "stale", "me"); err != nil {
		t.Fatal(err)
	}
	// V(1) lines (acquired, released) stay quiet at the default verbosity.
	if len(lines) != 1 {
		t.Fatalf("log lines: got %q, want exactly the takeover", lines)
	}
	for _, want := range []string{`"took over an expired lock"`, `"lock"="stale"`, `"namespace"="metrics"`, `"holder"="me"`, `"previousHolder"="crashed"`} {
		if !strings.Contains(lines[0], want) {
			t.Errorf("log line %s: want %s in it", lines[0], want)
		}
	}
}

// TestMetricsWaitTime waits on a fake clock for a Lease to expire: the wait
// is recorded for the acquisition that found the lock held and then got it.
func TestMetricsWaitTime(t *testing.T) {
	reg := prometheus.NewRegistry()
	now := time.Now()
	clk := testingclock.NewFakeClock(now)
	// Renewed 14s ago with a 15s lease: it expires a second from now.
	c := fake.NewClientBuilder().WithScheme(scheme.Scheme).WithObjects(leaseHeldBy("expiring", "other", now.Add(-14*time.Second))).Build()
	rl := resourcelock.NewResourceLocker(c, metricsNS, resourcelock.WithMetrics(reg), resourcelock.WithClock(clk), resourcelock.WithoutWatch())
	done := make(chan error)
	go func() { done <- rl.AcquireLock(context.Background(), "expiring", "me") }()
	for !clk.HasWaiters() {
		time.Sleep(time.Millisecond) // until AcquireLock waits on the fake clock
	}
	clk.Step(2 * time.Second)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	for name, labels := range map[string]map[string]string{
		"leaselock_wait_duration_seconds":        {},
		"leaselock_contended_acquisitions_total": {},
		"leaselock_expired_takeovers_total":      {},
		"leaselock_acquire_duration_seconds":     {"result": "acquired"},
	} {
		if got := metric(t, reg, name, labels); got != 1 {
			t.Errorf("%s%v: got %v, want 1", name, labels, got)
		}
	}
}
