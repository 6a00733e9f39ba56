package withlock_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/scheme"
	clocktesting "k8s.io/utils/clock/testing"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	"github.com/leaselock/leaselock/resourcelock"
	"github.com/leaselock/leaselock/withlock"
)

// testNamespace holds the Leases of every unit test.
const testNamespace = "locks"

// epoch is where every fake clock starts.
var epoch = time.Date(2030, time.January, 1, 0, 0, 0, 0, time.UTC)

var leasesResource = schema.GroupResource{Group: "coordination.k8s.io", Resource: "leases"}

// fixture is a fake API server and a fake clock for one test. The code under
// test talks to c, which sends every request through the test's faults and
// records it in calls; the test inspects the store through base, which does
// neither.
type fixture struct {
	base  client.WithWatch
	c     client.WithWatch
	calls *recorder
	clock *clocktesting.FakeClock
}

// newFixture returns a fake API server that holds objs and answers through
// faults (the zero Funcs for none). Pods have a status subresource, as on a
// real server.
func newFixture(t *testing.T, faults interceptor.Funcs, objs ...client.Object) *fixture {
	t.Helper()
	base := fake.NewClientBuilder().
		WithScheme(scheme.Scheme).
		WithStatusSubresource(&corev1.Pod{}).
		WithObjects(objs...).
		Build()
	calls := &recorder{}
	return &fixture{
		base:  base,
		c:     interceptor.NewClient(interceptor.NewClient(base, faults), calls.funcs()),
		calls: calls,
		clock: clocktesting.NewFakeClock(epoch),
	}
}

// locker returns a ResourceLocker on f's client and clock.
func (f *fixture) locker(opts ...resourcelock.Option) *resourcelock.ResourceLocker {
	return resourcelock.NewResourceLocker(f.c, testNamespace, append([]resourcelock.Option{resourcelock.WithClock(f.clock)}, opts...)...)
}

// leases returns the Leases in the store.
func (f *fixture) leases(t *testing.T) []coordinationv1.Lease {
	t.Helper()
	var list coordinationv1.LeaseList
	if err := f.base.List(context.Background(), &list); err != nil {
		t.Fatalf("list Leases: %v", err)
	}
	return list.Items
}

// assertNoLease fails t if any Lease is left in the store.
func (f *fixture) assertNoLease(t *testing.T) {
	t.Helper()
	for _, l := range f.leases(t) {
		t.Errorf("got Lease %s/%s held by %q left behind, want none", l.Namespace, l.Name, ptr.Deref(l.Spec.HolderIdentity, ""))
	}
}

// holder returns the holderIdentity of the Lease name, or "" when there is
// no such Lease.
func (f *fixture) holder(t *testing.T, name string) string {
	t.Helper()
	var lease coordinationv1.Lease
	err := f.base.Get(context.Background(), client.ObjectKey{Namespace: testNamespace, Name: name}, &lease)
	if apierrors.IsNotFound(err) {
		return ""
	}
	if err != nil {
		t.Fatalf("get Lease %s: %v", name, err)
	}
	return ptr.Deref(lease.Spec.HolderIdentity, "")
}

// waitForWaiters returns once the fake clock has at least n waiters, so that
// a Step reaches the timer the code under test waits on. It fails t if done
// closes first.
func waitForWaiters(t *testing.T, clk *clocktesting.FakeClock, n int, done <-chan struct{}) {
	t.Helper()
	for clk.Waiters() < n {
		select {
		case <-done:
			t.Fatalf("returned before it waited on the clock: got %d waiters, want %d", clk.Waiters(), n)
		case <-time.After(time.Millisecond):
		}
	}
}

// background runs a call in a goroutine of its own.
type background struct {
	done chan struct{}
	err  error
}

func inBackground(call func() error) *background {
	b := &background{done: make(chan struct{})}
	go func() {
		defer close(b.done)
		b.err = call()
	}()
	return b
}

func (b *background) wait() error {
	<-b.done
	return b.err
}

// recorder records every request a client sends, as "verb type" (for
// example "get *v1.ConfigMap" or "update/status *v1.Pod"), and passes it on.
type recorder struct {
	mu    sync.Mutex
	calls []string
	// updating counts the Updates sent and not yet answered.
	updating atomic.Int32
}

