package bench_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"golang.org/x/sync/errgroup"
	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/transport"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/leaselock/leaselock/internal/testenv"
	"github.com/leaselock/leaselock/resourcelock"
)

// watchesScenario is the table of BenchmarkWatchesPerLockName.
const watchesScenario = "watches per lock name"

// lockNames is how many lock names BenchmarkWatchesPerLockName waits on at
// once.
const lockNames = 1000

// BenchmarkWatchesPerLockName is what a locker's watches cost per lock
// name, which issue 19 asks of the map of them, which has no bound: one
// ResourceLocker, watching as shipped, whose callers wait at once on
// lockNames lock names, each Lease held by another holder for an hour.
// With every waiter watching, it takes what the process and the API server
// gained per name: heap (live, after a GC), goroutine stacks, goroutines
// (the caller's own among them), the watches the locker and the server
// count open, the server's goroutines; and the connections the locker
// dialed for them and kept.
// Then the callers leave (their ctx is cancelled), and it times how long
// the locker's watches take to close and to leave the server, which
// resourcelock.WatchLinger delays.
func BenchmarkWatchesPerLockName(b *testing.B) {
	for currentRun = range runs() {
		withTwin(b, fmt.Sprintf("names-%d", lockNames), "leaselock", fmt.Sprintf("%d lock names, one locker", lockNames), func(b *testing.B, kind, row string) {
			for b.Loop() {
				watchesPerName(b, kind, row)
			}
		})
	}
}

// watchLockers build, by lock kind, the locker of
// BenchmarkWatchesPerLockName, from its public API only, so that a rebuilt
// package runs it too; before_test.go adds the library as of an earlier
// commit.
var watchLockers = map[string]func(c client.Client, ns string) locker{
	"leaselock": func(c client.Client, ns string) locker {
		// A retry timeout longer than the run: the callers leave when
		// their ctx is cancelled, all at once.
		return resourcelock.NewResourceLocker(c, ns, resourcelock.WithRetryTimeout(10*time.Minute), resourcelock.WithMetrics(nil))
	},
}

func watchesPerName(b *testing.B, kind, row string) {
	ctx := context.Background()
	admin := testenv.Client(b)
	ns := testenv.Namespace(b, admin)
	server := kubernetes.NewForConfigOrDie(testenv.Config(b))

	// Another holder holds every Lease, for longer than the run. Deleting
	// them is the last cleanup but testenv.Namespace's check that none is
	// left.
	names := make([]string, lockNames)
	now := metav1.NewMicroTime(time.Now())
	var creates errgroup.Group
	creates.SetLimit(8)
	for i := range names {
		names[i] = fmt.Sprintf("lock-%04d", i)
		creates.Go(func() error {
			return admin.Create(ctx, &coordinationv1.Lease{
				ObjectMeta: metav1.ObjectMeta{Name: names[i], Namespace: ns},
				Spec: coordinationv1.LeaseSpec{HolderIdentity: ptr.To("holder"), LeaseDurationSeconds: ptr.To(int32(3600)),
					AcquireTime: &now, RenewTime: &now},
			})
		})
	}
	if err := creates.Wait(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		if err := admin.DeleteAllOf(ctx, &coordinationv1.Lease{}, client.InNamespace(ns)); err != nil {
			b.Error(err)
		}
	})

	// The locker's client counts its Lease requests, the connections it
	// dials and has open, and the watches it has open (see countWatches).
	var (
		reqs               testenv.Requests
		dials, conns, open atomic.Int64
	)
	cfg := testenv.CountedConfig(b, &reqs)
	dial := cfg.Dial
	cfg.Dial = func(ctx context.Context, network, address string) (net.Conn, error) {
		dials.Add(1)
		conn, err := dial(ctx, network, address)
		if err != nil {
			return nil, err
		}
		conns.Add(1)
		return &closeConn{Conn: conn, onClose: sync.OnceFunc(func() { conns.Add(-1) })}, nil
	}
	cfg.Wrap(countWatches(&open))
	c, err := client.NewWithWatch(cfg, client.Options{})
	if err != nil {
		b.Fatal(err)
	}
	rl := watchLockers[kind](c, ns)
	if closer, ok := rl.(io.Closer); ok {
		defer closer.Close() // after the watches closed on their own (a commit before Close has none)
	}
	if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: names[0]}, &coordinationv1.Lease{}); err != nil {
		b.Fatal(err) // connect, and discover Leases, before the clock starts
	}
	reqs.Reset()
	dials0, conns0 := dials.Load(), conns.Load()
	heap0, stack0 := liveMemory()
	goroutines0 := runtime.NumGoroutine()
	server0 := scrape(b, server)

	waitCtx, leave := context.WithCancel(ctx)
	var wg sync.WaitGroup
	start := time.Now()
	for _, name := range names {
		wg.Go(func() {
			if err := rl.AcquireLock(waitCtx, name, "waiter"); !errors.Is(err, context.Canceled) {
				b.Errorf("AcquireLock(%s): got %v, want context.Canceled", name, err)
			}
		})
	}
	// Every waiter watches once the locker has a watch open per name; a
	// waiter that could not watch polls, and the figures say so.
	for deadline := start.Add(time.Minute); open.Load() < lockNames && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	opened := time.Since(start)
	server1 := scrape(b, server)
	clientWatches := open.Load()
	requests, dialed, connections := reqs.Count("", "leases"), dials.Load()-dials0, conns.Load()-conns0
	heap1, stack1 := liveMemory()
	goroutines1 := runtime.NumGoroutine()

	// The callers leave, and the locker's watches linger. They are closed
	// when the locker has none open, and gone from the server when it
	// counts as many as before; the server's count is read every 100ms,
	// as it is costly.
	leave()
	wg.Wait()
	left := time.Now()
	var closed, gone time.Duration
	for i := 0; (closed == 0 || gone == 0) && time.Since(left) < time.Minute; i++ {
		if closed == 0 && open.Load() == 0 {
			closed = time.Since(left)
		}
		if gone == 0 && i%10 == 0 && scrape(b, server).watches <= server0.watches {
			gone = time.Since(left)
		}
		time.Sleep(10 * time.Millisecond)
	}

	n := float64(lockNames)
	m := map[string]float64{
		"heap-bytes/name":        float64(heap1-heap0) / n,
		"stack-bytes/name":       float64(stack1-stack0) / n,
		"goroutines/name":        float64(goroutines1-goroutines0) / n,
		"client-watches/name":    float64(clientWatches) / n,
		"server-watches/name":    (server1.watches - server0.watches) / n,
		"server-goroutines/name": (server1.goroutines - server0.goroutines) / n,
		"requests/name":          float64(requests) / n,
		"dials":                  float64(dialed),
		"connections":            float64(connections),
		"watches-open-ms":        ms(opened),
	}
	// A figure that never came is no figure: the cell stays empty.
	if closed > 0 {
		m["watches-closed-ms"] = ms(closed)
	}
	if gone > 0 {
		m["server-watches-closed-ms"] = ms(gone)
	}
	for unit, v := range m {
		b.ReportMetric(v, unit)
	}
	record(b, watchesScenario, row, m)
}

