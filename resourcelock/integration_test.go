package resourcelock_test

import (
	"context"
	"errors"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/leaselock/leaselock/internal/testenv"
	"github.com/leaselock/leaselock/resourcelock"
)

// These tests run against a real kube-apiserver and etcd: the fake client
// ignores a UID precondition on Delete and never creates on Update, which are
// exactly the behaviours the lock rests on.

func getLease(t *testing.T, c client.Client, ns, name string) *coordinationv1.Lease {
	t.Helper()
	lease := &coordinationv1.Lease{}
	err := c.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, lease)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		t.Fatalf("get Lease %s/%s: %v", ns, name, err)
	}
	return lease
}

func TestServerAcquireReleaseLeavesNoLease(t *testing.T) {
	c := testenv.Client(t)
	ns := testenv.Namespace(t, c)
	rl := resourcelock.NewResourceLocker(c, ns)
	ctx := context.Background()

	if err := rl.AcquireLock(ctx, "cm-lock", "holder-a"); err != nil {
		t.Fatalf("AcquireLock: %v", err)
	}
	lease := getLease(t, c, ns, "cm-lock")
	if lease == nil {
		t.Fatal("no Lease after AcquireLock")
	}
	if got, want := ptr.Deref(lease.Spec.HolderIdentity, ""), "holder-a"; got != want {
		t.Errorf("holderIdentity: got %q, want %q", got, want)
	}
	if got, want := ptr.Deref(lease.Spec.LeaseDurationSeconds, 0), int32(15); got != want {
		t.Errorf("leaseDurationSeconds: got %d, want %d", got, want)
	}
	if lease.Spec.AcquireTime == nil || lease.Spec.RenewTime == nil {
		t.Errorf("acquireTime %v, renewTime %v: want both set", lease.Spec.AcquireTime, lease.Spec.RenewTime)
	}
	if err := rl.ReleaseLock(ctx, "cm-lock", "holder-a"); err != nil {
		t.Fatalf("ReleaseLock: %v", err)
	}
	if lease := getLease(t, c, ns, "cm-lock"); lease != nil {
		t.Fatalf("Lease still there after ReleaseLock: %+v", lease.Spec)
	}
}

func TestServerContendedGivesHeldErrorNamingHolder(t *testing.T) {
	c := testenv.Client(t)
	ns := testenv.Namespace(t, c)
	a := resourcelock.NewResourceLocker(c, ns)
	b := resourcelock.NewResourceLocker(testenv.Client(t), ns,
		resourcelock.WithRetryInterval(50*time.Millisecond), resourcelock.WithRetryTimeout(300*time.Millisecond))
	ctx := context.Background()

	if err := a.AcquireLock(ctx, "contended", "holder-a"); err != nil {
		t.Fatalf("AcquireLock a: %v", err)
	}
	defer a.ReleaseLock(ctx, "contended", "holder-a")
	start := time.Now()
	err := b.AcquireLock(ctx, "contended", "holder-b")
	if !errors.Is(err, resourcelock.ErrLockHeld) {
		t.Fatalf("AcquireLock b: got %v, want ErrLockHeld", err)
	}
	if waited := time.Since(start); waited < 300*time.Millisecond {
		t.Errorf("AcquireLock b gave up after %v, want it to retry for the 300ms retry timeout", waited)
	}
	var held *resourcelock.HeldError
	if !errors.As(err, &held) {
		t.Fatalf("got %T, want *HeldError", err)
	}
	if held.Holder != "holder-a" || held.Name != "contended" || held.Namespace != ns || held.Until.IsZero() {
		t.Errorf("HeldError: got %+v, want holder-a on %s/contended with an expiry", held, ns)
	}
	t.Logf("b got: %v", err)
}
