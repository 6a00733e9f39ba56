package withlock_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	"github.com/leaselock/leaselock/resourcelock"
	"github.com/leaselock/leaselock/withlock"
)

// The lock of these tests: a 9s lease less a 1s margin, so a write holds
// it 8s, and a renewal comes every 3s.
const (
	testLease  = 9 * time.Second
	testMargin = time.Second
	testPeriod = 3 * time.Second
	testHold   = 8 * time.Second
)

// renewingLocker returns a Locker on f with the test lease and margin.
func renewingLocker(f *fixture, rlOpts []resourcelock.Option, opts ...withlock.Option) *withlock.Locker {
	rl := f.locker(append([]resourcelock.Option{resourcelock.WithLeaseDuration(testLease)}, rlOpts...)...)
	return withlock.New(rl, append([]withlock.Option{withlock.WithSafetyMargin(testMargin)}, opts...)...)
}

// running is a WithLock whose fn waits until it is told to return.
type running struct {
	call *background
	// fnCtx is the ctx given to fn.
	fnCtx context.Context
	ret   chan struct{}
	// panics makes fn panic when told to return.
	panics bool
}

// hold starts l.WithLock(ctx, "job") in the background, and returns once
// fn runs.
func hold(t *testing.T, ctx context.Context, l *withlock.Locker, panics bool) *running {
	t.Helper()
	r := &running{ret: make(chan struct{}), panics: panics}
	entered := make(chan context.Context, 1)
	r.call = inBackground(func() (err error) {
		if panics {
			defer func() { _ = recover() }()
		}
		return l.WithLock(ctx, "job", func(ctx context.Context) error {
			entered <- ctx
			<-r.ret
			if r.panics {
				panic(&panicValue{"fn panics"})
			}
			return nil
		})
	})
	select {
	case r.fnCtx = <-entered:
	case <-r.call.done:
		t.Fatalf("WithLock returned before fn ran: %v", r.call.err)
	}
	return r
}

// end makes fn return (or panic), and returns the call's error.
func (r *running) end() error {
	close(r.ret)
	return r.call.wait()
}

// renewals returns how many Lease updates f's client sent.
func (f *fixture) renewals() int { return f.calls.count("update", &coordinationv1.Lease{}) }

// stepIdle waits until the keeper of a lock waits on f's clock, or fn's
// ctx ended, and then moves the clock by d.
func stepIdle(t *testing.T, f *fixture, fnCtx context.Context, d time.Duration) {
	t.Helper()
	// A renewal in flight waits on the clock too, for the end of the hold:
	// the clock moves only once it has ended, as if requests took no time.
	waitUntil(t, "the keeper to wait on the clock", func() bool {
		return f.clock.Waiters() > 0 && withlock.Renewing() == 0 || fnCtx.Err() != nil
	})
	f.clock.Step(d)
}

// TestRenewalThatHangsEndsFnAtTheExpiry holds a lock whose renewals never
// get an answer: fn's ctx ends with ErrLockLost when the clock reaches the
// expiry, without waiting for the request.
func TestRenewalThatHangsEndsFnAtTheExpiry(t *testing.T) {
	f := newFixture(t, interceptor.Funcs{
		Update: func(ctx context.Context, _ client.WithWatch, _ client.Object, _ ...client.UpdateOption) error {
			<-ctx.Done()
			return ctx.Err()
		},
	})
	r := hold(t, t.Context(), renewingLocker(f, nil), false)
	stepIdle(t, f, r.fnCtx, testPeriod)
	// The keeper starts its timer for the expiry after the renewal, which
	// may reach the server first: a step before the timer exists would
	// leave it due a step later.
	waitUntil(t, "a renewal sent, and the keeper waiting for the expiry", func() bool {
		return f.calls.updating.Load() == 1 && f.clock.Waiters() > 0
	})
	f.clock.Step(testHold - testPeriod - time.Millisecond)
	time.Sleep(50 * time.Millisecond) // a wrong end would come now
	if err := r.fnCtx.Err(); err != nil {
		t.Fatalf("got fn's ctx ended before the expiry: %v", context.Cause(r.fnCtx))
	}
	f.clock.Step(time.Millisecond)
	select {
	case <-r.fnCtx.Done():
	case <-time.After(2 * time.Second): // the request's real-time bound would be 5s
		t.Fatal("fn's ctx did not end at the expiry while its renewal hung")
	}
	if cause := context.Cause(r.fnCtx); !errors.Is(cause, withlock.ErrLockLost) {
		t.Errorf("got fn's ctx ended with %v, want ErrLockLost", cause)
	}
	if err := r.end(); !errors.Is(err, withlock.ErrLockLost) {
		t.Errorf("got %v, want ErrLockLost", err)
	}
}

