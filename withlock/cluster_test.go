package withlock_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilnet "k8s.io/apimachinery/pkg/util/net"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	"github.com/leaselock/leaselock/internal/testenv"
	"github.com/leaselock/leaselock/resourcelock"
	"github.com/leaselock/leaselock/withlock"
)

// rbacRole is the Role that examples/rbac.yaml ships.
const rbacRole = "../examples/rbac.yaml"

// configMapRole lets a user read and write the ConfigMaps of a namespace,
// and nothing more: no list or watch, which a cache would need.
var configMapRole = &rbacv1.Role{
	ObjectMeta: metav1.ObjectMeta{Name: "configmaps"},
	Rules:      []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"get", "update"}}},
}

// asUser returns, for a new namespace, the config of a user granted roles
// there and nothing else, whose requests reqs counts, and an admin client.
func asUser(t *testing.T, user string, reqs *testenv.Requests, roles ...*rbacv1.Role) (*rest.Config, client.Client, string) {
	t.Helper()
	admin := testenv.Client(t)
	ns := testenv.Namespace(t, admin)
	for _, role := range roles {
		testenv.Grant(t, admin, ns, user, role)
	}
	cfg := testenv.UserConfig(t, user)
	cfg.Wrap(testenv.CountingTransport(reqs))
	return cfg, admin, ns
}

// waitUntil polls cond until it holds, and fails t after 10s.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("waited 10s for %s", what)
		}
	}
}

// holdInBackground takes the lock name through l and holds it until the
// returned function is called, which waits for the release.
func holdInBackground(t *testing.T, l *withlock.Locker, name string) (release func()) {
	t.Helper()
	entered, done := make(chan struct{}), make(chan struct{})
	holder := inBackground(func() error {
		return l.WithLock(context.Background(), name, func(context.Context) error {
			close(entered)
			<-done
			return nil
		})
	})
	select {
	case <-entered:
	case <-holder.done:
		t.Fatalf("hold %s: %v", name, holder.err)
	}
	return func() {
		close(done)
		if err := holder.wait(); err != nil {
			t.Errorf("hold %s: %v", name, err)
		}
	}
}

// contend holds the lock name through l while another call of l waits for
// it: the waiter watches the Lease, sends no Get of it (reqs counts l's
// requests), and takes the lock when it is released.
func contend(t *testing.T, l *withlock.Locker, reqs *testenv.Requests, name string) {
	t.Helper()
	release := holdInBackground(t, l, name)
	gets, watches := reqs.Count("get", "leases"), reqs.Count("watch", "leases")
	waiter := inBackground(func() error { return l.WithLock(t.Context(), name, func(context.Context) error { return nil }) })
	waitUntil(t, "the waiter's watch", func() bool { return reqs.Count("watch", "leases") > watches })
	release()
	if err := waiter.wait(); err != nil {
		t.Errorf("waiter: %v", err)
	}
	if got := reqs.Count("get", "leases") - gets; got != 0 {
		t.Errorf("got %d Gets of the Lease while a waiter waited, want 0: it watches", got)
	}
}

// expiredLease writes, as admin, a Lease name in ns that a holder that
// crashed left an hour ago.
func expiredLease(t *testing.T, admin client.Client, ns, name string, labelled bool) {
	t.Helper()
	lease := newLease(name, "crashed_1", time.Now().Add(-time.Hour), 15, labelled)
	lease.Namespace = ns
	if err := admin.Create(context.Background(), lease); err != nil {
		t.Fatalf("create Lease %s: %v", name, err)
	}
}

// TestServerNewForClusterWithTheLeastRole runs a manager as a user granted
// only the Role of examples/rbac.yaml. The Locker from NewForCluster takes
// every path of the lock: create, contend and wait, take over an expired
// Lease, release. Its waiters watch and send no Get of the Lease; it starts
// no informer of Leases (no request for the Leases of every namespace); a
// nested call fails at once. Stopping the manager ends a waiting call with
// ErrClosed, lets the holder release, and leaves no goroutine behind.
func TestServerNewForClusterWithTheLeastRole(t *testing.T) {
	reqs := new(testenv.Requests)
	cfg, admin, ns := asUser(t, "cluster-locker", reqs, testenv.ReadRole(t, rbacRole))
	leaks := goleak.IgnoreCurrent()
	mgr, start := testenv.NewManager(t, cfg)
	l, err := withlock.NewForCluster(mgr, ns, withlock.WithResourceLockerOptions(resourcelock.WithRetryTimeout(time.Minute)))
	if err != nil {
		t.Fatalf("NewForCluster: %v", err)
	}
	stop := start()
	ctx := t.Context()
	nop := func(context.Context) error { return nil }

	// Create and release.
	if err := l.WithLock(ctx, "paths", nop); err != nil {
		t.Fatalf("uncontended: %v", err)
	}
	contend(t, l, reqs, "paths")
	// Take over a Lease that a crashed holder left.
	expiredLease(t, admin, ns, "paths", true)
	if err := l.WithLock(ctx, "paths", nop); err != nil {
		t.Errorf("takeover: %v", err)
	}
	// Nested, through the ctx given to fn.
	err = l.WithLock(ctx, "paths", func(ctx context.Context) error { return l.WithLock(ctx, "paths", nop) })
	if !errors.Is(err, withlock.ErrNestedLock) {
		t.Errorf("nested: got %v, want ErrNestedLock", err)
	}
	if got := reqs.AllNamespaces("", "leases"); got != 0 {
		t.Errorf("got %d requests for the Leases of every namespace, want 0: no informer of Leases", got)
	}

	// Stop the manager while a call waits.
	release := holdInBackground(t, l, "stop")
	watches := reqs.Count("watch", "leases")
	waiter := inBackground(func() error { return l.WithLock(ctx, "stop", nop) })
	waitUntil(t, "the waiter's watch", func() bool { return reqs.Count("watch", "leases") > watches })
	stop()
	if err := waiter.wait(); !errors.Is(err, withlock.ErrClosed) {
		t.Errorf("waiter when the manager stopped: got %v, want ErrClosed", err)
	}
	release() // the holder's release still runs, after Close
	if err := l.WithLock(ctx, "stop", nop); !errors.Is(err, withlock.ErrClosed) {
		t.Errorf("after the manager stopped: got %v, want ErrClosed", err)
	}
	noGoroutineLeft(t, leaks, mgr.GetHTTPClient())
}

