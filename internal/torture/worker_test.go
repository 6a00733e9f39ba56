package torture_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilnet "k8s.io/apimachinery/pkg/util/net"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/leaselock/leaselock/resourcelock"
	"github.com/leaselock/leaselock/withlock"
)

// workerEnv holds, in a worker process, its workerConfig as JSON.
const workerEnv = "LEASELOCK_TORTURE_WORKER"

// recordPrefix starts every line a worker prints for the parent; the test
// framework's own lines (PASS, ok) do not have it.
const recordPrefix = "torture-record "

// workerConfig is what a worker process is told to do.
type workerConfig struct {
	Kubeconfig string   `json:"kubeconfig"`
	Namespace  string   `json:"namespace"`
	Proc       int      `json:"proc"`
	Goroutines int      `json:"goroutines"`
	Ops        int      `json:"ops"` // increments each goroutine writes
	Locks      []string `json:"locks"`
	// FaultRate is the share of Lease requests that fail (see faults).
	FaultRate     float64       `json:"faultRate"`
	LeaseDuration time.Duration `json:"leaseDuration"`
	RetryInterval time.Duration `json:"retryInterval"`
	NoWatch       bool          `json:"noWatch"`
	// Hold makes the first critical section print a "holding" record after
	// its write and then hang, holding the lock, until the parent kills the
	// process.
	Hold bool `json:"hold"`
	// Gate makes the worker wait for a line on stdin before its first
	// acquire.
	Gate bool `json:"gate"`
	// UntilStopped makes the goroutines go on until the parent writes
	// "stop" on stdin (or closes it), Ops being then only a cap: the
	// workers of TestTortureHA contend for as long as its faults last.
	// Not with Gate, which reads stdin too.
	UntilStopped bool `json:"untilStopped"`
	// Announce makes every critical section print a "leaving" record as
	// it ends, before its release: the parent can kill a server while the
	// release is on its way.
	Announce bool `json:"announce"`
	// Pause makes the worker one of TestTorturePause's: it runs one
	// critical section at a time, as the parent orders on stdin, writing
	// the counter the way the mode says (pauseUpdate, pauseToken,
	// pauseBlind) on Locks[0]; see runPauseWorker.
	Pause string `json:"pause,omitempty"`
	// Store is the address of the fenced store of the pauseToken mode.
	Store string `json:"store,omitempty"`
	// Timeout bounds the worker's run; the parent sets it.
	Timeout time.Duration `json:"timeout"`
}

// Write outcomes of a critical section's ConfigMap Update.
const (
	wroteYes   = "yes"   // the Update succeeded
	wroteNo    = "no"    // the server rejected it: it did not happen
	wroteMaybe = "maybe" // no answer: it may have happened
)

// record is one line a worker prints.
type record struct {
	// Kind is "ready" (client built), "op" (one withlock call), "holding"
	// (a critical section that will not end: the process is about to be
	// killed), "leaving" (a critical section ended, its release follows;
	// see Announce) or "done" (the worker's totals); a pause worker's are
	// "poised" (read, about to write) and "attempt" (one read and write).
	Kind string `json:"kind"`
	Proc int    `json:"proc"`
	G    int    `json:"g"`
	Lock string `json:"lock,omitempty"`
	// Start and End are the wall times (UnixNano) at which the critical
	// section began (the lock was held) and ended; 0 when fn did not run.
	// End is 0 too in a holding record: the parent sets it to the time of
	// the kill.
	Start int64 `json:"start,omitempty"`
	End   int64 `json:"end,omitempty"`
	// Called and Returned are the wall times at which the withlock call
	// began and returned: from Called to Start it acquired, from End to
	// Returned it released.
	Called   int64 `json:"called,omitempty"`
	Returned int64 `json:"returned,omitempty"`
	// ReadOK and Read: the counter value fn read.
	ReadOK bool `json:"readOK,omitempty"`
	Read   int  `json:"read,omitempty"`
	// Write is the outcome of fn's Update of the counter to Read+1.
	Write string `json:"write,omitempty"`
	// Err is the error the withlock call returned.
	Err string `json:"err,omitempty"`

	// Of a pause worker (pauseworker_test.go): the round the parent
	// ordered; the fencing token the write carried; why a write did not
	// happen (whyConflict, whyToken, whyCtx); and whether the call
	// returned withlock.ErrLockLost.
	Round int    `json:"round,omitempty"`
	Token string `json:"token,omitempty"`
	Why   string `json:"why,omitempty"`
	Lost  bool   `json:"lost,omitempty"`

	// Totals, in a done record.
	Faults map[string]int `json:"faults,omitempty"`
	Wrote  int            `json:"wrote,omitempty"`
	DoNil  int            `json:"doNil,omitempty"`
	DoErr  int            `json:"doErr,omitempty"`
}