// TestRenewalSchedule holds a lock for three lease durations: it is
// renewed every third of the lease, from the start of the write before,
// never sooner; fn's ctx outlives its first lease; the token grows with
// each renewal; and once fn returns, nothing waits on the clock.
func TestRenewalSchedule(t *testing.T) {
	f := newFixture(t, interceptor.Funcs{})
	l := renewingLocker(f, nil)
	r := hold(t, t.Context(), l, false)
	first, ok := withlock.Token(r.fnCtx)
	if !ok {
		t.Fatal("Token(fn's ctx): got none, want the acquire's")
	}
	prev := first
	for i := 1; i <= 9; i++ {
		stepIdle(t, f, r.fnCtx, testPeriod-time.Millisecond)
		if got := f.renewals(); got != i-1 {
			t.Fatalf("%v after the acquire: got %d renewals, want %d", f.clock.Since(epoch), got, i-1)
		}
		stepIdle(t, f, r.fnCtx, time.Millisecond)
		waitUntil(t, "a renewal", func() bool { return f.renewals() == i })
		waitUntil(t, "the token to move", func() bool { token, _ := withlock.Token(r.fnCtx); return token != prev })
		token, _ := withlock.Token(r.fnCtx)
		if c, err := resourcelock.CompareTokens(token, prev); err != nil || c != 1 {
			t.Fatalf("renewal %d: token %q after %q: got %d, %v, want it larger", i, token, prev, c, err)
		}
		prev = token
		if err := r.fnCtx.Err(); err != nil {
			t.Fatalf("%v after the acquire, renewed every %v: fn's ctx ended: %v", f.clock.Since(epoch), testPeriod, context.Cause(r.fnCtx))
		}
	}
	if err := r.end(); err != nil {
		t.Errorf("got %v, want nil", err)
	}
	if got := f.clock.Waiters(); got != 0 {
		t.Errorf("got %d waiters on the clock after WithLock returned, want 0", got)
	}
	f.clock.Step(time.Hour)
	if got := f.renewals(); got != 9 {
		t.Errorf("got %d renewals after fn returned, want 9", got)
	}
	f.assertNoLease(t)
}

// TestRenewalFailures fails the first renewals with 503: each is retried
// sooner than the next period, with backoff, and never past the lease less
// the margin. When every one fails, fn's ctx ends there with ErrLockLost;
// when one gets through, the lock's expiry moves and fn goes on.
func TestRenewalFailures(t *testing.T) {
	tests := []struct {
		name     string
		failures int // renewals that fail; -1 for all
		wantLost bool
	}{
		{name: "every renewal fails", failures: -1, wantLost: true},
		{name: "two fail, the third gets through", failures: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var mu sync.Mutex
			var sent []time.Duration // the clock at each renewal
			var f *fixture
			f = newFixture(t, interceptor.Funcs{
				Update: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.UpdateOption) error {
					mu.Lock()
					sent = append(sent, f.clock.Since(epoch))
					n := len(sent)
					mu.Unlock()
					if _, ok := obj.(*coordinationv1.Lease); ok && (tt.failures < 0 || n <= tt.failures) {
						return apierrors.NewServiceUnavailable("the server is restarting")
					}
					return c.Update(ctx, obj, opts...)
				},
			})
			reg := prometheus.NewRegistry()
			l := renewingLocker(f, []resourcelock.Option{resourcelock.WithMetrics(reg)})
			r := hold(t, t.Context(), l, false)
			// 100ms at a time to 12s, 4s past the first lease less the margin.
			for f.clock.Since(epoch) < testHold+4*time.Second {
				stepIdle(t, f, r.fnCtx, 100*time.Millisecond)
			}
			err := r.end()

			mu.Lock()
			defer mu.Unlock()
			if len(sent) < 2 || sent[0] != testPeriod {
				t.Fatalf("got renewals at %v, want the first at %v and a retry", sent, testPeriod)
			}
			for i := 1; i < len(sent) && (tt.failures < 0 || i <= tt.failures); i++ {
				// The retry after the i-th failure: the delay, up to a
				// quarter more, on a clock that moves 100ms at a time.
				want := min(testPeriod/8<<(i-1), testPeriod/2)
				if gap := sent[i] - sent[i-1]; gap < want || gap > want*5/4+100*time.Millisecond {
					t.Errorf("got retry %d %v after the failure before it, want %v to %v", i, gap, want, want*5/4+100*time.Millisecond)
				}
			}
			if tt.wantLost {
				if last := sent[len(sent)-1]; last >= testHold {
					t.Errorf("got a renewal at %v, want none at or past %v, when the lock is lost", last, testHold)
				}
				if len(sent) < 4 {
					t.Errorf("got renewals at %v, want at least 4 before %v, which fixed periods would not give", sent, testHold)
				}
			}
			if got := errors.Is(context.Cause(r.fnCtx), withlock.ErrLockLost); got != tt.wantLost {
				t.Errorf("got fn's ctx ended with %v, want ErrLockLost: %t", context.Cause(r.fnCtx), tt.wantLost)
			}
			if got := errors.Is(err, withlock.ErrLockLost); got != tt.wantLost {
				t.Errorf("got %v, want ErrLockLost: %t", err, tt.wantLost)
			}
			wantLost := 0.0
			if tt.wantLost {
				wantLost = 1
			}
			if got := counterSum(t, reg, "leaselock_locks_lost_total"); got != wantLost {
				t.Errorf("got %v locks lost counted, want %v", got, wantLost)
			}
			if got := counterSum(t, reg, "leaselock_renewals_total"); got != float64(len(sent)) {
				t.Errorf("got %v renewals counted, want %d, one for each sent", got, len(sent))
			}
			f.assertNoLease(t)
		})
	}
}