func (r *recorder) add(verb string, obj any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, fmt.Sprintf("%s %T", verb, obj))
}

// count returns how many requests of verb were sent for objects of obj's type.
func (r *recorder) count(verb string, obj any) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	want := fmt.Sprintf("%s %T", verb, obj)
	n := 0
	for _, c := range r.calls {
		if c == want {
			n++
		}
	}
	return n
}

func (r *recorder) all() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.calls...)
}

func (r *recorder) funcs() interceptor.Funcs {
	return interceptor.Funcs{
		Get: func(ctx context.Context, c client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
			r.add("get", obj)
			return c.Get(ctx, key, obj, opts...)
		},
		List: func(ctx context.Context, c client.WithWatch, list client.ObjectList, opts ...client.ListOption) error {
			r.add("list", list)
			return c.List(ctx, list, opts...)
		},
		Create: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
			r.add("create", obj)
			return c.Create(ctx, obj, opts...)
		},
		Delete: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.DeleteOption) error {
			r.add("delete", obj)
			return c.Delete(ctx, obj, opts...)
		},
		DeleteAllOf: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.DeleteAllOfOption) error {
			r.add("deleteallof", obj)
			return c.DeleteAllOf(ctx, obj, opts...)
		},
		Update: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.UpdateOption) error {
			r.add("update", obj)
			r.updating.Add(1)
			defer r.updating.Add(-1)
			return c.Update(ctx, obj, opts...)
		},
		Patch: func(ctx context.Context, c client.WithWatch, obj client.Object, patch client.Patch, opts ...client.PatchOption) error {
			r.add("patch", obj)
			return c.Patch(ctx, obj, patch, opts...)
		},
		Apply: func(ctx context.Context, c client.WithWatch, obj runtime.ApplyConfiguration, opts ...client.ApplyOption) error {
			r.add("apply", obj)
			return c.Apply(ctx, obj, opts...)
		},
		Watch: func(ctx context.Context, c client.WithWatch, list client.ObjectList, opts ...client.ListOption) (watch.Interface, error) {
			r.add("watch", list)
			return c.Watch(ctx, list, opts...)
		},
		SubResourceGet: func(ctx context.Context, c client.Client, sub string, obj, subObj client.Object, opts ...client.SubResourceGetOption) error {
			r.add("get/"+sub, obj)
			return c.SubResource(sub).Get(ctx, obj, subObj, opts...)
		},
		SubResourceCreate: func(ctx context.Context, c client.Client, sub string, obj, subObj client.Object, opts ...client.SubResourceCreateOption) error {
			r.add("create/"+sub, obj)
			return c.SubResource(sub).Create(ctx, obj, subObj, opts...)
		},
		SubResourceUpdate: func(ctx context.Context, c client.Client, sub string, obj client.Object, opts ...client.SubResourceUpdateOption) error {
			r.add("update/"+sub, obj)
			return c.SubResource(sub).Update(ctx, obj, opts...)
		},
		SubResourcePatch: func(ctx context.Context, c client.Client, sub string, obj client.Object, patch client.Patch, opts ...client.SubResourcePatchOption) error {
			r.add("patch/"+sub, obj)
			return c.SubResource(sub).Patch(ctx, obj, patch, opts...)
		},
		SubResourceApply: func(ctx context.Context, c client.Client, sub string, obj runtime.ApplyConfiguration, opts ...client.SubResourceApplyOption) error {
			r.add("apply/"+sub, obj)
			return c.SubResource(sub).Apply(ctx, obj, opts...)
		},
	}
}

// panicValue is what a panicking fn panics with; tests compare the pointer,
// so only the original value passes.
type panicValue struct{ msg string }

// quotaError is a typed error for errors.As.
type quotaError struct{ limit int }

func (e *quotaError) Error() string { return fmt.Sprintf("quota of %d exceeded", e.limit) }

var errBoom = errors.New("boom")