// noGoroutineLeft fails t unless every goroutine started since leaks was
// taken ends, but for the connections that hcs keep idle, which it closes:
// a connection is idle only once the stream that used it (a watch's) has
// ended, so it closes them again each time goleak, which waits a second or
// so, finds goroutines left.
func noGoroutineLeft(t *testing.T, leaks goleak.Option, hcs ...*http.Client) {
	t.Helper()
	var err error
	for range 5 {
		for _, hc := range hcs {
			utilnet.CloseIdleConnectionsFor(hc.Transport)
		}
		if err = goleak.Find(leaks); err == nil {
			return
		}
	}
	t.Errorf("goroutines left: %v", err)
}

// counterAsUser starts a manager as a user granted the Role of
// examples/rbac.yaml and configMapRole in a new namespace, whose requests
// reqs counts, and returns it, an admin client, and an object that names a
// ConfigMap there whose count is 1.
func counterAsUser(t *testing.T, user string, reqs *testenv.Requests) (manager.Manager, client.Client, *corev1.ConfigMap) {
	t.Helper()
	cfg, admin, ns := asUser(t, user, reqs, testenv.ReadRole(t, rbacRole), configMapRole)
	meta := metav1.ObjectMeta{Name: "counter", Namespace: ns}
	if err := admin.Create(t.Context(), &corev1.ConfigMap{ObjectMeta: meta, Data: map[string]string{"count": "1"}}); err != nil {
		t.Fatal(err)
	}
	mgr, start := testenv.NewManager(t, cfg)
	start()
	return mgr, admin, &corev1.ConfigMap{ObjectMeta: meta}
}

// TestServerNewForClusterUpdateReadsThroughTheAPIReader updates a
// ConfigMap, through a manager's cache-backed client, as a user who may
// only get and update ConfigMaps in one namespace: the Locker from
// NewForCluster reads through the API reader, and starts no informer.
func TestServerNewForClusterUpdateReadsThroughTheAPIReader(t *testing.T) {
	var reqs testenv.Requests
	mgr, _, cm := counterAsUser(t, "cluster-updater", &reqs)
	l, err := withlock.NewForCluster(mgr, cm.Namespace)
	if err != nil {
		t.Fatalf("NewForCluster: %v", err)
	}
	if err := withlock.Update(t.Context(), l, mgr.GetClient(), cm, increment); err != nil {
		t.Fatalf("Update: %v", err)
	}
	if cm.Data["count"] != "2" {
		t.Errorf("got count %q, want 2", cm.Data["count"])
	}
	if got := reqs.Count("get", "configmaps"); got != 1 {
		t.Errorf("got %d Gets of the ConfigMap, want 1, through the API reader", got)
	}
	if got := reqs.AllNamespaces("", "configmaps"); got != 0 {
		t.Errorf("got %d requests for the ConfigMaps of every namespace, want 0: no informer", got)
	}
}

// TestServerUpdateThroughACacheThatCannotSync updates a ConfigMap through a
// manager's GetClient(), for locks and reads alike, as a user who may only
// get and update ConfigMaps in one namespace: the cache's informer cannot
// list them in every namespace and never syncs. Update returns a read error
// that names the problem before the lease (2s, less a 0.4s margin) runs
// out; it is not ErrLockLost, no lost lock is counted, and the lock is
// released (testenv.Namespace checks).
func TestServerUpdateThroughACacheThatCannotSync(t *testing.T) {
	var reqs testenv.Requests
	mgr, admin, cm := counterAsUser(t, "cache-updater", &reqs)
	reg := prometheus.NewRegistry()
	rl := resourcelock.NewResourceLocker(mgr.GetClient(), cm.Namespace, resourcelock.WithLeaseDuration(2*time.Second), resourcelock.WithMetrics(reg))
	began := time.Now()
	err := withlock.Update(t.Context(), withlock.New(rl), mgr.GetClient(), cm, increment)
	took := time.Since(began)

	if err == nil {
		t.Fatal("Update: got nil, want a read error")
	}
	for _, want := range []string{"get: the read did not finish", "list and watch", "ReadFrom(mgr.GetAPIReader())"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("got %q, want it to say %q", err, want)
		}
	}
	if errors.Is(err, withlock.ErrLockLost) {
		t.Errorf("got %v, want no ErrLockLost", err)
	}
	if took >= 1600*time.Millisecond {
		t.Errorf("Update returned after %v, want before the lease less the margin, 1.6s", took)
	}
	if got := counterSum(t, reg, "leaselock_locks_lost_total"); got != 0 {
		t.Errorf("got %v locks lost counted, want 0", got)
	}
	if err := admin.Get(t.Context(), client.ObjectKeyFromObject(cm), cm); err != nil || cm.Data["count"] != "1" {
		t.Errorf("got count %q (%v), want 1: nothing written", cm.Data["count"], err)
	}
}