// TestRenewalFindsTheLockTaken writes another holder into the Lease while
// fn runs: the next renewal finds it, and ends fn's ctx at once with
// ErrLockLost; the call's error says the lock was taken, and the Lease
// stays the other holder's.
func TestRenewalFindsTheLockTaken(t *testing.T) {
	f := newFixture(t, interceptor.Funcs{})
	reg := prometheus.NewRegistry()
	l := renewingLocker(f, []resourcelock.Option{resourcelock.WithMetrics(reg)})
	r := hold(t, t.Context(), l, false)
	var lease coordinationv1.Lease
	if err := f.base.Get(t.Context(), client.ObjectKey{Namespace: testNamespace, Name: "job"}, &lease); err != nil {
		t.Fatal(err)
	}
	lease.Spec.HolderIdentity = ptr.To("intruder")
	if err := f.base.Update(t.Context(), &lease); err != nil {
		t.Fatal(err)
	}
	stepIdle(t, f, r.fnCtx, testPeriod)
	select {
	case <-r.fnCtx.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("fn's ctx did not end after the renewal found another holder")
	}
	if got := f.clock.Since(epoch); got != testPeriod {
		t.Errorf("got fn's ctx ended %v after the acquire, want at the renewal, %v", got, testPeriod)
	}
	if cause := context.Cause(r.fnCtx); !errors.Is(cause, withlock.ErrLockLost) {
		t.Errorf("got fn's ctx ended with %v, want ErrLockLost", cause)
	}
	err := r.end()
	if !errors.Is(err, withlock.ErrLockLost) || !errors.Is(err, resourcelock.ErrNotHeld) || !strings.Contains(err.Error(), "taken by another holder") {
		t.Errorf("got %v, want ErrLockLost and ErrNotHeld, saying the lock was taken by another holder", err)
	}
	if got := f.holder(t, "job"); got != "intruder" {
		t.Errorf("got the Lease held by %q after the call, want intruder", got)
	}
	for name, want := range map[string]float64{"leaselock_locks_lost_total": 1, "leaselock_renewals_total": 1} {
		if got := counterSum(t, reg, name); got != want {
			t.Errorf("got %s %v, want %v", name, got, want)
		}
	}
}

// TestMaxHold holds a lock past its max hold of 19s: it is renewed until
// the cap lies before its expiry, and then fn's ctx ends at the cap with
// ErrMaxHold. A fn that returns then ends with ErrMaxHold; one that goes
// on past the expiry gets ErrLockLost too.
func TestMaxHold(t *testing.T) {
	const maxHold = 19 * time.Second
	tests := []struct {
		name     string
		after    time.Duration // how long fn goes on after the cap
		wantLost bool
	}{
		{name: "fn returns at the cap"},
		{name: "fn goes on past the expiry", after: 4 * time.Second, wantLost: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, interceptor.Funcs{})
			l := renewingLocker(f, nil, withlock.WithMaxHold(maxHold))
			r := hold(t, t.Context(), l, false)
			for f.clock.Since(epoch) < maxHold-time.Second {
				stepIdle(t, f, r.fnCtx, time.Second)
			}
			stepIdle(t, f, r.fnCtx, time.Second-time.Millisecond)
			if err := r.fnCtx.Err(); err != nil {
				t.Fatalf("got fn's ctx ended %v after the acquire with %v, want it going on until %v", f.clock.Since(epoch), context.Cause(r.fnCtx), maxHold)
			}
			stepIdle(t, f, r.fnCtx, time.Millisecond)
			select {
			case <-r.fnCtx.Done():
			case <-time.After(10 * time.Second):
				t.Fatal("fn's ctx did not end at the max hold")
			}
			if cause := context.Cause(r.fnCtx); !errors.Is(cause, withlock.ErrMaxHold) || errors.Is(cause, withlock.ErrLockLost) {
				t.Errorf("got fn's ctx ended with %v, want ErrMaxHold alone", cause)
			}
			// Renewed at 3s, 6s, 9s and 12s, whose expiry (20s) lies past
			// the cap.
			if got := f.renewals(); got != 4 {
				t.Errorf("got %d renewals, want 4", got)
			}
			f.clock.Step(tt.after)
			err := r.end()
			if !errors.Is(err, withlock.ErrMaxHold) {
				t.Errorf("got %v, want ErrMaxHold", err)
			}
			if got := errors.Is(err, withlock.ErrLockLost); got != tt.wantLost {
				t.Errorf("got %v, want ErrLockLost: %t", err, tt.wantLost)
			}
			f.assertNoLease(t)
		})
	}
}