func TestWithLockAlwaysReleases(t *testing.T) {
	boom := &panicValue{"boom"}
	tests := []struct {
		name      string
		cancel    bool // cancel the caller's ctx once fn runs
		fn        func(ctx context.Context) error
		wantErr   error // nil: want a nil error
		wantPanic any
	}{
		{
			name: "fn returns nil",
			fn:   func(context.Context) error { return nil },
		},
		{
			name:    "fn returns an error",
			fn:      func(context.Context) error { return fmt.Errorf("write settings: %w", errBoom) },
			wantErr: errBoom,
		},
		{
			name:      "fn panics",
			fn:        func(context.Context) error { panic(boom) },
			wantPanic: boom,
		},
		{
			name:   "caller's ctx is cancelled while fn runs",
			cancel: true,
			fn: func(ctx context.Context) error {
				<-ctx.Done()
				return ctx.Err()
			},
			wantErr: context.Canceled,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// The release must run on a ctx of its own, with the release
			// timeout, whatever became of the caller's.
			type deleteSeen struct {
				err         error
				hasDeadline bool
				deadline    time.Time
			}
			var (
				mu      sync.Mutex
				deletes []deleteSeen
			)
			f := newFixture(t, interceptor.Funcs{
				Delete: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.DeleteOption) error {
					d, ok := ctx.Deadline()
					mu.Lock()
					deletes = append(deletes, deleteSeen{ctx.Err(), ok, d})
					mu.Unlock()
					return c.Delete(ctx, obj, opts...)
				},
			})
			l := withlock.New(f.locker(), withlock.WithReleaseTimeout(1500*time.Millisecond))
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()

			entered := make(chan struct{})
			var (
				holderInFn string
				panicked   any
			)
			call := inBackground(func() error {
				defer func() { panicked = recover() }()
				return l.WithLock(ctx, "job", func(ctx context.Context) error {
					holderInFn = f.holder(t, "job")
					close(entered)
					return tt.fn(ctx)
				})
			})
			select {
			case <-entered:
			case <-call.done:
				// Both are ready when fn ran and WithLock returned before
				// this select, and select picks either.
				select {
				case <-entered:
				default:
					t.Fatalf("WithLock returned before fn ran: %v", call.err)
				}
			}
			if tt.cancel {
				cancel()
			}
			err := call.wait()

			if holderInFn == "" {
				t.Errorf("got no Lease while fn ran, want one")
			}
			if panicked != tt.wantPanic {
				t.Errorf("got panic %v, want %v", panicked, tt.wantPanic)
			}
			switch {
			case tt.wantPanic != nil:
			case tt.wantErr == nil && err != nil:
				t.Errorf("got error %v, want nil", err)
			case tt.wantErr != nil && !errors.Is(err, tt.wantErr):
				t.Errorf("got error %v, want one that errors.Is %v", err, tt.wantErr)
			}
			if errors.Is(err, withlock.ErrLockLost) {
				t.Errorf("got error %v, want no ErrLockLost", err)
			}
			f.assertNoLease(t)
			mu.Lock()
			defer mu.Unlock()
			if len(deletes) != 1 {
				t.Fatalf("got %d deletes, want 1", len(deletes))
			}
			d := deletes[0]
			if d.err != nil {
				t.Errorf("got release ctx error %v, want nil", d.err)
			}
			// A deadline less than 1.5s after the delete can only be the
			// release timeout: the default, and the locker's own bound of
			// its retry timeout plus 2s, end later.
			if left := time.Until(d.deadline); !d.hasDeadline || left > 1500*time.Millisecond {
				t.Errorf("got release ctx deadline %v away (set: %t), want the release timeout, 1.5s or less", left, d.hasDeadline)
			}
		})
	}
}

