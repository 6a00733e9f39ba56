package torture_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"

	"github.com/leaselock/leaselock/internal/testenv"
	"github.com/leaselock/leaselock/resourcelock"
	"github.com/leaselock/leaselock/withlock"
)

// skewedClock is the real clock shifted by offset: the clock of a node whose
// time is off. Timers and sleeps last real durations, as they do on such a
// node.
type skewedClock struct {
	clock.RealClock
	offset time.Duration
}

var _ clock.WithTicker = skewedClock{}

func (c skewedClock) Now() time.Time                  { return time.Now().Add(c.offset) }
func (c skewedClock) Since(t time.Time) time.Duration { return c.Now().Sub(t) }

// TestTortureClockSkew: a holder and a waiter whose clocks disagree by a few
// seconds, either way, and by an hour. The holder hangs in its critical
// section; the waiter takes the lock over when it judges the Lease expired.
//
// Expiry is judged on the waiter's clock: renewTime (written from the
// holder's clock) plus the duration, or a full duration after the waiter
// first saw the Lease unchanged, whichever comes first. So in real time the
// takeover is never earlier than
//
//	min(renewTime + duration - waiter offset, first seen + duration)
//
// and the test asserts exactly that, from the renewTime the takeover wrote.
// A waiter ahead of the holder by s takes over up to s before the holder's
// own clock says its lease ends; that is the documented limit, and the
// holder's protection is withlock's safety margin: with a margin larger than
// the skew, the holder's ctx is cancelled before the takeover. The test
// asserts that too (the margin is 4s of a 5s lease, the skew at most 3s).
func TestTortureClockSkew(t *testing.T) {
	tests := []struct {
		name           string
		holder, waiter time.Duration
	}{
		{"waiter 3s ahead", 0, 3 * time.Second},
		{"waiter 3s behind", 0, -3 * time.Second},
		{"holder 3s ahead", 3 * time.Second, 0},
		{"holder 3s behind", -3 * time.Second, 0},
		{"holder 1h ahead", time.Hour, 0},
	}
	for _, tt := range tests {
		for _, mode := range waitModes {
			t.Run(tt.name+"/"+mode.name, func(t *testing.T) {
				t.Parallel()
				testSkew(t, tt.holder, tt.waiter, mode.opts)
			})
		}
	}
}

// waitModes are the two ways a waiter waits: on a watch of the Lease, which
// wakes it when the Lease expires, and polling, which judges the Lease at
// every retry interval and so shows an expiry judged too early.
var waitModes = []struct {
	name string
	opts []resourcelock.Option
}{
	{"watch", nil},
	{"poll", []resourcelock.Option{resourcelock.WithoutWatch()}},
}

func testSkew(t *testing.T, holderOffset, waiterOffset time.Duration, opts []resourcelock.Option) {
	const (
		lease  = 5 * time.Second
		margin = 4 * time.Second
		name   = "skew"
	)
	c := testenv.Client(t)
	ns := testenv.Namespace(t, c)
	ctx := t.Context()
	hrl := resourcelock.NewResourceLocker(c, ns, resourcelock.WithClock(skewedClock{offset: holderOffset}),
		resourcelock.WithLeaseDuration(lease))
	// The holder hangs in its critical section: without renewal its lease
	// ends, and the waiter's takeover is what the test times. (Renewed, a
	// holder whose process runs keeps its lock, as it should.)
	holder := withlock.New(hrl, withlock.WithIdentity("holder"), withlock.WithSafetyMargin(margin), withlock.WithoutRenewal())
	waiter := resourcelock.NewResourceLocker(testenv.Client(t), ns, append([]resourcelock.Option{
		resourcelock.WithClock(skewedClock{offset: waiterOffset}),
		resourcelock.WithLeaseDuration(lease), resourcelock.WithRetryInterval(200 * time.Millisecond),
		resourcelock.WithRetryTimeout(4 * lease),
	}, opts...)...)

	acquired, takenOver := make(chan struct{}), make(chan struct{})
	var told time.Time // when the holder's ctx was cancelled
	holderErr := make(chan error, 1)
	go func() {
		holderErr <- holder.WithLock(ctx, name, func(ctx context.Context) error {
			close(acquired)
			select {
			case <-ctx.Done():
			case <-time.After(4 * lease):
				return errNeverTold
			}
			told = time.Now()
			// A holder that does not stop when told: it keeps the Lease
			// until the waiter took it, so the waiter must take it over.
			select {
			case <-takenOver:
			case <-time.After(time.Minute):
			}
			return nil
		})
	}()
	select {
	case <-acquired:
	case err := <-holderErr:
		t.Fatalf("holder: %v", err)
	}
	held := getLease(t, c, ns, name)
	renew := held.Spec.RenewTime.Time

	waitStart := time.Now()
	err := waiter.AcquireLock(ctx, name, "waiter")
	close(takenOver)
	if err != nil {
		<-holderErr
		t.Fatalf("waiter: got %v, want the lock taken over", err)
	}
	taken := getLease(t, c, ns, name)
	if got := ptr.Deref(taken.Spec.HolderIdentity, ""); got != "waiter" || taken.UID != held.UID {
		t.Fatalf("after the takeover: Lease %s held by %q, want %s held by waiter", taken.UID, got, held.UID)
	}
	// The takeover's renewTime is the waiter's clock when it wrote; less the
	// offset, real time. Both sides are truncated to the microsecond, as a
	// Lease stores time.
	claim := taken.Spec.RenewTime.Add(-waiterOffset)
	earliest := renew.Add(lease - waiterOffset)
	if seen := waitStart.Add(lease); seen.Before(earliest) {
		earliest = seen
	}
	earliest = earliest.Truncate(time.Microsecond)
	if claim.Before(earliest) {
		t.Errorf("taken over at %s, before the earliest the lease allows, %s", stamp(claim.UnixNano()), stamp(earliest.UnixNano()))
	}
	ownDeadline := renew.Add(lease - holderOffset) // when the holder's clock reaches its expiry
	t.Logf("holder offset %v, waiter offset %v: taken over %v after the waiter began to wait, %v before the holder's own clock ends its lease",
		holderOffset, waiterOffset, claim.Sub(waitStart).Round(time.Millisecond), ownDeadline.Sub(claim).Round(time.Millisecond))

	err = <-holderErr
	if !errors.Is(err, withlock.ErrLockLost) || errors.Is(err, errNeverTold) {
		t.Errorf("holder: got %v, want ErrLockLost, with its ctx cancelled", err)
	}
	// The holder has released by now, with preconditions on the version it
	// held: the Lease the waiter took over must still be there, the waiter's.
	if after := getLease(t, c, ns, name); after == nil || after.UID != taken.UID || ptr.Deref(after.Spec.HolderIdentity, "") != "waiter" {
		t.Errorf("after the holder's release: got %v, want the waiter's Lease %s: the stale holder's release deleted a takeover", describe(after), taken.UID)
	}
	overlaps := 0
	if told.After(claim) {
		overlaps++
		t.Errorf("the holder's ctx was cancelled at %s, after the takeover at %s: two holders",
			stamp(told.UnixNano()), stamp(claim.UnixNano()))
	}
	if err := waiter.ReleaseLock(context.Background(), name, "waiter"); err != nil {
		t.Fatalf("waiter: release: %v", err)
	}
	checkLeases(t, c, ns, nil)
	figures.add(func(s *summary) {
		s.skewCases++
		s.histories.overlaps += overlaps
	})
}

