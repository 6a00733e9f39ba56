package withlock_test

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/version"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	"github.com/leaselock/leaselock/internal/testenv"
	"github.com/leaselock/leaselock/resourcelock"
	"github.com/leaselock/leaselock/withlock"
)

// The lease of the tests against the server: short, so that three of them
// take seconds. A renewal comes every 667ms, and a write holds the lock
// 1.6s (the default margin is 400ms).
const (
	serverLease  = 2 * time.Second
	serverPeriod = serverLease / 3
)

// shortLocker returns a Locker on c in ns with the short lease.
func shortLocker(c client.Client, ns string, opts ...withlock.Option) *withlock.Locker {
	return withlock.New(resourcelock.NewResourceLocker(c, ns, resourcelock.WithLeaseDuration(serverLease),
		resourcelock.WithRetryTimeout(time.Minute), resourcelock.WithMetrics(nil)), opts...)
}

// untilDone waits for fn's ctx to end, and fails t after limit.
func untilDone(t *testing.T, ctx context.Context, limit time.Duration) {
	t.Helper()
	select {
	case <-ctx.Done():
	case <-time.After(limit):
		t.Fatalf("fn's ctx still going after %v", limit)
	}
}

// getLease returns the Lease name in ns, as admin reads it.
func getLease(t *testing.T, admin client.Client, ns, name string) *coordinationv1.Lease {
	t.Helper()
	var lease coordinationv1.Lease
	if err := admin.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, &lease); err != nil {
		t.Fatalf("get Lease %s: %v", name, err)
	}
	return &lease
}

// TestServerRenewalKeepsTheLockExclusive has four lockers add one to a
// ConfigMap five times each under one lock, with a blind write that only
// the lock keeps from losing updates. The first fn holds the lock for
// three lease durations: its lock is renewed, its ctx does not end, the
// others wait (none of their fns runs meanwhile, and the count does not
// move under it), and the count ends exact.
func TestServerRenewalKeepsTheLockExclusive(t *testing.T) {
	const lockers, increments = 4, 5
	admin := testenv.Client(t)
	ns := testenv.Namespace(t, admin)
	ctx := t.Context()
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "counter", Namespace: ns}, Data: map[string]string{"count": "0"}}
	if err := admin.Create(ctx, cm); err != nil {
		t.Fatal(err)
	}
	key := client.ObjectKeyFromObject(cm)
	count := func(ctx context.Context, c client.Client) string {
		var cm corev1.ConfigMap
		if err := c.Get(ctx, key, &cm); err != nil {
			t.Errorf("get ConfigMap: %v", err)
		}
		return cm.Data["count"]
	}

	var longRuns atomic.Bool
	longStarted := make(chan struct{})
	var reqs testenv.Requests
	var wg sync.WaitGroup
	for w := range lockers {
		c := testenv.Client(t)
		if w == 0 {
			c = testenv.CountedClient(t, &reqs)
		}
		l := shortLocker(c, ns)
		wg.Go(func() {
			if w > 0 {
				<-longStarted
			}
			for i := range increments {
				err := l.WithLock(ctx, "counter", func(ctx context.Context) error {
					if longRuns.Load() {
						t.Errorf("locker %d ran fn while the long fn held the lock", w)
					}
					if w == 0 && i == 0 {
						longRuns.Store(true)
						defer longRuns.Store(false)
						before := count(ctx, c)
						close(longStarted)
						select {
						case <-time.After(3 * serverLease):
						case <-ctx.Done():
							return context.Cause(ctx)
						}
						if after := count(ctx, c); after != before {
							t.Errorf("count moved from %s to %s under the long fn's lock", before, after)
						}
					}
					return readModifyWrite(ctx, c, key)
				})
				if err != nil {
					t.Errorf("locker %d, increment %d: %v", w, i, err)
					return
				}
			}
		})
	}
	wg.Wait()
	if got, want := count(ctx, admin), strconv.Itoa(lockers*increments); got != want {
		t.Errorf("got count %s, want %s", got, want)
	}
	// A fn of 6s, renewed every 667ms; the short ones send none.
	if got := reqs.Count("update", "leases"); got < 7 {
		t.Errorf("got %d Lease updates from the long fn's locker, want at least 7 renewals", got)
	}
}