func TestWithLockHolderID(t *testing.T) {
	defaultID := os.Getenv("POD_NAME")
	if defaultID == "" {
		defaultID, _ = os.Hostname()
	}
	if defaultID == "" {
		defaultID = "leaselock"
	}
	tests := []struct {
		name       string
		opts       []withlock.Option
		wantPrefix string
	}{
		{"WithIdentity", []withlock.Option{withlock.WithIdentity("pod-a")}, "pod-a_"},
		{"empty identity is ignored", []withlock.Option{withlock.WithIdentity("")}, defaultID + "_"},
		{"default identity", nil, defaultID + "_"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, interceptor.Funcs{})
			l := withlock.New(f.locker(), tt.opts...)
			var holders []string
			for range 2 {
				err := l.WithLock(t.Context(), "job", func(ctx context.Context) error {
					holders = append(holders, f.holder(t, "job"))
					if got, ok := withlock.Holder(ctx); !ok || got != holders[len(holders)-1] {
						t.Errorf("Holder(fn's ctx): got %q, %v, want the Lease's holder %q, true", got, ok, holders[len(holders)-1])
					}
					return nil
				})
				if err != nil {
					t.Fatalf("WithLock: %v", err)
				}
			}
			for _, h := range holders {
				rest, ok := strings.CutPrefix(h, tt.wantPrefix)
				if !ok {
					t.Errorf("got holder %q, want prefix %q", h, tt.wantPrefix)
					continue
				}
				if id, err := uuid.Parse(rest); err != nil || id.String() != rest {
					t.Errorf("got holder %q, want %q followed by a UUID (parse: %v)", h, tt.wantPrefix, err)
				}
			}
			if got, ok := withlock.Holder(t.Context()); ok || got != "" {
				t.Errorf("Holder(a ctx no fn was given): got %q, %v, want \"\", false", got, ok)
			}
			if holders[0] == holders[1] {
				t.Errorf("got holder %q for both calls, want a new one for each", holders[0])
			}
			f.assertNoLease(t)
		})
	}
}

// childEnv marks the run of the test binary that TestDefaultIdentity starts.
const childEnv = "WITHLOCK_TEST_DEFAULT_IDENTITY_CHILD"

// TestDefaultIdentity runs in a process of its own: the default identity is
// read from the environment once per process, so a t.Setenv after any New
// could not change it.
func TestDefaultIdentity(t *testing.T) {
	if os.Getenv(childEnv) != "" {
		f := newFixture(t, interceptor.Funcs{})
		err := withlock.Do(t.Context(), f.locker(), "job", func(context.Context) error {
			fmt.Printf("holder=%s\n", f.holder(t, "job"))
			return nil
		})
		if err != nil {
			t.Fatalf("Do: %v", err)
		}
		return
	}

	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "leaselock"
	}
	tests := []struct {
		name    string
		podName string // "" leaves POD_NAME unset
		want    string
	}{
		{"POD_NAME set", "pod-from-env", "pod-from-env_"},
		{"POD_NAME unset", "", host + "_"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// The child runs no integration test, so its TestMain starts no
			// API server.
			t.Setenv(childEnv, "1")
			t.Setenv("POD_NAME", tt.podName)
			if tt.podName == "" {
				os.Unsetenv("POD_NAME") // t.Setenv restores it
			}
			cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestDefaultIdentity$", "-test.count=1")
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("child test: %v\n%s", err, out)
			}
			var holder string
			sc := bufio.NewScanner(bytes.NewReader(out))
			for sc.Scan() {
				if h, ok := strings.CutPrefix(sc.Text(), "holder="); ok {
					holder = h
				}
			}
			rest, ok := strings.CutPrefix(holder, tt.want)
			if !ok {
				t.Fatalf("got holder %q, want prefix %q\n%s", holder, tt.want, out)
			}
			if _, err := uuid.Parse(rest); err != nil {
				t.Errorf("got holder %q, want %q followed by a UUID: %v", holder, tt.want, err)
			}
		})
	}
}

