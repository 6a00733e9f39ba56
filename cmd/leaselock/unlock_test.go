package main

import (
	"context"
	"strings"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

// TestUnlock takes a held lock away: without --force nothing is deleted;
// with --holder of the holder status showed, a lock that changed hands since
// is refused and left; with the holder it has now, it is deleted; a lock
// unlocked under a running holder makes its run stop its command and exit
// 124; and a Lease that leaselock does not manage is left alone.
func TestUnlock(t *testing.T) {
	k := newCluster(t)
	p := k.start(t, "", "run", "stuck", "--lease", "3s", "--", "sleep", "60")
	first := ptr.Deref(k.waitForHolder(t, "stuck").Spec.HolderIdentity, "")

	code, _, stderr := k.run(t, "unlock", "stuck")
	if code != exitError || !strings.Contains(stderr, "--force") {
		t.Errorf("without --force: got exit code %d and stderr %q, want %d and a word on --force", code, stderr, exitError)
	}

	// The lock changes hands, by force; the first holder's renewal finds
	// it taken.
	k.takeOver(t, "stuck", "second")
	if code := p.wait(t, 15*time.Second); code != exitLost {
		t.Errorf("the first holder's run: got exit code %d, want %d", code, exitLost)
	}
	code, _, stderr = k.run(t, "unlock", "stuck", "--force", "--holder", first)
	if code != exitError || !strings.Contains(stderr, `held by "second"`) {
		t.Errorf("--holder of a lock that changed hands: got exit code %d and stderr %q, want %d and the holder now", code, stderr, exitError)
	}
	if l := k.lease(t, "stuck"); l == nil || ptr.Deref(l.Spec.HolderIdentity, "") != "second" {
		t.Fatalf("got Lease %v, want it left to its new holder", l)
	}
	code, out, stderr := k.run(t, "unlock", "stuck", "--force", "--holder", "second")
	if code != 0 || !strings.Contains(out, `unlocked (was held by "second")`) {
		t.Errorf("--holder of its holder: got exit code %d, stdout %q, stderr %q", code, out, stderr)
	}
	k.assertNoLease(t)

	running := k.start(t, "", "run", "stuck", "--lease", "3s", "--", "sleep", "60")
	k.waitForHolder(t, "stuck")
	if code, _, stderr := k.run(t, "unlock", "stuck", "--force"); code != 0 {
		t.Fatalf("unlock of a running holder: got exit code %d, stderr %q", code, stderr)
	}
	if code := running.wait(t, 15*time.Second); code != exitLost {
		t.Errorf("the run whose lock was unlocked: got exit code %d, want %d; stderr: %s", code, exitLost, running.stderr.String())
	}
	k.assertNoLease(t)

	code, _, stderr = k.run(t, "unlock", "stuck", "--force")
	if code != 0 || !strings.Contains(stderr, "is free") {
		t.Errorf("a free lock: got exit code %d and stderr %q, want 0 and that it is free", code, stderr)
	}

	election := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "controller", Namespace: k.ns},
		Spec: coordinationv1.LeaseSpec{HolderIdentity: ptr.To("leader")}}
	if err := k.c.Create(context.Background(), election); err != nil {
		t.Fatal(err)
	}
	if code, _, stderr := k.run(t, "unlock", "controller", "--force"); code != exitError || !strings.Contains(stderr, "not a leaselock lock") {
		t.Errorf("a leader election's Lease: got exit code %d and stderr %q, want %d and a refusal", code, stderr, exitError)
	}
	if k.lease(t, "controller") == nil {
		t.Fatal("the leader election's Lease was deleted")
	}
	if err := k.c.Delete(context.Background(), election); err != nil {
		t.Fatal(err)
	}
}

// TestDeleteHeld deletes a Lease as read after it changed: a renewal by the
// same holder is retried, and a takeover by another is refused, on the real
// server, whose preconditions the fake client does not check.
func TestDeleteHeld(t *testing.T) {
	k := newCluster(t)
	ctx := context.Background()
	p := k.start(t, "", "run", "renewed", "--", "sleep", "60")
	read := k.waitForHolder(t, "renewed")
	holder := ptr.Deref(read.Spec.HolderIdentity, "")

	renewed := read.DeepCopy()
	renewed.Spec.RenewTime = ptr.To(metav1.NewMicroTime(time.Now()))
	if err := k.c.Update(ctx, renewed); err != nil {
		t.Fatal(err)
	}
	now, err := deleteHeld(ctx, k.c, read, holder)
	if !apierrors.IsConflict(err) || now.ResourceVersion != renewed.ResourceVersion {
		t.Fatalf("after a renewal: got %v and version %s, want a Conflict to retry with version %s", err, now.ResourceVersion, renewed.ResourceVersion)
	}

	taken := now.DeepCopy()
	taken.Spec.HolderIdentity = ptr.To("other")
	if err := k.c.Update(ctx, taken); err != nil {
		t.Fatal(err)
	}
	if _, err := deleteHeld(ctx, k.c, now, holder); err == nil || apierrors.IsConflict(err) || !strings.Contains(err.Error(), "changed hands") {
		t.Fatalf("after a takeover: got %v, want a refusal that is no Conflict", err)
	}
	if k.lease(t, "renewed") == nil {
		t.Fatal("the Lease of the new holder was deleted")
	}
	p.wait(t, 10*time.Second)
	if err := k.c.Delete(ctx, taken); err != nil {
		t.Fatal(err)
	}
}
