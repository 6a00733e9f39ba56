package examples_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"go.uber.org/goleak"
	coordinationv1 "k8s.io/api/coordination/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	testingclock "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/leaselock/leaselock/internal/testenv"
	"github.com/leaselock/leaselock/resourcelock"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(testenv.Main(m), testenv.IgnoredGoroutines()...)
}

// lockRole reads the Role in rbac.yaml.
func lockRole(t *testing.T) *rbacv1.Role { return testenv.ReadRole(t, "rbac.yaml") }

// lockAsUser grants the Role's rules, less the verb drop, to a new user in a
// new namespace, and runs every path of the lock as that user, with a client
// that can watch: create, contend, take over an expired Lease, release. Then
// it removes the expired Leases, as withlock's lockers do now and then. It
// returns the first error of the lock, the error of the removal, and the
// Gets of Leases the user sent while contending.
func lockAsUser(t *testing.T, user string, drop string) (gets int, lockErr, removeErr error) {
	t.Helper()
	admin := testenv.Client(t)
	ns := testenv.Namespace(t, admin)
	ctx := context.Background()

	role := lockRole(t)
	for i := range role.Rules {
		role.Rules[i].Verbs = slices.DeleteFunc(slices.Clone(role.Rules[i].Verbs), func(v string) bool { return v == drop })
	}
	testenv.Grant(t, admin, ns, user, role)
	var reqs testenv.Requests
	cfg := testenv.UserConfig(t, user)
	cfg.Wrap(testenv.CountingTransport(&reqs))
	c, err := client.NewWithWatch(cfg, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	gets = -1 // until the contended acquire has run
	// Clean up as admin whatever the user could not release.
	t.Cleanup(func() {
		_ = admin.DeleteAllOf(context.Background(), &coordinationv1.Lease{}, client.InNamespace(ns))
	})

	a := resourcelock.NewResourceLocker(c, ns, resourcelock.WithLeaseDuration(time.Second), resourcelock.WithRetryTimeout(0))
	if err := a.AcquireLock(ctx, "rbac", "a"); err != nil {
		return gets, err, nil
	}
	// Contend: the Create fails with AlreadyExists, then a watch that sends
	// the Lease first; where watch is forbidden, a Get and polling.
	reqs.Reset()
	b := resourcelock.NewResourceLocker(c, ns, resourcelock.WithRetryTimeout(500*time.Millisecond), resourcelock.WithRetryInterval(50*time.Millisecond))
	if err := b.AcquireLock(ctx, "rbac", "b"); !errors.Is(err, resourcelock.ErrLockHeld) {
		return gets, err, nil
	}
	gets = reqs.Count("get", "leases")
	// Take over: b's clock runs past a's one-second lease, then an Update.
	ahead := resourcelock.NewResourceLocker(c, ns, resourcelock.WithClock(testingclock.NewFakeClock(time.Now().Add(time.Minute))), resourcelock.WithRetryTimeout(0))
	if err := ahead.AcquireLock(ctx, "rbac", "b"); err != nil {
		return gets, err, nil
	}
	if err := ahead.ReleaseLock(ctx, "rbac", "b"); err != nil {
		return gets, err, nil
	}
	_, removeErr = ahead.RemoveExpired(ctx, 0)
	return gets, nil, removeErr
}

// TestRBACRoleIsEnoughAndLeast shows that the Role in rbac.yaml lets a user
// take every path of the lock and remove expired Leases, and that each of
// its verbs is needed: all but watch and list for the lock to work at all,
// watch for waiters to watch rather than poll, and list for the removal.
func TestRBACRoleIsEnoughAndLeast(t *testing.T) {
	gets, lockErr, removeErr := lockAsUser(t, "lock-user", "")
	if lockErr != nil || removeErr != nil {
		t.Fatalf("with the Role in rbac.yaml: lock: %v, removal: %v", lockErr, removeErr)
	}
	if gets != 0 {
		t.Errorf("with the Role in rbac.yaml: a waiter sent %d Gets of the Lease, want 0: it watches", gets)
	}
	for _, verb := range lockRole(t).Rules[0].Verbs {
		t.Run("without "+verb, func(t *testing.T) {
			gets, lockErr, removeErr := lockAsUser(t, "lock-user-no-"+verb, verb)
			switch verb {
			case "watch":
				if lockErr != nil || removeErr != nil {
					t.Errorf("without verb watch: lock: %v, removal: %v, want the lock to work by polling", lockErr, removeErr)
				}
				// The watch is refused: the waiter reads the Lease, then
				// polls it every 50ms for half a second, within a's one-second lease.
				if gets < 2 {
					t.Errorf("without verb watch: a waiter sent %d Gets of the Lease, want 2 or more: it polls", gets)
				}
			case "list":
				// The lock never lists; the removal does, and nothing else.
				if lockErr != nil {
					t.Errorf("without verb list: got %v, want the lock to work", lockErr)
				}
				if !apierrors.IsForbidden(removeErr) {
					t.Errorf("without verb list: removal got %v, want Forbidden", removeErr)
				}
			default:
				if !apierrors.IsForbidden(lockErr) {
					t.Errorf("without verb %q: got %v, want Forbidden", verb, lockErr)
				}
			}
		})
	}
}

// TestRBACWatchVerbIsUsed shows that a waiter with the Role's rules does
// watch: its watch request, which sends the Lease first (a watch-list), is
// allowed, and counted.
func TestRBACWatchVerbIsUsed(t *testing.T) {
	admin := testenv.Client(t)
	ns := testenv.Namespace(t, admin)
	ctx := context.Background()
	testenv.Grant(t, admin, ns, "watcher", lockRole(t))
	holder := resourcelock.NewResourceLocker(admin, ns)
	if err := holder.AcquireLock(ctx, "watched", "holder"); err != nil {
		t.Fatal(err)
	}
	defer holder.ReleaseLock(ctx, "watched", "holder")

	var reqs testenv.Requests
	cfg := testenv.UserConfig(t, "watcher")
	cfg.Wrap(testenv.CountingTransport(&reqs))
	c, err := client.NewWithWatch(cfg, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	waiter := resourcelock.NewResourceLocker(c, ns, resourcelock.WithRetryTimeout(300*time.Millisecond))
	if err := waiter.AcquireLock(ctx, "watched", "waiter"); !errors.Is(err, resourcelock.ErrLockHeld) {
		t.Fatalf("got %v, want ErrLockHeld", err)
	}
	if got := reqs.Count("watch", "leases"); got != 1 {
		t.Errorf("watch requests: got %d, want 1", got)
	}
	if got := reqs.Count("get", "leases"); got != 0 {
		t.Errorf("get requests while watching: got %d, want 0: the watch sends the Lease first", got)
	}
}