// TestWithLockLockLost runs fn without renewal, as a timeout: its ctx ends
// with ErrLockLost at the lease less the margin (renewal_test.go has the
// lock renewed).
func TestWithLockLockLost(t *testing.T) {
	tests := []struct {
		name string
		opts []withlock.Option
		// step is how far the clock moves while fn runs; the lease lasts 10s.
		step     time.Duration
		fn       func(ctx context.Context) error // runs after the step
		wantLost bool
		wantErr  error // also wanted in the error, besides ErrLockLost
	}{
		{
			name:     "fn returns nil after the lease minus the margin",
			opts:     []withlock.Option{withlock.WithSafetyMargin(2 * time.Second)},
			step:     8 * time.Second,
			fn:       func(context.Context) error { return nil },
			wantLost: true,
		},
		{
			name:     "fn returns ctx.Err after the lease minus the margin",
			opts:     []withlock.Option{withlock.WithSafetyMargin(2 * time.Second)},
			step:     9 * time.Second,
			fn:       func(ctx context.Context) error { return ctx.Err() },
			wantLost: true,
			wantErr:  context.Canceled,
		},
		{
			name: "fn ends just before the lease minus the margin",
			opts: []withlock.Option{withlock.WithSafetyMargin(2 * time.Second)},
			step: 8*time.Second - time.Millisecond,
			fn:   func(context.Context) error { return nil },
		},
		{
			name:     "default margin is a fifth of the lease",
			step:     8 * time.Second,
			fn:       func(context.Context) error { return nil },
			wantLost: true,
		},
		{
			name:     "zero margin: lost at the lease's end",
			opts:     []withlock.Option{withlock.WithSafetyMargin(0)},
			step:     10 * time.Second,
			fn:       func(context.Context) error { return nil },
			wantLost: true,
		},
		{
			name: "zero margin: not lost before the lease's end",
			opts: []withlock.Option{withlock.WithSafetyMargin(0)},
			step: 10*time.Second - time.Millisecond,
			fn:   func(context.Context) error { return nil },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, interceptor.Funcs{})
			l := withlock.New(f.locker(resourcelock.WithLeaseDuration(10*time.Second)), append(tt.opts, withlock.WithoutRenewal())...)
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			stepped := make(chan struct{})
			var cause error
			call := inBackground(func() error {
				return l.WithLock(ctx, "job", func(ctx context.Context) error {
					<-stepped
					if tt.wantLost {
						<-ctx.Done()
					}
					cause = context.Cause(ctx)
					return tt.fn(ctx)
				})
			})
			waitForWaiters(t, f.clock, 1, call.done)
			// A timer that is due fires within Step and leaves the clock's
			// waiters, so whether it fired is known without waiting.
			before := f.clock.Waiters()
			f.clock.Step(tt.step)
			if fired := f.clock.Waiters() < before; fired != tt.wantLost {
				t.Errorf("got lock-lost timer fired %t after %v, want %t", fired, tt.step, tt.wantLost)
				cancel() // fn may wait for a ctx that would never end
			}
			close(stepped)
			err := call.wait()

			if got := errors.Is(cause, withlock.ErrLockLost); got != tt.wantLost {
				t.Errorf("got context.Cause(ctx) %v, want ErrLockLost: %t", cause, tt.wantLost)
			}
			if !tt.wantLost && cause != nil {
				t.Errorf("got context.Cause(ctx) %v, want nil", cause)
			}
			if got := errors.Is(err, withlock.ErrLockLost); got != tt.wantLost {
				t.Errorf("got error %v, want ErrLockLost: %t", err, tt.wantLost)
			}
			if !tt.wantLost && err != nil {
				t.Errorf("got error %v, want nil", err)
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("got error %v, want one that errors.Is %v", err, tt.wantErr)
			}
			f.assertNoLease(t)
		})
	}
}

func TestWithLockJoinsFnAndReleaseErrors(t *testing.T) {
	forbidden := apierrors.NewForbidden(leasesResource, "job", errors.New("no delete for you"))
	tests := []struct {
		name          string
		fnErr         error
		releaseErr    error
		wantIs        error // nil: want no error from fn
		wantQuota     int   // 0: want no *quotaError
		wantForbidden bool
		// wantSucceeded: the error says that fn succeeded and the release
		// failed.
		wantSucceeded bool
	}{
		{name: "fn fails", fnErr: fmt.Errorf("write: %w", errBoom), wantIs: errBoom},
		{name: "release fails", releaseErr: forbidden, wantForbidden: true, wantSucceeded: true},
		{name: "fn and release fail", fnErr: fmt.Errorf("write: %w", errBoom), releaseErr: forbidden, wantIs: errBoom, wantForbidden: true},
		{name: "typed fn error and release fail", fnErr: &quotaError{limit: 3}, releaseErr: forbidden, wantQuota: 3, wantForbidden: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, interceptor.Funcs{
				Delete: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.DeleteOption) error {
					if tt.releaseErr != nil {
						return tt.releaseErr
					}
					return c.Delete(ctx, obj, opts...)
				},
			})
			err := withlock.New(f.locker()).WithLock(t.Context(), "job", func(context.Context) error { return tt.fnErr })

			if err == nil {
				t.Fatalf("got nil error, want one")
			}
			if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Errorf("got error %v, want one that errors.Is %v", err, tt.wantIs)
			}
			var qe *quotaError
			if got := errors.As(err, &qe); got != (tt.wantQuota != 0) {
				t.Errorf("got errors.As *quotaError %t, want %t (error %v)", got, tt.wantQuota != 0, err)
			} else if got && qe.limit != tt.wantQuota {
				t.Errorf("got quotaError.limit %d, want %d", qe.limit, tt.wantQuota)
			}
			if got := apierrors.IsForbidden(err); got != tt.wantForbidden {
				t.Errorf("got apierrors.IsForbidden %t, want %t (error %v)", got, tt.wantForbidden, err)
			}
			succeeded := "withlock: fn succeeded, but the release of lock locks/job held by "
			if got := strings.Contains(err.Error(), succeeded); got != tt.wantSucceeded {
				t.Errorf("got error %q, want %q in it: %t", err, succeeded, tt.wantSucceeded)
			}
			if tt.wantSucceeded && !strings.Contains(err.Error(), "the Lease stays until it expires") {
				t.Errorf("got error %q, want it to say that the Lease stays until it expires", err)
			}
		})
	}
}