// TestWorkerProcess is not a test of its own: it is the body of a worker
// process, the test binary run again by the other tests with workerEnv set
// (the helper-process pattern of os/exec's tests). Each worker builds its own
// client from a kubeconfig file, as a replica would.
func TestWorkerProcess(t *testing.T) {
	spec := os.Getenv(workerEnv)
	if spec == "" {
		t.Skip("the body of the worker processes that the other tests start")
	}
	var cfg workerConfig
	if err := json.Unmarshal([]byte(spec), &cfg); err != nil {
		t.Fatalf("%s: %v", workerEnv, err)
	}
	run := runWorker
	if cfg.Pause != "" {
		run = runPauseWorker
	}
	if err := run(cfg); err != nil {
		t.Fatal(err)
	}
}

var emitMu sync.Mutex

// emit prints r for the parent, one line each.
func emit(r record) {
	b, err := json.Marshal(r)
	if err != nil {
		panic(err)
	}
	emitMu.Lock()
	defer emitMu.Unlock()
	os.Stdout.Write(append([]byte(recordPrefix), append(b, '\n')...))
}

// newWorkerClient builds a worker's client from its kubeconfig file, as a
// replica builds its own, and returns the HTTP client under it too, whose
// idle connections the worker closes as it ends (settle).
func newWorkerClient(kubeconfig string) (client.WithWatch, *http.Client, error) {
	logf.SetLogger(logr.Discard())
	rc, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, nil, err
	}
	rc.QPS, rc.Burst = -1, -1
	hc, err := rest.HTTPClientFor(rc)
	if err != nil {
		return nil, nil, err
	}
	c, err := client.NewWithWatch(rc, client.Options{HTTPClient: hc})
	if err != nil {
		return nil, nil, err
	}
	return c, hc, nil
}

// newWorkerLocker returns a worker's Locker, whose Leases go through c, with
// the lease, retry interval and way of waiting of cfg.
func newWorkerLocker(c client.WithWatch, cfg workerConfig) *withlock.Locker {
	opts := []resourcelock.Option{
		resourcelock.WithLeaseDuration(cfg.LeaseDuration),
		resourcelock.WithRetryInterval(cfg.RetryInterval),
		// Long enough to ride out a restart of the API server: a caller
		// that gives up only adds noise to the figures.
		resourcelock.WithRetryTimeout(time.Minute),
	}
	if cfg.NoWatch {
		opts = append(opts, resourcelock.WithoutWatch())
	}
	rl := resourcelock.NewResourceLocker(c, cfg.Namespace, opts...)
	return withlock.New(rl, withlock.WithIdentity(fmt.Sprintf("proc-%d", cfg.Proc)),
		withlock.WithReleaseTimeout(time.Minute))
}

// settle leaves no goroutine behind for goleak as a worker ends: the
// locker's watches close a WatchLinger after their last waiter, and idle
// connections on demand.
func settle(hc *http.Client) {
	time.Sleep(resourcelock.WatchLinger + 500*time.Millisecond)
	utilnet.CloseIdleConnectionsFor(hc.Transport)
}