// countWatches wraps a config's transport so that open counts the watches
// whose response is open: from the response until its body is closed,
// which the watch's Stop does.
func countWatches(open *atomic.Int64) transport.WrapperFunc {
	return func(rt http.RoundTripper) http.RoundTripper {
		return roundTripFunc(func(req *http.Request) (*http.Response, error) {
			resp, err := rt.RoundTrip(req)
			if err == nil && req.URL.Query().Get("watch") == "true" {
				open.Add(1)
				resp.Body = &closeFunc{ReadCloser: resp.Body, onClose: sync.OnceFunc(func() { open.Add(-1) })}
			}
			return resp, err
		})
	}
}

// closeConn is a connection that calls onClose on every Close (give it a
// sync.OnceFunc to count the first alone).
type closeConn struct {
	net.Conn
	onClose func()
}

func (c *closeConn) Close() error {
	c.onClose()
	return c.Conn.Close()
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(req *http.Request) (*http.Response, error) { return f(req) }

// closeFunc is a body that calls onClose on every Close, as closeConn.
type closeFunc struct {
	io.ReadCloser
	onClose func()
}

func (c *closeFunc) Close() error {
	c.onClose()
	return c.ReadCloser.Close()
}

// liveMemory returns the heap that is live after a garbage collection, and
// the goroutine stacks in use, in bytes (signed, for differences).
func liveMemory() (heap, stack int64) {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc), int64(ms.StackInuse)
}

// apiServer is what the API server's /metrics says of the server.
type apiServer struct {
	// watches is how many watches of Leases it has open: the gauge
	// apiserver_longrunning_requests, verb WATCH, resource leases, summed
	// over scopes.
	watches float64
	// goroutines is go_goroutines.
	goroutines float64
}

// scrape reads the API server's /metrics.
func scrape(b *testing.B, cs kubernetes.Interface) apiServer {
	b.Helper()
	data, err := cs.Discovery().RESTClient().Get().AbsPath("/metrics").DoRaw(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	families, err := p.TextToMetricFamilies(bytes.NewReader(data))
	if err != nil {
		b.Fatalf("parse the API server's /metrics: %v", err)
	}
	return apiServer{
		watches:    gaugeSum(families["apiserver_longrunning_requests"], map[string]string{"verb": "WATCH", "resource": "leases"}),
		goroutines: gaugeSum(families["go_goroutines"], nil),
	}
}

// gaugeSum returns the sum of the samples of the gauge (or untyped metric)
// f whose labels include every one of labels.
func gaugeSum(f *dto.MetricFamily, labels map[string]string) float64 {
	var sum float64
	for _, m := range f.GetMetric() {
		has := map[string]string{}
		for _, l := range m.GetLabel() {
			has[l.GetName()] = l.GetValue()
		}
		matched := true
		for k, v := range labels {
			matched = matched && has[k] == v
		}
		if matched {
			sum += m.GetGauge().GetValue() + m.GetUntyped().GetValue()
		}
	}
	return sum
}