// TestWithLockLogsReleaseFailureAfterPanic has fn panic and the release
// fail: no caller sees that error, so WithLock logs it, and the panic goes
// on with its value. A release that fails after fn returned is the
// caller's error, not a log line.
func TestWithLockLogsReleaseFailureAfterPanic(t *testing.T) {
	forbidden := apierrors.NewForbidden(leasesResource, "job", errors.New("no delete for you"))
	boom := &panicValue{"boom"}
	for _, panics := range []bool{true, false} {
		t.Run(fmt.Sprintf("fn panics: %t", panics), func(t *testing.T) {
			ctx, logged := captureLog(t.Context())
			f := newFixture(t, interceptor.Funcs{
				Delete: func(context.Context, client.WithWatch, client.Object, ...client.DeleteOption) error {
					return forbidden
				},
			})
			var recovered any
			err := func() (err error) {
				defer func() { recovered = recover() }()
				return withlock.New(f.locker()).WithLock(ctx, "job", func(context.Context) error {
					if panics {
						panic(boom)
					}
					return nil
				})
			}()
			lines := logged()
			if !panics {
				if !apierrors.IsForbidden(err) {
					t.Errorf("got %v, want the release's Forbidden", err)
				}
				if len(lines) != 0 {
					t.Errorf("got log lines %q, want none", lines)
				}
				return
			}
			if recovered != boom {
				t.Errorf("got panic %v, want %v", recovered, boom)
			}
			if len(lines) != 1 {
				t.Fatalf("got log lines %q, want one", lines)
			}
			for _, want := range []string{`"release after fn did not return"`, `"lock"="job"`, `"holder"=`, `no delete for you`} {
				if !strings.Contains(lines[0], want) {
					t.Errorf("log line %s: want %s in it", lines[0], want)
				}
			}
		})
	}
}

func TestWithLockAcquireFails(t *testing.T) {
	now := metav1.NewMicroTime(epoch)
	heldByOther := &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Name: "job", Namespace: testNamespace},
		Spec: coordinationv1.LeaseSpec{
			HolderIdentity:       ptr.To("pod-b_other"),
			LeaseDurationSeconds: ptr.To(int32(15)),
			AcquireTime:          &now,
			RenewTime:            &now,
		},
	}
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	tests := []struct {
		name          string
		ctx           context.Context
		objs          []client.Object
		faults        interceptor.Funcs
		wantIs        error
		wantForbidden bool
		wantHolder    string // the Lease's holder afterwards; "" for no Lease
	}{
		{
			name:       "held by another holder",
			ctx:        context.Background(),
			objs:       []client.Object{heldByOther},
			wantIs:     resourcelock.ErrLockHeld,
			wantHolder: "pod-b_other",
		},
		{
			name:   "ctx already cancelled",
			ctx:    cancelled,
			wantIs: context.Canceled,
		},
		{
			name: "create forbidden",
			ctx:  context.Background(),
			faults: interceptor.Funcs{
				Create: func(context.Context, client.WithWatch, client.Object, ...client.CreateOption) error {
					return apierrors.NewForbidden(leasesResource, "job", errors.New("no create for you"))
				},
			},
			wantForbidden: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, tt.faults, tt.objs...)
			l := withlock.New(f.locker(resourcelock.WithRetryTimeout(0)))
			called := false
			err := l.WithLock(tt.ctx, "job", func(context.Context) error {
				called = true
				return nil
			})
			if err == nil {
				t.Fatalf("got nil error, want one")
			}
			if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Errorf("got error %v, want one that errors.Is %v", err, tt.wantIs)
			}
			if got := apierrors.IsForbidden(err); got != tt.wantForbidden {
				t.Errorf("got apierrors.IsForbidden %t, want %t (error %v)", got, tt.wantForbidden, err)
			}
			if called {
				t.Errorf("got fn called, want it never called")
			}
			if got := f.holder(t, "job"); got != tt.wantHolder {
				t.Errorf("got Lease holder %q afterwards, want %q", got, tt.wantHolder)
			}
		})
	}

	t.Run("HeldError names the holder", func(t *testing.T) {
		f := newFixture(t, interceptor.Funcs{}, heldByOther)
		err := withlock.Do(t.Context(), f.locker(resourcelock.WithRetryTimeout(0)), "job", func(context.Context) error { return nil })
		held, ok := errors.AsType[*resourcelock.HeldError](err)
		if !ok {
			t.Fatalf("got error %v, want a *resourcelock.HeldError", err)
		}
		if held.Holder != "pod-b_other" {
			t.Errorf("got HeldError.Holder %q, want %q", held.Holder, "pod-b_other")
		}
	})
}

