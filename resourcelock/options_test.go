package resourcelock_test

import (
	"context"
	"errors"
	"math"
	"testing"
	"time"

	"k8s.io/utils/clock"
	testingclock "k8s.io/utils/clock/testing"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	"github.com/leaselock/leaselock/resourcelock"
)

func TestWithLeaseDuration(t *testing.T) {
	tests := []struct {
		name        string
		d           time.Duration
		want        time.Duration
		wantSeconds int32
	}{
		{name: "1ns rounds up", d: time.Nanosecond, want: time.Second, wantSeconds: 1},
		{name: "500ms rounds up", d: 500 * time.Millisecond, want: time.Second, wantSeconds: 1},
		{name: "1s", d: time.Second, want: time.Second, wantSeconds: 1},
		{name: "1500ms rounds up", d: 1500 * time.Millisecond, want: 2 * time.Second, wantSeconds: 2},
		{name: "2s", d: 2 * time.Second, want: 2 * time.Second, wantSeconds: 2},
		{name: "0 ignored", d: 0, want: resourcelock.DefaultLeaseDuration, wantSeconds: 15},
		{name: "-1s ignored", d: -time.Second, want: resourcelock.DefaultLeaseDuration, wantSeconds: 15},
		{name: "beyond int32 seconds capped", d: math.MaxInt64, want: math.MaxInt32 * time.Second, wantSeconds: math.MaxInt32},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			base := newFake()
			rl := resourcelock.NewResourceLocker(base, unitNS, resourcelock.WithLeaseDuration(tt.d))
			if got := rl.LeaseDuration(); got != tt.want {
				t.Errorf("LeaseDuration(): got %v, want %v", got, tt.want)
			}
			if err := rl.AcquireLock(context.Background(), unitLock, holderMe); err != nil {
				t.Fatalf("AcquireLock: %v", err)
			}
			if got := ptr.Deref(storedLease(t, base).Spec.LeaseDurationSeconds, 0); got != tt.wantSeconds {
				t.Errorf("leaseDurationSeconds written: got %d, want %d", got, tt.wantSeconds)
			}
		})
	}
}

// TestWithRetryTimeout gives up on a Lease held for an hour and checks how
// long it retried on the fake clock. A retry timeout of 0 is a try-lock: one
// attempt (a Create, then the Get that finds the holder), no wait.
func TestWithRetryTimeout(t *testing.T) {
	tests := []struct {
		name     string
		opts     []resourcelock.Option
		want     time.Duration
		wantGets int // -1: any
	}{
		{name: "default", want: resourcelock.DefaultRetryTimeout, wantGets: -1},
		{name: "2s", opts: []resourcelock.Option{resourcelock.WithRetryTimeout(2 * time.Second)}, want: 2 * time.Second, wantGets: -1},
		{name: "-1s ignored", opts: []resourcelock.Option{resourcelock.WithRetryTimeout(-time.Second)}, want: resourcelock.DefaultRetryTimeout, wantGets: -1},
		{name: "0 is a try-lock", opts: []resourcelock.Option{resourcelock.WithRetryTimeout(0)}, want: 0, wantGets: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var log callLog
			clk := testingclock.NewFakeClock(epoch)
			c := counted(newFake(heldLease(holderOther, epoch, 3600)), &log, interceptor.Funcs{})
			rl := resourcelock.NewResourceLocker(c, unitNS, append(tt.opts, resourcelock.WithClock(clk))...)

			// The waits end on multiples of 100ms, as do the retry timeouts,
			// so the last wait ends exactly at the timeout.
			err := goAcquire(t, rl, clk, context.Background(), holderMe).finish(100 * time.Millisecond)
			var held *resourcelock.HeldError
			if !errors.As(err, &held) {
				t.Fatalf("AcquireLock: got %v, want a *HeldError", err)
			}
			if held.Waited != tt.want {
				t.Errorf("HeldError.Waited: got %v, want %v", held.Waited, tt.want)
			}
			if got := clk.Now().Sub(epoch); got != tt.want {
				t.Errorf("time waited on the fake clock: got %v, want %v", got, tt.want)
			}
			if tt.wantGets >= 0 {
				if got := log.count("get"); got != tt.wantGets || log.count("create") != 1 || log.total() != 1+tt.wantGets {
					t.Errorf("requests: got %v, want 1 create and %d get", &log, tt.wantGets)
				}
			}
		})
	}
}

// TestWithRetryInterval checks the first poll (no watch) of a held Lease:
// still waiting a millisecond short of the interval, woken past its 10%
// jitter.
func TestWithRetryInterval(t *testing.T) {
	tests := []struct {
		name string
		opts []resourcelock.Option
		want time.Duration
	}{
		{name: "default", want: resourcelock.DefaultRetryInterval},
		{name: "2s", opts: []resourcelock.Option{resourcelock.WithRetryInterval(2 * time.Second)}, want: 2 * time.Second},
		{name: "0 ignored", opts: []resourcelock.Option{resourcelock.WithRetryInterval(0)}, want: resourcelock.DefaultRetryInterval},
		{name: "-1s ignored", opts: []resourcelock.Option{resourcelock.WithRetryInterval(-time.Second)}, want: resourcelock.DefaultRetryInterval},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := testingclock.NewFakeClock(epoch)
			opts := append(tt.opts, resourcelock.WithClock(clk), resourcelock.WithRetryTimeout(time.Hour), resourcelock.WithoutWatch())
			var log callLog
			rl := resourcelock.NewResourceLocker(counted(newFake(heldLease(holderOther, epoch, 3600)), &log, interceptor.Funcs{}), unitNS, opts...)
			gets := func() int { return log.count("get") }

			call := goAcquire(t, rl, clk, context.Background(), holderMe)
			call.waiting()
			before := gets()
			clk.Step(tt.want - time.Millisecond)
			if call.woke(gets, before) {
				t.Fatalf("woke after %v, want no retry before the %v interval", clk.Now().Sub(epoch), tt.want)
			}
			clk.Step(tt.want/10 + time.Millisecond)
			if !call.woke(gets, before) {
				t.Fatalf("still waiting after %v, want a retry by the %v interval plus 10%% jitter", clk.Now().Sub(epoch), tt.want)
			}
			call.waiting() // the retry found the Lease held and waits again
		})
	}
}

