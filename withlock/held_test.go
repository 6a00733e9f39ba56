package withlock_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	"github.com/leaselock/leaselock/resourcelock"
	"github.com/leaselock/leaselock/withlock"
)

// TestNestedLockFailsAtOnce runs a call inside fn for the lock fn's call
// holds: it returns ErrNestedLock, naming the lock and the outer holder,
// at once and before any request, through any Locker on the namespace.
// Other locks nest as before. The lockers try once (retry timeout 0), so
// that a nested call that were not caught would report ErrLockHeld.
func TestNestedLockFailsAtOnce(t *testing.T) {
	nop := func(context.Context) error { return nil }
	counterLock := withlock.LockName(configMapKind, client.ObjectKeyFromObject(named()))
	tests := []struct {
		name  string
		outer string // the lock held around the nested call
		// nested runs inside the outer fn, with its ctx.
		nested     func(ctx context.Context, f *fixture, l *withlock.Locker) error
		wantNested bool
		// wantSent is how many requests the nested call sends: none but
		// for another lock it takes first.
		wantSent int
	}{
		{"WithLock, same Locker", "job", func(ctx context.Context, _ *fixture, l *withlock.Locker) error {
			return l.WithLock(ctx, "job", nop)
		}, true, 0},
		{"WithLock, another Locker on the namespace", "job", func(ctx context.Context, f *fixture, _ *withlock.Locker) error {
			return withlock.New(f.locker(resourcelock.WithRetryTimeout(0))).WithLock(ctx, "job", nop)
		}, true, 0},
		{"Do", "job", func(ctx context.Context, f *fixture, _ *withlock.Locker) error {
			return withlock.Do(ctx, f.locker(resourcelock.WithRetryTimeout(0)), "job", nop)
		}, true, 0},
		{"Update of the object whose lock is held", counterLock, func(ctx context.Context, f *fixture, l *withlock.Locker) error {
			return withlock.Update(ctx, l, f.c, named(), increment)
		}, true, 0},
		{"a ctx derived from fn's", "job", func(ctx context.Context, _ *fixture, l *withlock.Locker) error {
			ctx, cancel := context.WithTimeout(ctx, time.Hour)
			defer cancel()
			return l.WithLock(ctx, "job", nop)
		}, true, 0},
		{"the outermost of two locks", "job", func(ctx context.Context, _ *fixture, l *withlock.Locker) error {
			return l.WithLock(ctx, "middle", func(ctx context.Context) error { return l.WithLock(ctx, "job", nop) })
		}, true, 2}, // the create and delete of "middle"
		{"another name", "job", func(ctx context.Context, _ *fixture, l *withlock.Locker) error {
			return l.WithLock(ctx, "other", nop)
		}, false, 0},
		{"the same name in another namespace", "job", func(ctx context.Context, f *fixture, _ *withlock.Locker) error {
			rl := resourcelock.NewResourceLocker(f.c, "elsewhere", resourcelock.WithClock(f.clock), resourcelock.WithRetryTimeout(0))
			return withlock.Do(ctx, rl, "job", nop)
		}, false, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, interceptor.Funcs{}, counter("1"))
			l := withlock.New(f.locker(resourcelock.WithRetryTimeout(0)))
			var nestedErr error
			var outerHolder string
			var sent []string
			err := l.WithLock(t.Context(), tt.outer, func(ctx context.Context) error {
				outerHolder = f.holder(t, tt.outer)
				before := len(f.calls.all())
				nestedErr = tt.nested(ctx, f, l)
				sent = f.calls.all()[before:]
				return nil
			})
			if err != nil {
				t.Fatalf("outer WithLock: %v", err)
			}
			if !tt.wantNested {
				if nestedErr != nil {
					t.Errorf("nested call: got %v, want nil", nestedErr)
				}
				return
			}
			if !errors.Is(nestedErr, withlock.ErrNestedLock) {
				t.Fatalf("nested call: got %v, want ErrNestedLock", nestedErr)
			}
			for _, want := range []string{"lock " + testNamespace + "/" + tt.outer + " ", outerHolder} {
				if !strings.Contains(nestedErr.Error(), want) {
					t.Errorf("nested call: got %q, want it to name %q", nestedErr, want)
				}
			}
			if len(sent) != tt.wantSent {
				t.Errorf("nested call: got requests %q, want %d", sent, tt.wantSent)
			}
			f.assertNoLease(t)
		})
	}
}
