package resourcelock

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	testingclock "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
)

// TestHeldRecordIsNoCache: a locker that holds more than maxTracked locks
// at once keeps the record of every one, since what a refresh or a release
// of a lock does depends on it; at maxTracked it forgets only the locks
// whose Lease has expired, which their callers never released.
func TestHeldRecordIsNoCache(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name     string
		expired  int // of the maxTracked held before, how many expired
		wantKept int // of those, how many are still recorded after one more
	}{
		{name: "none expired", expired: 0, wantKept: maxTracked},
		{name: "some expired", expired: 100, wantKept: maxTracked - 100},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rl := NewResourceLocker(fake.NewClientBuilder().Build(), "default",
				WithClock(testingclock.NewFakeClock(now)), WithMetrics(nil))
			for i := range maxTracked {
				at := now
				if i < tt.expired {
					at = now.Add(-rl.leaseDuration - time.Second)
				}
				rl.records.held[holding{fmt.Sprintf("lock-%d", i), "me"}] = acquisition{at: at}
			}
			lease := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "one-more", UID: "u", ResourceVersion: "1"}}
			rl.records.acquired("me", lease, now, rl.leaseDuration)
			kept := 0
			for i := range maxTracked {
				if _, ok := rl.records.held[holding{fmt.Sprintf("lock-%d", i), "me"}]; ok {
					kept++
					if i < tt.expired {
						t.Errorf("lock-%d, expired, is still recorded", i)
					}
				}
			}
			if kept != tt.wantKept {
				t.Errorf("locks recorded of the %d held before: got %d, want %d", maxTracked, kept, tt.wantKept)
			}
			if _, ok := rl.records.held[holding{"one-more", "me"}]; !ok {
				t.Error("the new lock is not recorded")
			}
		})
	}
}

// TestCloseEndsWatches: Close ends the watch a waiting call uses, at once
// rather than WatchLinger after the call, and leaves no goroutine. The
// waiting call polls from then on and gets the lock once it is released;
// later calls open no watch.
func TestCloseEndsWatches(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	base := fake.NewClientBuilder().Build()
	var watches atomic.Int32
	c := interceptor.NewClient(WatchListFake{base}, interceptor.Funcs{
		Watch: func(ctx context.Context, c client.WithWatch, list client.ObjectList, opts ...client.ListOption) (watch.Interface, error) {
			watches.Add(1)
			return c.Watch(ctx, list, opts...)
		},
	})
	ctx := context.Background()
	other := NewResourceLocker(base, "default", WithMetrics(nil))
	rl := NewResourceLocker(c, "default", WithMetrics(nil), WithRetryInterval(50*time.Millisecond), WithRetryTimeout(10*time.Second))
	if err := other.AcquireLock(ctx, "l", "other"); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- rl.AcquireLock(ctx, "l", "me") }()
	for limit := time.Now().Add(10 * time.Second); rl.watches.existing("l") == nil; time.Sleep(time.Millisecond) {
		if time.Now().After(limit) {
			t.Fatal("the waiter opened no watch within 10s")
		}
	}
	lw := rl.watches.existing("l")
	rl.watches.drop(lw)
	rl.watches.drop(lw) // the reference the loop's last look took
	if err := rl.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if lw := rl.watches.existing("l"); lw != nil {
		t.Error("a watch is still open after Close")
	}
	opened := watches.Load()
	if err := other.ReleaseLock(ctx, "l", "other"); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("AcquireLock waiting across Close: %v, want the lock once released", err)
	}
	if err := rl.ReleaseLock(ctx, "l", "me"); err != nil {
		t.Fatal(err)
	}
	if err := other.AcquireLock(ctx, "l", "other"); err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	if err := rl.AcquireLock(short, "l", "me"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("AcquireLock on a held lock after Close: got %v, want context.DeadlineExceeded", err)
	}
	if got := watches.Load(); got != opened {
		t.Errorf("watches after Close: got %d, want %d, none more", got, opened)
	}
	if err := other.ReleaseLock(ctx, "l", "other"); err != nil {
		t.Fatal(err)
	}
	if err := rl.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	other.Close()
}