// TestServerRenewalFailuresLoseTheLock fails every renewal with 503: fn's
// ctx ends with ErrLockLost before the Lease on the server expires, after
// retries sooner than the renewal period.
func TestServerRenewalFailuresLoseTheLock(t *testing.T) {
	admin := testenv.Client(t)
	ns := testenv.Namespace(t, admin)
	var renewals atomic.Int32
	c := interceptor.NewClient(testenv.Client(t), interceptor.Funcs{
		Update: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.UpdateOption) error {
			if _, ok := obj.(*coordinationv1.Lease); ok {
				renewals.Add(1)
				return apierrors.NewServiceUnavailable("injected")
			}
			return c.Update(ctx, obj, opts...)
		},
	})
	var ended time.Time
	var cause error
	var lease *coordinationv1.Lease
	err := shortLocker(c, ns).WithLock(t.Context(), "failing", func(ctx context.Context) error {
		untilDone(t, ctx, 10*time.Second)
		ended, cause = time.Now(), context.Cause(ctx)
		lease = getLease(t, admin, ns, "failing")
		return nil
	})
	expires := lease.Spec.RenewTime.Add(time.Duration(ptr.Deref(lease.Spec.LeaseDurationSeconds, 0)) * time.Second)
	if !ended.Before(expires) {
		t.Errorf("got fn's ctx ended at %v, want before the Lease expired at %v", ended, expires)
	}
	t.Logf("fn's ctx ended %v before the Lease expired, after %d renewals", expires.Sub(ended), renewals.Load())
	if !errors.Is(cause, withlock.ErrLockLost) {
		t.Errorf("got fn's ctx ended with %v, want ErrLockLost", cause)
	}
	if !errors.Is(err, withlock.ErrLockLost) {
		t.Errorf("got %v, want ErrLockLost", err)
	}
	// Renewals every period would make 2 within the 1.6s a write holds it.
	if got := renewals.Load(); got < 3 {
		t.Errorf("got %d renewals, want at least 3: failures retried sooner than the period", got)
	}
}

// TestServerTakeoverEndsFn writes another holder into the Lease, as admin,
// while fn runs: fn's ctx ends with ErrLockLost within a renewal period,
// the call's error says the lock was taken, and the Lease stays the other
// holder's.
func TestServerTakeoverEndsFn(t *testing.T) {
	admin := testenv.Client(t)
	ns := testenv.Namespace(t, admin)
	var took time.Duration
	var cause error
	err := shortLocker(testenv.Client(t), ns).WithLock(t.Context(), "taken", func(ctx context.Context) error {
		lease := getLease(t, admin, ns, "taken")
		lease.Spec.HolderIdentity = ptr.To("intruder")
		if err := admin.Update(context.Background(), lease); err != nil {
			t.Fatalf("take the Lease over: %v", err)
		}
		at := time.Now()
		untilDone(t, ctx, 10*time.Second)
		took, cause = time.Since(at), context.Cause(ctx)
		return nil
	})
	// The next renewal comes within a period of the takeover: the slack is
	// the renewal's Update and Get.
	if took > serverPeriod+500*time.Millisecond {
		t.Errorf("got fn's ctx ended %v after the takeover, want within a renewal period, %v", took, serverPeriod)
	}
	if !errors.Is(cause, withlock.ErrLockLost) {
		t.Errorf("got fn's ctx ended with %v, want ErrLockLost", cause)
	}
	if !errors.Is(err, withlock.ErrLockLost) || !errors.Is(err, resourcelock.ErrNotHeld) || !strings.Contains(err.Error(), "taken by another holder") {
		t.Errorf("got %v, want ErrLockLost and ErrNotHeld, saying the lock was taken", err)
	}
	lease := getLease(t, admin, ns, "taken")
	if got := ptr.Deref(lease.Spec.HolderIdentity, ""); got != "intruder" {
		t.Errorf("got the Lease held by %q after the call, want intruder", got)
	}
	if err := admin.Delete(context.Background(), lease); err != nil {
		t.Fatal(err)
	}
}

