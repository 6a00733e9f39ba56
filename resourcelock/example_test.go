package resourcelock_test

import (
	"context"
	"errors"
	"fmt"

	coordinationv1 "k8s.io/api/coordination/v1"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/leaselock/leaselock/resourcelock"
)

func ExampleResourceLocker_AcquireLock() {
	ctx := context.Background()
	// In a real program c comes from client.NewWithWatch, so that waiters
	// watch the Lease instead of polling it.
	c := fake.NewClientBuilder().WithScheme(scheme.Scheme).Build()
	// A retry timeout of 0 makes every acquire a try-lock.
	rl := resourcelock.NewResourceLocker(c, "default", resourcelock.WithRetryTimeout(0))

	if err := rl.AcquireLock(ctx, "settings", "replica-a"); err != nil {
		fmt.Println("replica-a:", err)
		return
	}
	// Release even if ctx is cancelled by then: otherwise the Lease stays
	// until it expires.
	defer func() { _ = rl.ReleaseLock(context.WithoutCancel(ctx), "settings", "replica-a") }()

	err := rl.AcquireLock(ctx, "settings", "replica-b")
	if held, ok := errors.AsType[*resourcelock.HeldError](err); ok {
		fmt.Println("replica-b turned away, held by", held.Holder)
	}
	fmt.Println("is ErrLockHeld:", errors.Is(err, resourcelock.ErrLockHeld))
	// Output:
	// replica-b turned away, held by replica-a
	// is ErrLockHeld: true
}

func ExampleResourceLocker_ReleaseLock() {
	ctx := context.Background()
	c := fake.NewClientBuilder().WithScheme(scheme.Scheme).Build()
	rl := resourcelock.NewResourceLocker(c, "default")

	if err := rl.AcquireLock(ctx, "settings", "replica-a"); err != nil {
		fmt.Println(err)
		return
	}
	// Only the holder's release deletes the Lease; another's is a no-op.
	fmt.Println("release by replica-b:", rl.ReleaseLock(ctx, "settings", "replica-b"))
	fmt.Println("leases:", leases(ctx, c))
	fmt.Println("release by replica-a:", rl.ReleaseLock(ctx, "settings", "replica-a"))
	fmt.Println("leases:", leases(ctx, c))
	// Output:
	// release by replica-b: <nil>
	// leases: 1
	// release by replica-a: <nil>
	// leases: 0
}

func leases(ctx context.Context, c client.Client) int {
	var l coordinationv1.LeaseList
	if err := c.List(ctx, &l, client.InNamespace("default")); err != nil {
		return -1
	}
	return len(l.Items)
}