func runWorker(cfg workerConfig) error {
	base, hc, err := newWorkerClient(cfg.Kubeconfig)
	if err != nil {
		return err
	}
	f := &faults{rate: cfg.FaultRate, counts: map[string]int{}}
	// Faults on Lease requests only: the critical section's own writes are
	// the measure of the run, and must be known to have happened or not.
	locker := newWorkerLocker(f.wrap(base), cfg)

	emit(record{Kind: "ready", Proc: cfg.Proc})
	if cfg.Gate {
		if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
			return fmt.Errorf("wait for the parent's go: %w", err)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), cfg.Timeout)
	defer cancel()
	stopped, readerDone := stopSignal(cfg.UntilStopped)
	var (
		mu    sync.Mutex
		total = record{Kind: "done", Proc: cfg.Proc}
		wg    sync.WaitGroup
	)
	for g := range cfg.Goroutines {
		wg.Go(func() {
			wrote := 0
			// A withlock call may fail (a fault, the server down); the
			// goroutine tries again until it has written its share, within
			// a bound that a healthy run never reaches.
			for attempt := 0; wrote < cfg.Ops && attempt < 20*cfg.Ops && ctx.Err() == nil && !isClosed(stopped); attempt++ {
				lock := cfg.Locks[(cfg.Proc+g+attempt)%len(cfg.Locks)]
				r := increment(ctx, locker, base, cfg, g, lock, cfg.Hold && g == 0 && attempt == 0)
				emit(r)
				mu.Lock()
				if r.Write == wroteYes {
					wrote++
					total.Wrote++
				}
				if r.Err == "" {
					total.DoNil++
				} else {
					total.DoErr++
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	total.Faults = f.snapshot()
	emit(total)
	<-readerDone // the parent closes stdin after its stop
	settle(hc)
	return nil
}

// stopSignal returns a channel closed when the parent writes "stop" on
// stdin or closes it, and one closed when the goroutine that reads stdin has
// returned, which goleak would otherwise find. Without untilStopped
// neither reads stdin, and stopped is never closed.
func stopSignal(untilStopped bool) (stopped, done <-chan struct{}) {
	stop, finished := make(chan struct{}), make(chan struct{})
	if !untilStopped {
		close(finished)
		return stop, finished
	}
	go func() {
		defer close(finished)
		defer close(stop)
		for sc := bufio.NewScanner(os.Stdin); sc.Scan() && sc.Text() != "stop"; {
		}
	}()
	return stop, finished
}

func isClosed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// increment runs one critical section: under the lock, read the counter of
// lock and write it plus one. The write carries no resourceVersion, as a
// careless replica writes: were two holders ever to overlap, an increment
// would be lost, and the history would show it.
func increment(ctx context.Context, locker *withlock.Locker, c client.Client, cfg workerConfig, g int, lock string, hold bool) record {
	r := record{Kind: "op", Proc: cfg.Proc, G: g, Lock: lock, Called: time.Now().UnixNano()}
	err := locker.WithLock(ctx, lock, func(ctx context.Context) error {
		if cfg.Announce {
			defer func() { emit(record{Kind: "leaving", Proc: cfg.Proc, G: g, Lock: lock, End: r.End}) }()
		}
		r.Start = time.Now().UnixNano()
		var cm corev1.ConfigMap
		if err := c.Get(ctx, client.ObjectKey{Namespace: cfg.Namespace, Name: counterName(lock)}, &cm); err != nil {
			r.End = time.Now().UnixNano()
			return err
		}
		n, err := strconv.Atoi(cm.Data["count"])
		if err != nil {
			r.End = time.Now().UnixNano()
			return fmt.Errorf("counter %s: %w", cm.Name, err)
		}
		r.ReadOK, r.Read = true, n
		cm.Data["count"] = strconv.Itoa(n + 1)
		cm.ResourceVersion = ""
		err = c.Update(ctx, &cm)
		r.End = time.Now().UnixNano()
		r.Write = writeOutcome(err)
		if err == nil && hold {
			// A holder that hangs in its critical section: the parent
			// kills the process with SIGKILL.
			r.Kind, r.End = "holding", 0
			emit(r)
			time.Sleep(10 * time.Minute)
		}
		return err
	})
	r.Returned = time.Now().UnixNano()
	if err != nil {
		r.Err = err.Error()
	}
	return r
}

// writeOutcome tells whether a failed Update can have happened: only an
// answer of the server's own (4xx) says for certain that it did not.
func writeOutcome(err error) string {
	if err == nil {
		return wroteYes
	}
	var status apierrors.APIStatus
	if errors.As(err, &status) {
		if code := status.Status().Code; code >= http.StatusBadRequest && code < http.StatusInternalServerError {
			return wroteNo
		}
	}
	return wroteMaybe
}

func counterName(lock string) string { return "counter-" + lock }

// Fault kinds, as the table names them.
const (
	faultConflict     = "conflict (409)"
	faultInternal     = "internal error (500)"
	faultTooMany      = "too many requests (429)"
	faultTimeout      = "timeout (504)"
	faultCreateLost   = "create applied, response lost (timeout)"
	faultUpdateLost   = "update applied, response lost (timeout)"
	faultDeleteLost   = "delete applied, error returned (500)"
	faultWatchRefused = "watch refused (500)"

	injected = "injected by the torture suite"
)

// allFaults are the kinds of fault, in the order the table lists them.
var allFaults = []string{
	faultConflict, faultInternal, faultTooMany, faultTimeout,
	faultCreateLost, faultUpdateLost, faultDeleteLost, faultWatchRefused,
}

// faults wraps a client so that a share of its Lease requests fail. Most
// faults are sent back without the request being made; the nasty ones make
// the request and then lose its response, so that the locker does not know
// that its Create, Update or Delete happened.
type faults struct {
	rate   float64
	mu     sync.Mutex
	counts map[string]int
}

// pick returns the fault to inject into a request on obj, or "".
func (f *faults) pick(obj any, kinds ...string) string {
	switch obj.(type) {
	case *coordinationv1.Lease, *coordinationv1.LeaseList:
	default:
		return ""
	}
	if f.rate == 0 || rand.Float64() >= f.rate {
		return ""
	}
	k := kinds[rand.IntN(len(kinds))]
	f.mu.Lock()
	defer f.mu.Unlock()
	f.counts[k]++
	return k
}

func (f *faults) snapshot() map[string]int {
	f.mu.Lock()
	defer f.mu.Unlock()
	m := make(map[string]int, len(f.counts))
	for k, v := range f.counts {
		m[k] = v
	}
	return m
}

var leases = schema.GroupResource{Group: coordinationv1.GroupName, Resource: "leases"}

// fault returns the error of a fault that is not applied.
func fault(kind, name string) error {
	cause := errors.New(injected)
	switch kind {
	case faultConflict:
		return apierrors.NewConflict(leases, name, cause)
	case faultInternal, faultWatchRefused:
		return apierrors.NewInternalError(cause)
	case faultTooMany:
		return apierrors.NewTooManyRequests(injected, 1)
	case faultTimeout:
		return apierrors.NewTimeoutError(injected, 1)
	}
	panic("unknown fault " + kind)
}

func (f *faults) wrap(c client.WithWatch) client.WithWatch {
	if f.rate == 0 {
		return c
	}
	return interceptor.NewClient(c, interceptor.Funcs{
		Get: func(ctx context.Context, c client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
			if k := f.pick(obj, faultInternal, faultTooMany, faultTimeout); k != "" {
				return fault(k, key.Name)
			}
			return c.Get(ctx, key, obj, opts...)
		},
		Create: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
			switch k := f.pick(obj, faultInternal, faultTooMany, faultTimeout, faultCreateLost); k {
			case "":
			case faultCreateLost:
				if err := c.Create(ctx, obj, opts...); err != nil {
					return err
				}
				return fault(faultTimeout, obj.GetName())
			default:
				return fault(k, obj.GetName())
			}
			return c.Create(ctx, obj, opts...)
		},
		Update: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.UpdateOption) error {
			switch k := f.pick(obj, faultConflict, faultInternal, faultTooMany, faultTimeout, faultUpdateLost); k {
			case "":
			case faultUpdateLost:
				if err := c.Update(ctx, obj, opts...); err != nil {
					return err
				}
				return fault(faultTimeout, obj.GetName())
			default:
				return fault(k, obj.GetName())
			}
			return c.Update(ctx, obj, opts...)
		},
		Delete: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.DeleteOption) error {
			switch k := f.pick(obj, faultConflict, faultInternal, faultTooMany, faultTimeout, faultDeleteLost); k {
			case "":
			case faultDeleteLost:
				if err := c.Delete(ctx, obj, opts...); err != nil {
					return err
				}
				return fault(faultInternal, obj.GetName())
			default:
				return fault(k, obj.GetName())
			}
			return c.Delete(ctx, obj, opts...)
		},
		Watch: func(ctx context.Context, c client.WithWatch, list client.ObjectList, opts ...client.ListOption) (watch.Interface, error) {
			if k := f.pick(list, faultWatchRefused); k != "" {
				return nil, fault(k, "")
			}
			return c.Watch(ctx, list, opts...)
		},
	})
}
