package resourcelock_test

import (
	"context"
	"errors"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	testingclock "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	"github.com/leaselock/leaselock/resourcelock"
)

func TestRenewIsOneUpdate(t *testing.T) {
	base := newFake()
	var log callLog
	clk := testingclock.NewFakeClock(epoch)
	rl := resourcelock.NewResourceLocker(counted(base, &log, interceptor.Funcs{}), unitNS, resourcelock.WithClock(clk))
	ctx := context.Background()
	if err := rl.AcquireLock(ctx, unitLock, holderMe); err != nil {
		t.Fatal(err)
	}
	first, ok := rl.Token(unitLock, holderMe)
	if !ok || first == "" {
		t.Fatalf("Token after AcquireLock: got %q, %v, want the Lease's resourceVersion", first, ok)
	}
	before := log.total()
	for i := range 3 {
		clk.Step(5 * time.Second)
		if err := rl.Renew(ctx, unitLock, holderMe); err != nil {
			t.Fatalf("Renew %d: %v", i, err)
		}
	}
	if got := log.total() - before; got != 3 || log.count("update") != 3 {
		t.Errorf("requests of 3 renewals: got %d (%v), want 3 Updates and no read", got, &log)
	}
	lease := storedLease(t, base)
	if got, want := lease.Spec.RenewTime.Time, epoch.Add(15*time.Second); !got.Equal(want) {
		t.Errorf("renewTime: got %v, want %v, the last renewal's", got, want)
	}
	last, _ := rl.Token(unitLock, holderMe)
	if last != lease.ResourceVersion {
		t.Errorf("Token after renewals: got %q, want the stored resourceVersion %q", last, lease.ResourceVersion)
	}
	if c, err := resourcelock.CompareTokens(last, first); err != nil || c != 1 {
		t.Errorf("CompareTokens(last %q, first %q): got %d, %v, want 1", last, first, c, err)
	}
	if at, _ := rl.AcquiredAt(unitLock, holderMe); !at.Equal(epoch.Add(15 * time.Second)) {
		t.Errorf("AcquiredAt after renewals: got %v, want the last renewal's time", at)
	}
	if err := rl.ReleaseLock(ctx, unitLock, holderMe); err != nil {
		t.Fatal(err)
	}
	if _, ok := rl.Token(unitLock, holderMe); ok {
		t.Error("Token after release: got a token, want none")
	}
}

func TestRenewOfALockNotHeld(t *testing.T) {
	ctx := context.Background()
	t.Run("no record", func(t *testing.T) {
		var log callLog
		rl := resourcelock.NewResourceLocker(counted(newFake(), &log, interceptor.Funcs{}), unitNS)
		err := rl.Renew(ctx, unitLock, holderMe)
		if !errors.Is(err, resourcelock.ErrNotHeld) {
			t.Fatalf("Renew without an acquisition: got %v, want ErrNotHeld", err)
		}
		if log.total() != 0 {
			t.Errorf("requests: got %v, want none", &log)
		}
	})
	t.Run("taken over", func(t *testing.T) {
		base := newFake()
		var log callLog
		clk := testingclock.NewFakeClock(epoch)
		rl := resourcelock.NewResourceLocker(counted(base, &log, interceptor.Funcs{}), unitNS, resourcelock.WithClock(clk))
		if err := rl.AcquireLock(ctx, unitLock, holderMe); err != nil {
			t.Fatal(err)
		}
		// Another locker, whose clock is past the lease, takes it over.
		other := resourcelock.NewResourceLocker(base, unitNS, resourcelock.WithClock(testingclock.NewFakeClock(epoch.Add(time.Minute))))
		if err := other.AcquireLock(ctx, unitLock, holderOther); err != nil {
			t.Fatal(err)
		}
		err := rl.Renew(ctx, unitLock, holderMe)
		if !errors.Is(err, resourcelock.ErrNotHeld) {
			t.Fatalf("Renew of a Lease taken over: got %v, want ErrNotHeld", err)
		}
		if got := log.count("update"); got != 1 {
			t.Errorf("updates: got %d, want 1, refused, and then the read that found the new holder", got)
		}
		if got := holderOf(storedLease(t, base)); got != holderOther {
			t.Errorf("holder: got %q, want %q", got, holderOther)
		}
	})
	t.Run("server error", func(t *testing.T) {
		base := newFake()
		rl := resourcelock.NewResourceLocker(interceptor.NewClient(base, interceptor.Funcs{
			Update: func(context.Context, client.WithWatch, client.Object, ...client.UpdateOption) error {
				return apierrors.NewServiceUnavailable("etcd leader changed")
			},
		}), unitNS)
		if err := rl.AcquireLock(ctx, unitLock, holderMe); err != nil {
			t.Fatal(err)
		}
		err := rl.Renew(ctx, unitLock, holderMe)
		if errors.Is(err, resourcelock.ErrNotHeld) || !apierrors.IsServiceUnavailable(err) {
			t.Fatalf("Renew with the server unavailable: got %v, want the 503, not ErrNotHeld", err)
		}
		if _, ok := rl.Token(unitLock, holderMe); !ok {
			t.Error("Token after a failed renewal: got none, want the lock still recorded")
		}
	})
}
