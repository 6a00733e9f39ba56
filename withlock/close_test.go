package withlock_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	"github.com/leaselock/leaselock/resourcelock"
	"github.com/leaselock/leaselock/withlock"
)

// newLease returns a Lease in the test namespace held by holder, renewed at
// renewed for seconds, with the label of the Leases resourcelock creates
// when labelled is set.
func newLease(name, holder string, renewed time.Time, seconds int32, labelled bool) *coordinationv1.Lease {
	at := metav1.NewMicroTime(renewed)
	lease := &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: testNamespace},
		Spec: coordinationv1.LeaseSpec{
			HolderIdentity:       ptr.To(holder),
			LeaseDurationSeconds: ptr.To(seconds),
			AcquireTime:          &at,
			RenewTime:            &at,
		},
	}
	if labelled {
		lease.Labels = map[string]string{resourcelock.ManagedByLabel: "leaselock"}
	}
	return lease
}

// TestCloseEndsWaitingCall closes the Locker while a call waits for a lock
// another holder keeps: the call returns ErrClosed, without running fn,
// and the other holder keeps its Lease.
func TestCloseEndsWaitingCall(t *testing.T) {
	f := newFixture(t, interceptor.Funcs{}, newLease("job", "pod-b_other", epoch, 15, true))
	l := withlock.New(f.locker(resourcelock.WithRetryTimeout(time.Minute)))
	called := false
	call := inBackground(func() error {
		return l.WithLock(t.Context(), "job", func(context.Context) error {
			called = true
			return nil
		})
	})
	waitForWaiters(t, f.clock, 1, call.done)
	if err := l.Close(); err != nil {
		t.Errorf("Close: got %v, want nil", err)
	}
	err := call.wait()
	if !errors.Is(err, withlock.ErrClosed) {
		t.Fatalf("got %v, want ErrClosed", err)
	}
	for _, want := range []string{"closed while waiting", "lock locks/job"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("got %q, want it to say %q", err, want)
		}
	}
	if called {
		t.Error("got fn called, want it never called")
	}
	if got := f.holder(t, "job"); got != "pod-b_other" {
		t.Errorf("got holder %q afterwards, want %q", got, "pod-b_other")
	}
}

// TestClosedLockerSendsNothing closes a Locker, more than once and from
// several goroutines: every later WithLock and Update returns ErrClosed
// before any request.
func TestClosedLockerSendsNothing(t *testing.T) {
	f := newFixture(t, interceptor.Funcs{}, counter("1"))
	l := withlock.New(f.locker())
	var closing sync.WaitGroup
	for range 3 {
		closing.Go(func() {
			if err := l.Close(); err != nil {
				t.Errorf("Close: got %v, want nil", err)
			}
		})
	}
	closing.Wait()
	tests := []struct {
		name string
		call func(ctx context.Context) error
	}{
		{"WithLock", func(ctx context.Context) error {
			return l.WithLock(ctx, "job", func(context.Context) error {
				t.Error("got fn called, want it never called")
				return nil
			})
		}},
		{"Update", func(ctx context.Context) error {
			return withlock.Update(ctx, l, f.c, named(), func(*corev1.ConfigMap) error {
				t.Error("got mutate called, want it never called")
				return nil
			})
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call(t.Context())
			if !errors.Is(err, withlock.ErrClosed) {
				t.Errorf("got %v, want ErrClosed", err)
			}
			if got := f.calls.all(); len(got) != 0 {
				t.Errorf("got requests %q, want none", got)
			}
		})
	}
}

// TestCloseLetsRunningFnFinish closes the Locker while fn runs: fn's ctx
// is not cancelled, and its lock is released when it returns.
func TestCloseLetsRunningFnFinish(t *testing.T) {
	f := newFixture(t, interceptor.Funcs{})
	l := withlock.New(f.locker())
	entered, proceed := make(chan struct{}), make(chan struct{})
	var fnCtxErr error
	call := inBackground(func() error {
		return l.WithLock(t.Context(), "job", func(ctx context.Context) error {
			close(entered)
			<-proceed
			fnCtxErr = ctx.Err()
			return nil
		})
	})
	<-entered
	if err := l.Close(); err != nil {
		t.Errorf("Close: got %v, want nil", err)
	}
	close(proceed)
	if err := call.wait(); err != nil {
		t.Errorf("got %v, want nil", err)
	}
	if fnCtxErr != nil {
		t.Errorf("got fn's ctx ended with %v after Close, want it going on", fnCtxErr)
	}
	f.assertNoLease(t)
}

// TestStartClosesTheLocker runs Start as a manager does: it returns, and
// the Locker is closed, when its ctx ends, or when the Locker is closed.
func TestStartClosesTheLocker(t *testing.T) {
	f := newFixture(t, interceptor.Funcs{})
	l := withlock.New(f.locker())
	if l.NeedLeaderElection() {
		t.Error("NeedLeaderElection: got true, want false: a Locker serves every replica")
	}
	ctx, cancel := context.WithCancel(t.Context())
	started := inBackground(func() error { return l.Start(ctx) })
	cancel()
	if err := started.wait(); err != nil {
		t.Errorf("Start: got %v, want nil", err)
	}
	if err := l.WithLock(t.Context(), "job", func(context.Context) error { return nil }); !errors.Is(err, withlock.ErrClosed) {
		t.Errorf("WithLock after Start returned: got %v, want ErrClosed", err)
	}

	other := withlock.New(f.locker())
	started = inBackground(func() error { return other.Start(t.Context()) })
	_ = other.Close()
	if err := started.wait(); err != nil {
		t.Errorf("Start of a Locker closed: got %v, want nil", err)
	}
}
