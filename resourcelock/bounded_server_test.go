package resourcelock_test

import (
	"context"
	"errors"
	"net"
	"net/url"
	"strings"
	"syscall"
	"testing"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/leaselock/leaselock/internal/testenv"
	"github.com/leaselock/leaselock/resourcelock"
)

// These tests show against the real API server that no call outlives its
// timeout whatever the client and the server do, with the clients users
// pass first.

// TestServerManagerClientWithLeastRole takes a lock with a manager's
// GetClient(), which reads Leases from an informer cache, as a user with
// only the Role of examples/rbac.yaml: the cluster-wide informer cannot
// list, so no read of the Lease ever finishes. A held lock still ends the
// call within its retry timeout and one request, with an error that says
// why; a lock released during the wait is acquired.
func TestServerManagerClientWithLeastRole(t *testing.T) {
	admin := testenv.Client(t)
	ns := testenv.Namespace(t, admin)
	role := testenv.ReadRole(t, "../examples/rbac.yaml")
	testenv.Grant(t, admin, ns, "least-role-manager", role)
	cfg := testenv.UserConfig(t, "least-role-manager")
	mgr := testenv.StartManager(t, cfg)
	ctx := context.Background()
	holder := resourcelock.NewResourceLocker(admin, ns)
	if err := holder.AcquireLock(ctx, "least-role", "holder"); err != nil {
		t.Fatal(err)
	}
	const timeout = 2 * time.Second
	rl := resourcelock.NewResourceLocker(mgr.GetClient(), ns, resourcelock.WithRetryTimeout(timeout),
		resourcelock.WithRetryInterval(100*time.Millisecond))

	start := time.Now()
	err := rl.AcquireLock(ctx, "least-role", "waiter")
	if took := time.Since(start); took > timeout+lastRequest {
		t.Errorf("AcquireLock on a held lock returned after %v, want within its retry timeout %v plus one request", took, timeout)
	}
	if !errors.Is(err, resourcelock.ErrLockHeld) {
		t.Fatalf("AcquireLock on a held lock: got %v, want ErrLockHeld", err)
	}
	for _, want := range []string{ns + "/least-role", "could not be read", "informer cache"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}

	release := time.AfterFunc(500*time.Millisecond, func() {
		if err := holder.ReleaseLock(ctx, "least-role", "holder"); err != nil {
			t.Errorf("release: %v", err)
		}
	})
	defer release.Stop()
	start = time.Now()
	if err := rl.AcquireLock(ctx, "least-role", "waiter"); err != nil {
		t.Fatalf("AcquireLock of a lock released during the wait: %v", err)
	}
	if took := time.Since(start); took > timeout+lastRequest {
		t.Errorf("AcquireLock returned after %v, want within its retry timeout %v plus one request", took, timeout)
	}
	if err := rl.ReleaseLock(ctx, "least-role", "waiter"); err != nil {
		t.Fatal(err)
	}
}