// TestShortFnSendsNoRenewal runs a fn that returns just before a third of
// the lease: it sends the same requests with renewal as without, and no
// update of the Lease.
func TestShortFnSendsNoRenewal(t *testing.T) {
	var requests [2][]string
	for i, opts := range [][]withlock.Option{nil, {withlock.WithoutRenewal()}} {
		f := newFixture(t, interceptor.Funcs{})
		l := renewingLocker(f, nil, opts...)
		r := hold(t, t.Context(), l, false)
		stepIdle(t, f, r.fnCtx, testPeriod-time.Millisecond)
		if err := r.end(); err != nil {
			t.Fatalf("got %v, want nil", err)
		}
		requests[i] = f.calls.all()
	}
	if strings.Join(requests[0], ", ") != strings.Join(requests[1], ", ") {
		t.Errorf("got requests %q with renewal, want %q as without", requests[0], requests[1])
	}
	for _, req := range requests[0] {
		if strings.HasPrefix(req, "update") {
			t.Errorf("got %q, want no update", req)
		}
	}
}

// TestRenewalGoesOnUntilFnReturns cancels the caller's ctx, and closes the
// Locker, while fn runs: the lock is still renewed until fn returns, and
// then released. After a panic in fn, nothing is renewed either.
func TestRenewalGoesOnUntilFnReturns(t *testing.T) {
	for _, panics := range []bool{false, true} {
		f := newFixture(t, interceptor.Funcs{})
		l := renewingLocker(f, nil)
		ctx, cancel := context.WithCancel(t.Context())
		r := hold(t, ctx, l, panics)
		cancel()
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		stepIdle(t, f, r.fnCtx, testPeriod)
		waitUntil(t, "a renewal after the caller's ctx ended and the Locker was closed", func() bool { return f.renewals() == 1 })
		if cause := context.Cause(r.fnCtx); cause != context.Canceled {
			t.Errorf("got fn's ctx ended with %v, want context.Canceled, the caller's", cause)
		}
		_ = r.end()
		if got := f.clock.Waiters(); got != 0 {
			t.Errorf("fn panics %t: got %d waiters on the clock after WithLock returned, want 0", panics, got)
		}
		f.clock.Step(time.Hour)
		if got := f.renewals(); got != 1 {
			t.Errorf("fn panics %t: got %d renewals, want 1: none after fn ended", panics, got)
		}
		f.assertNoLease(t)
	}
}

// TestAcquireThatTookTheHold makes the acquire's Create take the whole
// lease on the clock: fn starts with its ctx ended with ErrLockLost, and
// no renewal is sent.
func TestAcquireThatTookTheHold(t *testing.T) {
	var f *fixture
	f = newFixture(t, interceptor.Funcs{
		Create: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
			f.clock.Step(testHold)
			return c.Create(ctx, obj, opts...)
		},
	})
	l := renewingLocker(f, nil)
	var cause error
	err := l.WithLock(t.Context(), "job", func(ctx context.Context) error {
		cause = context.Cause(ctx)
		return nil
	})
	if !errors.Is(cause, withlock.ErrLockLost) {
		t.Errorf("got fn's ctx's cause %v as fn started, want ErrLockLost", cause)
	}
	if !errors.Is(err, withlock.ErrLockLost) {
		t.Errorf("got %v, want ErrLockLost", err)
	}
	if got := f.renewals(); got != 0 {
		t.Errorf("got %d renewals, want 0", got)
	}
	f.assertNoLease(t)
}