func TestWithLockRejectsBadInput(t *testing.T) {
	nop := func(context.Context) error { return nil }
	tests := []struct {
		name    string
		call    func(ctx context.Context, rl *resourcelock.ResourceLocker, fn func(context.Context) error) error
		wantMsg string
	}{
		{
			name: "New(nil)",
			call: func(ctx context.Context, _ *resourcelock.ResourceLocker, fn func(context.Context) error) error {
				return withlock.New(nil).WithLock(ctx, "job", fn)
			},
			wantMsg: "nil ResourceLocker",
		},
		{
			name: "nil *Locker",
			call: func(ctx context.Context, _ *resourcelock.ResourceLocker, fn func(context.Context) error) error {
				var l *withlock.Locker
				return l.WithLock(ctx, "job", fn)
			},
			wantMsg: "locker is nil",
		},
		{
			name: "Do with nil rl",
			call: func(ctx context.Context, _ *resourcelock.ResourceLocker, fn func(context.Context) error) error {
				return withlock.Do(ctx, nil, "job", fn)
			},
			wantMsg: "nil ResourceLocker",
		},
		{
			name: "Do with a zero-value ResourceLocker",
			call: func(ctx context.Context, _ *resourcelock.ResourceLocker, fn func(context.Context) error) error {
				return withlock.Do(ctx, &resourcelock.ResourceLocker{}, "job", fn)
			},
			wantMsg: "client is nil",
		},
		{
			name: "nil fn",
			call: func(ctx context.Context, rl *resourcelock.ResourceLocker, _ func(context.Context) error) error {
				return withlock.New(rl).WithLock(ctx, "job", nil)
			},
			wantMsg: "fn is nil",
		},
		{
			name: "Do with nil fn",
			call: func(ctx context.Context, rl *resourcelock.ResourceLocker, _ func(context.Context) error) error {
				return withlock.Do(ctx, rl, "job", nil)
			},
			wantMsg: "fn is nil",
		},
		{
			name: "invalid lock name",
			call: func(ctx context.Context, rl *resourcelock.ResourceLocker, fn func(context.Context) error) error {
				return withlock.New(rl).WithLock(ctx, "Foo_Bar", fn)
			},
			wantMsg: `invalid lock name "Foo_Bar"`,
		},
		{
			name: "empty lock name",
			call: func(ctx context.Context, rl *resourcelock.ResourceLocker, fn func(context.Context) error) error {
				return withlock.Do(ctx, rl, "", fn)
			},
			wantMsg: `invalid lock name ""`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, interceptor.Funcs{})
			called := false
			err := tt.call(t.Context(), f.locker(), func(ctx context.Context) error {
				called = true
				return nop(ctx)
			})
			if err == nil || !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("got error %v, want one containing %q", err, tt.wantMsg)
			}
			if called {
				t.Errorf("got fn called, want it never called")
			}
			if got := f.calls.all(); len(got) != 0 {
				t.Errorf("got requests %q, want none", got)
			}
		})
	}
}