// TestTortureFarFutureRenewTime: a Lease whose renewTime lies an hour ahead
// (its holder's clock runs far ahead, and it is gone) must not block a
// waiter forever: the waiter takes it over once it has seen it unchanged for
// a full lease duration, and no sooner. Watching and polling waiters both.
func TestTortureFarFutureRenewTime(t *testing.T) {
	for _, mode := range waitModes {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			const (
				name  = "far-future"
				lease = 2 * time.Second
			)
			c := testenv.Client(t)
			ns := testenv.Namespace(t, c)
			ctx := t.Context()
			future := metav1.NewMicroTime(time.Now().Add(time.Hour))
			ghost := &coordinationv1.Lease{
				ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
				Spec: coordinationv1.LeaseSpec{
					HolderIdentity: ptr.To("ghost"), LeaseDurationSeconds: ptr.To(int32(lease / time.Second)),
					AcquireTime: &future, RenewTime: &future,
				},
			}
			if err := c.Create(ctx, ghost); err != nil {
				t.Fatalf("create the far-future Lease: %v", err)
			}
			rl := resourcelock.NewResourceLocker(testenv.Client(t), ns, append([]resourcelock.Option{
				resourcelock.WithLeaseDuration(lease), resourcelock.WithRetryInterval(200 * time.Millisecond),
				resourcelock.WithRetryTimeout(10 * lease),
			}, mode.opts...)...)

			began := time.Now()
			if err := rl.AcquireLock(ctx, name, "waiter"); err != nil {
				t.Fatalf("AcquireLock of a Lease renewed an hour ahead: got %v, want it taken over", err)
			}
			taken := getLease(t, c, ns, name)
			claim := taken.Spec.RenewTime.Time
			if earliest := began.Add(lease).Truncate(time.Microsecond); claim.Before(earliest) {
				t.Errorf("taken over %v after the waiter began, want at least the lease duration %v", claim.Sub(began), lease)
			}
			t.Logf("%s: the Lease renewed an hour ahead was taken over %v after the waiter began", mode.name, claim.Sub(began).Round(time.Millisecond))
			if err := rl.ReleaseLock(ctx, name, "waiter"); err != nil {
				t.Fatalf("release: %v", err)
			}
			checkLeases(t, c, ns, nil)
			figures.add(func(s *summary) { s.skewCases++ })
		})
	}
}

// errNeverTold is the holder's error when its ctx was not cancelled within
// four lease durations: withlock never told it that its lease ran out.
var errNeverTold = errors.New("the holder's ctx was never cancelled")

// describe names a Lease and its holder, or says there is none.
func describe(lease *coordinationv1.Lease) string {
	if lease == nil {
		return "no Lease"
	}
	return fmt.Sprintf("Lease %s held by %q", lease.UID, ptr.Deref(lease.Spec.HolderIdentity, ""))
}
