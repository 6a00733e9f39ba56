package resourcelock_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	testingclock "k8s.io/utils/clock/testing"

	"github.com/leaselock/leaselock/internal/testenv"
	"github.com/leaselock/leaselock/resourcelock"
)

// TestServerTokensGrow takes one lock name 100 times, with three lockers:
// two on the real clock, which release most of their locks and leave some
// held, and one whose clock runs an hour ahead, which takes over each Lease
// left held as expired. Every acquisition and renewal has a larger token
// than the one before, whoever makes it: across releases (a new Lease) and
// takeovers (an update of another's).
func TestServerTokensGrow(t *testing.T) {
	c := testenv.Client(t)
	ns := testenv.Namespace(t, c)
	ctx := context.Background()
	lockers := []*resourcelock.ResourceLocker{
		resourcelock.NewResourceLocker(c, ns, resourcelock.WithRetryTimeout(0)),
		resourcelock.NewResourceLocker(c, ns, resourcelock.WithRetryTimeout(0)),
	}
	aheadClock := testingclock.NewFakeClock(time.Now().Add(time.Hour))
	ahead := resourcelock.NewResourceLocker(c, ns, resourcelock.WithRetryTimeout(0), resourcelock.WithClock(aheadClock))
	var prev string
	grew := func(what, token string) {
		t.Helper()
		if prev != "" {
			if cmp, err := resourcelock.CompareTokens(token, prev); err != nil || cmp != 1 {
				t.Fatalf("%s: token %q after %q: got %d, %v, want it larger", what, token, prev, cmp, err)
			}
		}
		prev = token
	}
	takeovers, renewals := 0, 0
	for i := range 100 {
		id := fmt.Sprintf("holder-%d", i)
		rl := lockers[i%2]
		if i%5 == 4 {
			rl = ahead // the Lease of i-1 is still held: a takeover
			takeovers++
		}
		if err := rl.AcquireLock(ctx, "tokens", id); err != nil {
			t.Fatalf("acquisition %d: %v", i, err)
		}
		token, ok := rl.Token("tokens", id)
		if !ok {
			t.Fatalf("acquisition %d: no token", i)
		}
		grew(fmt.Sprintf("acquisition %d", i), token)
		if i%7 == 0 {
			// A renewal that writes the same renewTime changes nothing, and
			// the server keeps the resourceVersion: the fake clock moves.
			aheadClock.Step(time.Millisecond)
			if err := rl.Renew(ctx, "tokens", id); err != nil {
				t.Fatalf("renewal %d: %v", i, err)
			}
			token, _ = rl.Token("tokens", id)
			grew(fmt.Sprintf("renewal %d", i), token)
			renewals++
		}
		if i%5 == 3 {
			continue // left held, for the next to take over
		}
		if err := rl.ReleaseLock(ctx, "tokens", id); err != nil {
			t.Fatalf("release %d: %v", i, err)
		}
	}
	t.Logf("100 acquisitions, %d of them takeovers, and %d renewals: every token larger than the one before", takeovers, renewals)
}

// TestServerRenewAfterTakeover renews a lock that another locker took over
// as expired: the renewal fails at once with ErrNotHeld, and the new
// holder keeps it.
func TestServerRenewAfterTakeover(t *testing.T) {
	c := testenv.Client(t)
	ns := testenv.Namespace(t, c)
	ctx := context.Background()
	rl := resourcelock.NewResourceLocker(c, ns)
	if err := rl.AcquireLock(ctx, "renew-lost", "first"); err != nil {
		t.Fatal(err)
	}
	if err := rl.Renew(ctx, "renew-lost", "first"); err != nil {
		t.Fatalf("Renew of a held lock: %v", err)
	}
	ahead := resourcelock.NewResourceLocker(c, ns, resourcelock.WithClock(testingclock.NewFakeClock(time.Now().Add(time.Hour))))
	if err := ahead.AcquireLock(ctx, "renew-lost", "second"); err != nil {
		t.Fatal(err)
	}
	if err := rl.Renew(ctx, "renew-lost", "first"); !errors.Is(err, resourcelock.ErrNotHeld) {
		t.Fatalf("Renew after a takeover: got %v, want ErrNotHeld", err)
	}
	if got := holderOf(getLease(t, c, ns, "renew-lost")); got != "second" {
		t.Errorf("holder: got %q, want second", got)
	}
	if err := ahead.ReleaseLock(ctx, "renew-lost", "second"); err != nil {
		t.Fatal(err)
	}
}