// TestServerPausedAcquireEndsByItsTimeout pauses the API server (SIGSTOP)
// while two callers wait on a held lock, one polling and one watching:
// both end by their retry timeout and one request, and their errors name
// the lock.
func TestServerPausedAcquireEndsByItsTimeout(t *testing.T) {
	c := testenv.Client(t)
	ns := testenv.Namespace(t, c)
	ctx := context.Background()
	holder := resourcelock.NewResourceLocker(c, ns)
	if err := holder.AcquireLock(ctx, "paused", "holder"); err != nil {
		t.Fatal(err)
	}
	const timeout = 2 * time.Second
	waiters := map[string]*resourcelock.ResourceLocker{
		"polling":  resourcelock.NewResourceLocker(c, ns, resourcelock.WithoutWatch(), resourcelock.WithRetryTimeout(timeout), resourcelock.WithRetryInterval(100*time.Millisecond)),
		"watching": resourcelock.NewResourceLocker(c, ns, resourcelock.WithRetryTimeout(timeout)),
	}
	type result struct {
		name string
		err  error
		took time.Duration
	}
	results := make(chan result, len(waiters))
	start := time.Now()
	for name, rl := range waiters {
		go func() {
			err := rl.AcquireLock(ctx, "paused", name)
			results <- result{name, err, time.Since(start)}
		}()
	}
	time.Sleep(300 * time.Millisecond)
	resume := testenv.PauseAPIServer(t)
	for range waiters {
		r := <-results
		if r.err == nil {
			t.Errorf("%s waiter: acquired a held lock", r.name)
			continue
		}
		if r.took > timeout+lastRequest {
			t.Errorf("%s waiter: returned after %v, want within its retry timeout %v plus one request", r.name, r.took, timeout)
		}
		if !strings.Contains(r.err.Error(), ns+"/paused") {
			t.Errorf("%s waiter: error %q does not name the lock", r.name, r.err)
		}
	}
	resume()
	if err := holder.ReleaseLock(ctx, "paused", "holder"); err != nil {
		t.Fatal(err)
	}
}

// TestServerRefusedConnectionsEndAtTheTimeout takes a lock from a server
// that refuses connections: the call ends at its retry timeout, not twice
// that, since a Create that was never sent needs no clean-up.
func TestServerRefusedConnectionsEndAtTheTimeout(t *testing.T) {
	cfg := testenv.Config(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := l.Addr().String()
	l.Close()
	cfg.Host = (&url.URL{Scheme: "https", Host: closed}).String()
	c, err := client.New(cfg, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	const timeout = time.Second
	rl := resourcelock.NewResourceLocker(c, "refused", resourcelock.WithRetryTimeout(timeout))
	start := time.Now()
	err = rl.AcquireLock(context.Background(), "refused", "me")
	if took := time.Since(start); took > timeout+500*time.Millisecond {
		t.Errorf("AcquireLock returned after %v, want about its retry timeout %v", took, timeout)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("AcquireLock: got %v, want the refused connection", err)
	}
	if !strings.Contains(err.Error(), "refused/refused") {
		t.Errorf("error %q does not name the lock", err)
	}
}

// TestServerRefusedWatchIsSentOnce waits on a held lock as a user without
// the watch verb: the refused watch is not sent again for the next
// waiter, and the waiters poll.
func TestServerRefusedWatchIsSentOnce(t *testing.T) {
	admin := testenv.Client(t)
	ns := testenv.Namespace(t, admin)
	cfg := testenv.RoleConfig(t, admin, ns, "no-watch", testenv.LeaseRule("get", "create", "update", "delete"))
	var reqs testenv.Requests
	cfg.Wrap(testenv.CountingTransport(&reqs))
	c, err := client.NewWithWatch(cfg, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	holder := resourcelock.NewResourceLocker(admin, ns)
	if err := holder.AcquireLock(ctx, "no-watch", "holder"); err != nil {
		t.Fatal(err)
	}
	rl := resourcelock.NewResourceLocker(c, ns, resourcelock.WithRetryTimeout(500*time.Millisecond),
		resourcelock.WithRetryInterval(50*time.Millisecond))
	for range 2 {
		if err := rl.AcquireLock(ctx, "no-watch", "waiter"); !errors.Is(err, resourcelock.ErrLockHeld) {
			t.Fatalf("AcquireLock: got %v, want ErrLockHeld", err)
		}
	}
	if got := reqs.Count("watch", "leases"); got != 1 {
		t.Errorf("watches: got %d, want 1: a refused watch is remembered", got)
	}
	if got := reqs.Count("get", "leases"); got < 10 {
		t.Errorf("gets: got %d, want 10 or more: the waiters poll", got)
	}
	if err := holder.ReleaseLock(ctx, "no-watch", "holder"); err != nil {
		t.Fatal(err)
	}
}
