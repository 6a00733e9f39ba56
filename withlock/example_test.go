package withlock_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/manager/signals"

	"github.com/leaselock/leaselock/resourcelock"
	"github.com/leaselock/leaselock/withlock"
)

func ExampleLocker_WithLock() {
	ctx := context.Background()
	// In a real program c comes from your manager or client.New.
	c := fake.NewClientBuilder().WithScheme(scheme.Scheme).Build()
	l := withlock.New(resourcelock.NewResourceLocker(c, "default"), withlock.WithIdentity("worker-1"))

	err := l.WithLock(ctx, "nightly-report", func(ctx context.Context) error {
		// Only one replica at a time gets here, and the lock is renewed
		// while it does. Pass ctx to every request: it is cancelled, with
		// cause ErrLockLost, if renewals fail until the lease could expire
		// or another holder takes the lock.
		fmt.Println("writing the report")
		return nil
	})
	if err != nil {
		fmt.Println("report:", err)
		return
	}

	var leases coordinationv1.LeaseList
	_ = c.List(ctx, &leases, client.InNamespace("default"))
	fmt.Println("leases left:", len(leases.Items))
	// Output:
	// writing the report
	// leases left: 0
}

func ExampleDo() {
	ctx := context.Background()
	c := fake.NewClientBuilder().WithScheme(scheme.Scheme).Build()
	// A retry timeout of 0 makes every acquire a try-lock.
	rl := resourcelock.NewResourceLocker(c, "default", resourcelock.WithRetryTimeout(0))
	nop := func(context.Context) error { return nil }

	err := withlock.Do(ctx, rl, "settings", func(fnCtx context.Context) error {
		// Every call holds the lock under a holder ID of its own, so a call
		// of another call chain (ctx, not fnCtx) is turned away, even from
		// this process.
		err := withlock.Do(ctx, rl, "settings", nop)
		fmt.Println("other call turned away:", errors.Is(err, resourcelock.ErrLockHeld))
		// fnCtx records the lock: a nested call for it, which would wait
		// for itself, fails at once.
		err = withlock.Do(fnCtx, rl, "settings", nop)
		fmt.Println("nested call refused:", errors.Is(err, withlock.ErrNestedLock))
		return nil
	})
	fmt.Println("first call:", err)
	// Output:
	// other call turned away: true
	// nested call refused: true
	// first call: <nil>
}

func ExampleUpdate() {
	ctx := context.Background()
	c := fake.NewClientBuilder().WithScheme(scheme.Scheme).WithObjects(&corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "counter", Namespace: "default"},
		Data:       map[string]string{"count": "41"},
	}).Build()
	l := withlock.New(resourcelock.NewResourceLocker(c, "default"))

	// Name the object; Update reads the rest.
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "counter", Namespace: "default"}}
	err := withlock.Update(ctx, l, c, cm, func(cm *corev1.ConfigMap) error {
		// Derive the change from the object given: mutate may run again,
		// on a fresh read, after a Conflict.
		n, err := strconv.Atoi(cm.Data["count"])
		if err != nil {
			return err
		}
		cm.Data["count"] = strconv.Itoa(n + 1)
		return nil
	})
	if err != nil {
		fmt.Println("update:", err)
		return
	}
	fmt.Println("count:", cm.Data["count"])
	// Output: count: 42
}

// A manager's replicas take locks through the Locker NewForCluster wires
// for them: Leases through an uncached client that watches, Update's reads
// through the API reader, its logger, and a Locker that closes when the
// manager stops. It needs the Role of examples/rbac.yaml in the namespace.
func ExampleNewForCluster() {
	cfg, err := rest.InClusterConfig()
	if err != nil {
		panic(err)
	}
	mgr, err := manager.New(cfg, manager.Options{})
	if err != nil {
		panic(err)
	}
	l, err := withlock.NewForCluster(mgr, "my-operator")
	if err != nil {
		panic(err)
	}
	// In a reconciler, with its ctx and the manager's client:
	reconcile := func(ctx context.Context, key client.ObjectKey) error {
		cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: key.Name, Namespace: key.Namespace}}
		return withlock.Update(ctx, l, mgr.GetClient(), cm, func(cm *corev1.ConfigMap) error {
			if cm.Data == nil {
				cm.Data = map[string]string{}
			}
			cm.Data["owner"] = "me"
			return nil
		})
	}
	_ = reconcile
	if err := mgr.Start(signals.SetupSignalHandler()); err != nil {
		panic(err)
	}
}

// fencedStore stands for a system outside the cluster (a database, a
// bucket) that keeps the largest fencing token it was written with, and
// refuses a write that carries a smaller one.
type fencedStore struct {
	token, value string
}

func (s *fencedStore) write(token, value string) error {
	if s.token != "" {
		if c, err := resourcelock.CompareTokens(token, s.token); err != nil || c < 0 {
			return fmt.Errorf("token %s refused: the store has seen %s (%v)", token, s.token, err)
		}
	}
	s.token, s.value = token, value
	return nil
}

func ExampleToken() {
	ctx := context.Background()
	// A fake client with one resourceVersion counter, as the API server
	// has; in a real program c comes from your manager or client.New.
	c := fake.NewClientBuilder().WithScheme(scheme.Scheme).WithGlobalResourceVersionCounter().Build()
	l := withlock.New(resourcelock.NewResourceLocker(c, "default"))
	store := &fencedStore{}

	var kept string
	_ = l.WithLock(ctx, "backup", func(ctx context.Context) error {
		token, _ := withlock.Token(ctx)
		kept = token // as a holder that was paused past its lease still has it
		return store.write(token, "first")
	})
	_ = l.WithLock(ctx, "backup", func(ctx context.Context) error {
		token, _ := withlock.Token(ctx)
		return store.write(token, "second")
	})
	// The paused holder resumes, and writes with the token it had.
	err := store.write(kept, "late")
	fmt.Println("late write refused:", err != nil)
	fmt.Println("stored:", store.value)
	// Output:
	// late write refused: true
	// stored: second
}

func ExampleLockName() {
	name := withlock.LockName(schema.GroupKind{Kind: "ConfigMap"}, client.ObjectKey{Namespace: "default", Name: "counter"})
	fmt.Println(name)
	// Output: configmap-default-counter-1000adea6fef20ee
}