// TestServerMaxHold holds a lock with a max hold of 3s, longer than the
// lease: renewals keep it that long, then fn's ctx ends with ErrMaxHold,
// and the lock is released when fn returns: another locker takes it at
// once.
func TestServerMaxHold(t *testing.T) {
	const maxHold = 3 * time.Second
	admin := testenv.Client(t)
	ns := testenv.Namespace(t, admin)
	c := testenv.Client(t)
	start := time.Now()
	var held time.Duration
	var cause error
	err := shortLocker(c, ns, withlock.WithMaxHold(maxHold)).WithLock(t.Context(), "capped", func(ctx context.Context) error {
		untilDone(t, ctx, 10*time.Second)
		held, cause = time.Since(start), context.Cause(ctx)
		return nil
	})
	if held < maxHold || held > maxHold+time.Second {
		t.Errorf("got fn's ctx ended %v after the call began, want at the max hold, %v", held, maxHold)
	}
	if !errors.Is(cause, withlock.ErrMaxHold) || errors.Is(cause, withlock.ErrLockLost) {
		t.Errorf("got fn's ctx ended with %v, want ErrMaxHold alone", cause)
	}
	if !errors.Is(err, withlock.ErrMaxHold) || errors.Is(err, withlock.ErrLockLost) {
		t.Errorf("got %v, want ErrMaxHold alone", err)
	}
	tryLock := withlock.New(resourcelock.NewResourceLocker(c, ns, resourcelock.WithRetryTimeout(0), resourcelock.WithMetrics(nil)))
	if err := tryLock.WithLock(t.Context(), "capped", func(context.Context) error { return nil }); err != nil {
		t.Errorf("take the lock after the max hold: got %v, want it free", err)
	}
}

// TestServerTokenFollowsTheLease reads Token(ctx) in fn after the acquire
// and after a renewal: each time it is the Lease's resourceVersion on the
// server, and it grows.
func TestServerTokenFollowsTheLease(t *testing.T) {
	admin := testenv.Client(t)
	ns := testenv.Namespace(t, admin)
	err := shortLocker(testenv.Client(t), ns).WithLock(t.Context(), "fenced", func(ctx context.Context) error {
		// The token and the Lease as read between two reads of the same
		// token: a renewal may come between them.
		matched := func(what string) string {
			t.Helper()
			for range 10 {
				before, _ := withlock.Token(ctx)
				lease := getLease(t, admin, ns, "fenced")
				if after, _ := withlock.Token(ctx); after == before && lease.ResourceVersion == before {
					return before
				}
			}
			t.Fatalf("%s: Token(ctx) never matched the Lease's resourceVersion", what)
			return ""
		}
		acquired := matched("after the acquire")
		waitUntil(t, "a renewal", func() bool { token, _ := withlock.Token(ctx); return token != acquired })
		renewed := matched("after a renewal")
		if c, err := resourcelock.CompareTokens(renewed, acquired); err != nil || c != 1 {
			t.Errorf("got token %q after a renewal, %q after the acquire: %d, %v, want it larger", renewed, acquired, c, err)
		}
		return ctx.Err()
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestServerReleaseLogged builds a Locker with NewForConfig: it logs once
// that the server promises no order of tokens, when it is older than 1.35.
func TestServerReleaseLogged(t *testing.T) {
	admin := testenv.Client(t)
	ns := testenv.Namespace(t, admin)
	older := !testenv.ServerVersion(t).AtLeast(version.MajorMinor(1, 35))
	log, logged := captureLogger()
	l, err := withlock.NewForConfig(testenv.Config(t), ns, withlock.WithLogger(log), withlock.WithLeftoverRemoval(-1))
	if err != nil {
		t.Fatal(err)
	}
	if older {
		waitUntil(t, "the line on the release", func() bool { return len(logged()) > 0 })
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	lines := logged()
	if got := len(lines) == 1 && strings.Contains(lines[0], "older than Kubernetes 1.35"); got != older {
		t.Errorf("got log lines %q, want one on the release older than 1.35: %t", lines, older)
	}
}