// TestWithRetryIntervalHugeIsCapped gives a "forever" retry interval, too
// long for its jitter to be added to it: capped, it leaves a waiter asleep
// until the Lease expires, instead of reading the Lease in a loop.
func TestWithRetryIntervalHugeIsCapped(t *testing.T) {
	clk := testingclock.NewFakeClock(epoch)
	var log callLog
	c := counted(newFake(heldLease(holderOther, epoch, 3600)), &log, interceptor.Funcs{})
	rl := resourcelock.NewResourceLocker(c, unitNS, resourcelock.WithRetryInterval(math.MaxInt64),
		resourcelock.WithClock(clk), resourcelock.WithRetryTimeout(2*time.Hour), resourcelock.WithoutWatch())
	call := goAcquire(t, rl, clk, context.Background(), holderMe)
	if err := call.finish(time.Hour + time.Millisecond); err != nil {
		t.Fatalf("AcquireLock: %v", err)
	}
	if got := log.count("get"); got != 2 {
		t.Errorf("gets: got %d, want 2 (one before the wait, one after the expiry)", got)
	}
}

func TestNilOptionAndNilClockAreIgnored(t *testing.T) {
	fakeClock := testingclock.NewFakeClock(epoch)
	tests := []struct {
		name         string
		opts         []resourcelock.Option
		wantDuration time.Duration
		wantFake     bool // the clock is fakeClock; else the real clock
	}{
		{name: "nil option", opts: []resourcelock.Option{nil}, wantDuration: resourcelock.DefaultLeaseDuration},
		{name: "nil option among others", opts: []resourcelock.Option{resourcelock.WithLeaseDuration(3 * time.Second), nil}, wantDuration: 3 * time.Second},
		{name: "nil clock", opts: []resourcelock.Option{resourcelock.WithClock(nil)}, wantDuration: resourcelock.DefaultLeaseDuration},
		{name: "nil clock after a fake one", opts: []resourcelock.Option{resourcelock.WithClock(fakeClock), resourcelock.WithClock(nil)}, wantDuration: resourcelock.DefaultLeaseDuration, wantFake: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			base := newFake()
			rl := resourcelock.NewResourceLocker(base, unitNS, tt.opts...)
			if got := rl.LeaseDuration(); got != tt.wantDuration {
				t.Errorf("LeaseDuration(): got %v, want %v", got, tt.wantDuration)
			}
			switch got := rl.Clock(); {
			case tt.wantFake && got != clock.Clock(fakeClock):
				t.Errorf("Clock(): got %T, want the fake clock", got)
			case !tt.wantFake && got != clock.Clock(clock.RealClock{}):
				t.Errorf("Clock(): got %T %v, want clock.RealClock", got, got)
			}
			if got := rl.Namespace(); got != unitNS {
				t.Errorf("Namespace(): got %q, want %q", got, unitNS)
			}
			if err := rl.AcquireLock(context.Background(), unitLock, holderMe); err != nil {
				t.Fatalf("AcquireLock: %v", err)
			}
			if err := rl.ReleaseLock(context.Background(), unitLock, holderMe); err != nil {
				t.Fatalf("ReleaseLock: %v", err)
			}
			if lease := storedLease(t, base); lease != nil {
				t.Errorf("after ReleaseLock: got a Lease held by %q, want none", holderOf(lease))
			}
		})
	}
}

// TestAccessorsOfNilAndZeroLocker: a nil locker answers every accessor as a
// zero-value one does, as Clock always has, instead of panicking; both say
// what their calls then say, an error.
func TestAccessorsOfNilAndZeroLocker(t *testing.T) {
	tests := []struct {
		name string
		rl   *resourcelock.ResourceLocker
	}{
		{name: "nil", rl: nil},
		{name: "zero value", rl: &resourcelock.ResourceLocker{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.rl.Namespace(); got != "" {
				t.Errorf("Namespace: got %q, want \"\"", got)
			}
			if got := tt.rl.LeaseDuration(); got != 0 {
				t.Errorf("LeaseDuration: got %v, want 0", got)
			}
			if got := tt.rl.Clock(); got == nil {
				t.Error("Clock: got nil, want the real clock")
			}
			if at, ok := tt.rl.AcquiredAt("lock", "me"); ok {
				t.Errorf("AcquiredAt: got %v, true, want false", at)
			}
			if err := tt.rl.AcquireLock(context.Background(), "lock", "me"); err == nil {
				t.Error("AcquireLock: got nil, want an error")
			}
		})
	}
}
