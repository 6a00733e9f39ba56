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
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/leaselock/leaselock/resourcelock"
	"github.com/leaselock/leaselock/withlock"
)

func ExampleLocker_WithLock() {
	ctx := context.Background()
	// In a real program c comes from your manager or client.New.
	c := fake.NewClientBuilder().WithScheme(scheme.Scheme).Build()
	l := withlock.New(resourcelock.NewResourceLocker(c, "default"), withlock.WithIdentity("worker-1"))

	err := l.WithLock(ctx, "nightly-report", func(ctx context.Context) error {
		// Only one replica at a time gets here. Pass ctx to every request:
		// it is cancelled, with cause ErrLockLost, before the lease can expire.
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

func ExampleLockName() {
	name := withlock.LockName(schema.GroupKind{Kind: "ConfigMap"}, client.ObjectKey{Namespace: "default", Name: "counter"})
	fmt.Println(name)
	// Output: configmap-default-counter-1000adea6fef20ee
}
