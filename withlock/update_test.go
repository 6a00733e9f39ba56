package withlock_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	"github.com/leaselock/leaselock/resourcelock"
	"github.com/leaselock/leaselock/withlock"
)

var configMapKind = schema.GroupKind{Kind: "ConfigMap"}

// counter returns a ConfigMap in the test namespace whose data holds count.
func counter(count string) *corev1.ConfigMap {
	return &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "counter", Namespace: testNamespace},
		Data:       map[string]string{"count": count, "keep": "me"},
	}
}

// named returns an empty ConfigMap that names the counter, as a caller
// passes it to Update.
func named() *corev1.ConfigMap {
	return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "counter", Namespace: testNamespace}}
}

// increment is a mutate that adds one to the counter it is given.
func increment(cm *corev1.ConfigMap) error {
	n, err := strconv.Atoi(cm.Data["count"])
	if err != nil {
		return err
	}
	cm.Data["count"] = strconv.Itoa(n + 1)
	return nil
}

// stored returns the counter as the store holds it.
func (f *fixture) stored(t *testing.T) *corev1.ConfigMap {
	t.Helper()
	var cm corev1.ConfigMap
	if err := f.base.Get(context.Background(), client.ObjectKeyFromObject(named()), &cm); err != nil {
		t.Fatalf("get ConfigMap: %v", err)
	}
	return &cm
}

func TestUpdateRereadsAfterConflict(t *testing.T) {
	// The first write meets a Conflict after another writer (one that does not
	// take the lock) set the count to 10: the retry must read 10 afresh.
	var conflicts int
	f := newFixture(t, interceptor.Funcs{
		Update: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.UpdateOption) error {
			if _, ok := obj.(*corev1.ConfigMap); ok && conflicts == 0 {
				conflicts++
				other := counter("10")
				if err := c.Update(ctx, other); err != nil {
					return err
				}
				return apierrors.NewConflict(schema.GroupResource{Resource: "configmaps"}, obj.GetName(), errors.New("the object has been modified"))
			}
			return c.Update(ctx, obj, opts...)
		},
	}, counter("0"))
	l := withlock.New(f.locker())
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var seen []string
	cm := named()
	call := inBackground(func() error {
		return withlock.Update(ctx, l, f.c, cm, func(cm *corev1.ConfigMap) error {
			seen = append(seen, cm.Data["count"])
			return increment(cm)
		})
	})
	// The lock's timer is one waiter, the backoff after the Conflict the
	// second, once the write was sent (before, the read's bound is). The
	// backoff is at most a second.
	waitUntil(t, "the first write", func() bool { return f.calls.count("update", &corev1.ConfigMap{}) == 1 })
	waitForWaiters(t, f.clock, 2, call.done)
	f.clock.Step(time.Second)
	// The Step took the backoff off the clock: a new one means that the
	// retry met a Conflict too, and would wait for ever.
wait:
	for {
		select {
		case <-call.done:
			break wait
		case <-time.After(time.Millisecond):
			if f.clock.Waiters() >= 2 {
				t.Errorf("got a second backoff, want the retry to succeed")
				cancel()
				break wait
			}
		}
	}
	if err := call.wait(); err != nil {
		t.Fatalf("Update: %v", err)
	}

	if want := []string{"0", "10"}; fmt.Sprint(seen) != fmt.Sprint(want) {
		t.Errorf("got mutate called on counts %q, want %q", seen, want)
	}
	if got := f.calls.count("get", &corev1.ConfigMap{}); got != 2 {
		t.Errorf("got %d ConfigMap gets, want 2", got)
	}
	if got := f.stored(t).Data["count"]; got != "11" {
		t.Errorf("got stored count %q, want %q", got, "11")
	}
	if got := cm.Data["count"]; got != "11" {
		t.Errorf("got caller's count %q, want %q", got, "11")
	}
	f.assertNoLease(t)
}

// TestUpdateCancelledInBackoff cancels Update's ctx with a cause, as
// errgroup.WithContext does when a sibling fails, while it waits to retry a
// Conflict: errors.Is must see context.Canceled, the cause and the
// Conflict, and the lock must be released.
func TestUpdateCancelledInBackoff(t *testing.T) {
	f := newFixture(t, interceptor.Funcs{
		Update: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.UpdateOption) error {
			if _, ok := obj.(*corev1.ConfigMap); ok {
				return apierrors.NewConflict(schema.GroupResource{Resource: "configmaps"}, obj.GetName(), errors.New("the object has been modified"))
			}
			return c.Update(ctx, obj, opts...)
		},
	}, counter("0"))
	sibling := errors.New("sibling failed")
	ctx, cancel := context.WithCancelCause(t.Context())
	defer cancel(nil)
	call := inBackground(func() error {
		return withlock.Update(ctx, withlock.New(f.locker()), f.c, named(), increment)
	})
	// The lock's expiry timer, and the backoff after the Conflict.
	waitForWaiters(t, f.clock, 2, call.done)
	cancel(sibling)
	err := call.wait()
	for _, want := range []error{context.Canceled, sibling} {
		if !errors.Is(err, want) {
			t.Errorf("got %v, want errors.Is %v", err, want)
		}
	}
	if !apierrors.IsConflict(err) {
		t.Errorf("got %v, want the Conflict too", err)
	}
	f.assertNoLease(t)
}

func TestUpdateFillsCallersObject(t *testing.T) {
	f := newFixture(t, interceptor.Funcs{}, counter("1"))
	before := f.stored(t).ResourceVersion
	cm := named()
	if err := withlock.Update(t.Context(), withlock.New(f.locker()), f.c, cm, increment); err != nil {
		t.Fatalf("Update: %v", err)
	}
	after := f.stored(t)
	if after.ResourceVersion == before {
		t.Errorf("got stored resourceVersion %q unchanged, want a new one", after.ResourceVersion)
	}
	if cm.ResourceVersion != after.ResourceVersion {
		t.Errorf("got caller's resourceVersion %q, want the server's %q", cm.ResourceVersion, after.ResourceVersion)
	}
	if cm.Data["count"] != "2" || cm.Data["keep"] != "me" {
		t.Errorf("got caller's data %v, want count 2 and keep me", cm.Data)
	}
	if after.Data["count"] != "2" {
		t.Errorf("got stored count %q, want %q", after.Data["count"], "2")
	}
	f.assertNoLease(t)
}

// TestUpdateStopsRetryingBeforeTheLeaseEnds meets a Conflict on every
// write, from a writer that does not take the lock: Update gives up with
// the Conflict before the lease less the margin (8s of a 10s lease), and
// does not report the lock lost. The clock moves a second at a time, and
// no retry starts within a second of the end, so no Step passes it.
func TestUpdateStopsRetryingBeforeTheLeaseEnds(t *testing.T) {
	f := newFixture(t, interceptor.Funcs{
		Update: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.UpdateOption) error {
			if _, ok := obj.(*corev1.ConfigMap); ok {
				return apierrors.NewConflict(schema.GroupResource{Resource: "configmaps"}, obj.GetName(), errors.New("the object has been modified"))
			}
			return c.Update(ctx, obj, opts...)
		},
	}, counter("1"))
	l := withlock.New(f.locker(resourcelock.WithLeaseDuration(10 * time.Second)))
	call := inBackground(func() error {
		return withlock.Update(t.Context(), l, f.c, named(), increment)
	})
	// The lock's expiry timer is one waiter, a backoff of at most a second
	// the other: each Step ends the backoff.
	for steps := 0; ; steps++ {
		select {
		case <-call.done:
		case <-time.After(time.Millisecond):
			if f.clock.Waiters() >= 2 {
				f.clock.Step(time.Second)
			}
			if steps > 100000 {
				t.Fatal("Update did not return")
			}
			continue
		}
		break
	}
	err := call.wait()
	if !apierrors.IsConflict(err) {
		t.Errorf("got %v, want a Conflict", err)
	}
	if errors.Is(err, withlock.ErrLockLost) {
		t.Errorf("got %v, want no ErrLockLost: Update stopped before the lease ran out", err)
	}
	if elapsed := f.clock.Since(epoch); elapsed >= 8*time.Second {
		t.Errorf("got Update returning %v after the lock, want before 8s", elapsed)
	}
	f.assertNoLease(t)
}

// TestUpdateKeepsTheResourceVersionItRead gives Update a mutate that
// replaces the object wholesale, resourceVersion and all: the write still
// carries the version Update read, so a late write fails with Conflict
// instead of overwriting.
func TestUpdateKeepsTheResourceVersionItRead(t *testing.T) {
	var written []string
	f := newFixture(t, interceptor.Funcs{
		Update: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.UpdateOption) error {
			if _, ok := obj.(*corev1.ConfigMap); ok {
				written = append(written, obj.GetResourceVersion())
			}
			return c.Update(ctx, obj, opts...)
		},
	}, counter("1"))
	read := f.stored(t).ResourceVersion
	err := withlock.Update(t.Context(), withlock.New(f.locker()), f.c, named(), func(cm *corev1.ConfigMap) error {
		*cm = corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Name: cm.Name, Namespace: cm.Namespace},
			Data:       map[string]string{"count": "2"},
		}
		return nil
	})
	if err != nil {
		t.Fatalf("Update: %v", err)
	}
	if want := []string{read}; fmt.Sprint(written) != fmt.Sprint(want) {
		t.Errorf("got writes with resourceVersions %q, want %q", written, want)
	}
	if got := f.stored(t).Data["count"]; got != "2" {
		t.Errorf("got stored count %q, want %q", got, "2")
	}
}

func TestUpdateWritesNothingWhenUnchanged(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*corev1.ConfigMap) error
	}{
		{"mutate changes nothing", func(*corev1.ConfigMap) error { return nil }},
		{"mutate writes the same value", func(cm *corev1.ConfigMap) error {
			cm.Data["count"] = "7"
			return nil
		}},
		// Semantic equality: an empty map is no change from a nil one.
		{"mutate sets empty labels for none", func(cm *corev1.ConfigMap) error {
			cm.Labels = map[string]string{}
			return nil
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, interceptor.Funcs{}, counter("7"))
			rv := f.stored(t).ResourceVersion
			cm := named()
			if err := withlock.Update(t.Context(), withlock.New(f.locker()), f.c, cm, tt.mutate); err != nil {
				t.Fatalf("Update: %v", err)
			}
			if got := f.calls.count("update", &corev1.ConfigMap{}); got != 0 {
				t.Errorf("got %d ConfigMap updates, want 0", got)
			}
			if cm.ResourceVersion != rv || cm.Data["count"] != "7" {
				t.Errorf("got caller's object at resourceVersion %q with data %v, want it as read (%q, count 7)", cm.ResourceVersion, cm.Data, rv)
			}
			f.assertNoLease(t)
		})
	}
}

func TestUpdateRefusesKeyChange(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*corev1.ConfigMap) error
	}{
		{"name", func(cm *corev1.ConfigMap) error {
			cm.Name = "other"
			return increment(cm)
		}},
		{"namespace", func(cm *corev1.ConfigMap) error {
			cm.Namespace = "elsewhere"
			return increment(cm)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// The objects mutate points at exist, so that a write to them
			// would succeed and be seen.
			other, elsewhere := counter("1"), counter("1")
			other.Name, elsewhere.Namespace = "other", "elsewhere"
			f := newFixture(t, interceptor.Funcs{}, counter("1"), other, elsewhere)
			err := withlock.Update(t.Context(), withlock.New(f.locker()), f.c, named(), tt.mutate)
			if err == nil {
				t.Errorf("got nil error, want one")
			}
			for _, verb := range []string{"create", "update", "patch"} {
				if got := f.calls.count(verb, &corev1.ConfigMap{}); got != 0 {
					t.Errorf("got %d ConfigMap %ss, want 0", got, verb)
				}
			}
			for _, cm := range []*corev1.ConfigMap{named(), other, elsewhere} {
				var got corev1.ConfigMap
				if err := f.base.Get(t.Context(), client.ObjectKeyFromObject(cm), &got); err != nil {
					t.Fatalf("get ConfigMap: %v", err)
				}
				if got.Data["count"] != "1" {
					t.Errorf("got stored count %q in %s/%s, want %q", got.Data["count"], got.Namespace, got.Name, "1")
				}
			}
			f.assertNoLease(t)
		})
	}
}

// TestUpdateRefusesKindChange has mutate turn an unstructured ConfigMap
// into a Secret of the same name, which exists: that would write another
// object, under another lock. Nothing is written.
func TestUpdateRefusesKindChange(t *testing.T) {
	meta := metav1.ObjectMeta{Name: "plain", Namespace: testNamespace}
	f := newFixture(t, interceptor.Funcs{}, &corev1.ConfigMap{ObjectMeta: meta}, &corev1.Secret{ObjectMeta: meta})
	obj := &unstructured.Unstructured{}
	obj.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("ConfigMap"))
	obj.SetName(meta.Name)
	obj.SetNamespace(meta.Namespace)
	err := withlock.Update(t.Context(), withlock.New(f.locker()), f.c, obj, func(u *unstructured.Unstructured) error {
		u.SetKind("Secret")
		return unstructured.SetNestedField(u.Object, "changed", "metadata", "labels", "touched")
	})
	if err == nil || !strings.Contains(err.Error(), "kind") {
		t.Errorf("got %v, want an error about the kind", err)
	}
	var secret corev1.Secret
	if err := f.base.Get(t.Context(), client.ObjectKey{Namespace: meta.Namespace, Name: meta.Name}, &secret); err != nil {
		t.Fatalf("get Secret: %v", err)
	}
	if len(secret.Labels) != 0 {
		t.Errorf("got Secret labels %v, want none: the Secret was written", secret.Labels)
	}
	f.assertNoLease(t)
}

// noVersion is a reader that drops the resourceVersion of what it reads.
type noVersion struct{ client.Reader }

func (r noVersion) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	err := r.Reader.Get(ctx, key, obj, opts...)
	obj.SetResourceVersion("")
	return err
}

// TestUpdateRefusesReadWithoutResourceVersion reads through a reader that
// drops the resourceVersion: the write would be unconditional, and would
// overwrite a writer that does not take the lock. Nothing is written.
func TestUpdateRefusesReadWithoutResourceVersion(t *testing.T) {
	f := newFixture(t, interceptor.Funcs{}, counter("1"))
	err := withlock.Update(t.Context(), withlock.New(f.locker()), f.c, named(), increment, withlock.ReadFrom(noVersion{f.base}))
	if err == nil || !strings.Contains(err.Error(), "resourceVersion") {
		t.Errorf("got %v, want an error about the resourceVersion", err)
	}
	if got := f.calls.count("update", &corev1.ConfigMap{}); got != 0 {
		t.Errorf("got %d ConfigMap updates, want 0", got)
	}
	if got := f.stored(t).Data["count"]; got != "1" {
		t.Errorf("got stored count %q, want %q", got, "1")
	}
	f.assertNoLease(t)
}

// TestUpdateStoredThenReleaseFailed has the write succeed and the release
// of the lock fail: Update returns the release error, and obj, set only by
// a write that succeeded, tells the caller that the change is stored and
// mutate must not run again.
func TestUpdateStoredThenReleaseFailed(t *testing.T) {
	f := newFixture(t, interceptor.Funcs{
		Delete: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.DeleteOption) error {
			if _, ok := obj.(*coordinationv1.Lease); ok {
				return apierrors.NewForbidden(coordinationv1.Resource("leases"), obj.GetName(), errors.New("no delete"))
			}
			return c.Delete(ctx, obj, opts...)
		},
	}, counter("1"))
	cm := named()
	err := withlock.Update(t.Context(), withlock.New(f.locker()), f.c, cm, increment)
	if !apierrors.IsForbidden(err) {
		t.Fatalf("got %v, want the release's Forbidden", err)
	}
	if cm.ResourceVersion == "" || cm.Data["count"] != "2" {
		t.Errorf("got obj with resourceVersion %q and count %q, want it set to what was written (count 2)", cm.ResourceVersion, cm.Data["count"])
	}
	if got := f.stored(t).Data["count"]; got != "2" {
		t.Errorf("got stored count %q, want %q", got, "2")
	}
}

func TestUpdateReturnsMutateError(t *testing.T) {
	f := newFixture(t, interceptor.Funcs{}, counter("1"))
	err := withlock.Update(t.Context(), withlock.New(f.locker()), f.c, named(), func(cm *corev1.ConfigMap) error {
		cm.Data["count"] = "100"
		return &quotaError{limit: 99}
	})
	if _, ok := errors.AsType[*quotaError](err); !ok {
		t.Errorf("got error %v, want a *quotaError", err)
	}
	if got := f.calls.count("update", &corev1.ConfigMap{}); got != 0 {
		t.Errorf("got %d ConfigMap updates, want 0", got)
	}
	f.assertNoLease(t)
}

func TestUpdateStatus(t *testing.T) {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: testNamespace},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "nginx"}}},
		Status:     corev1.PodStatus{Phase: corev1.PodPending},
	}
	tests := []struct {
		name           string
		opts           []withlock.UpdateOption
		mutate         func(*corev1.Pod) error
		wantUpdates    int
		wantSubUpdates int
		check          func(t *testing.T, got *corev1.Pod)
	}{
		{
			name: "Status writes the status subresource",
			opts: []withlock.UpdateOption{withlock.Status()},
			mutate: func(p *corev1.Pod) error {
				p.Status.Phase = corev1.PodRunning
				return nil
			},
			wantSubUpdates: 1,
			check: func(t *testing.T, got *corev1.Pod) {
				if got.Status.Phase != corev1.PodRunning {
					t.Errorf("got stored phase %q, want %q", got.Status.Phase, corev1.PodRunning)
				}
			},
		},
		{
			name: "without Status writes the object",
			mutate: func(p *corev1.Pod) error {
				p.Labels = map[string]string{"tier": "front"}
				return nil
			},
			wantUpdates: 1,
			check: func(t *testing.T, got *corev1.Pod) {
				if got.Labels["tier"] != "front" {
					t.Errorf("got stored labels %v, want tier front", got.Labels)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, interceptor.Funcs{}, pod.DeepCopy())
			obj := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: testNamespace}}
			if err := withlock.Update(t.Context(), withlock.New(f.locker()), f.c, obj, tt.mutate, tt.opts...); err != nil {
				t.Fatalf("Update: %v", err)
			}
			if got := f.calls.count("update", &corev1.Pod{}); got != tt.wantUpdates {
				t.Errorf("got %d Pod updates, want %d", got, tt.wantUpdates)
			}
			if got := f.calls.count("update/status", &corev1.Pod{}); got != tt.wantSubUpdates {
				t.Errorf("got %d Pod status updates, want %d", got, tt.wantSubUpdates)
			}
			var got corev1.Pod
			if err := f.base.Get(t.Context(), client.ObjectKeyFromObject(obj), &got); err != nil {
				t.Fatalf("get Pod: %v", err)
			}
			tt.check(t, &got)
			if obj.ResourceVersion != got.ResourceVersion {
				t.Errorf("got caller's resourceVersion %q, want the server's %q", obj.ResourceVersion, got.ResourceVersion)
			}
			f.assertNoLease(t)
		})
	}
}

// pendingPod returns a Pod named web in the test namespace, in phase
// Pending.
func pendingPod() *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: testNamespace},
		Status:     corev1.PodStatus{Phase: corev1.PodPending},
	}
}

// TestUpdateStatusRefusesOtherChanges changes a label and the phase with
// Status(): the status subresource would drop the label, so Update writes
// nothing and says why.
func TestUpdateStatusRefusesOtherChanges(t *testing.T) {
	pod := pendingPod()
	f := newFixture(t, interceptor.Funcs{}, pod)
	obj := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: testNamespace}}
	err := withlock.Update(t.Context(), withlock.New(f.locker()), f.c, obj, func(p *corev1.Pod) error {
		p.Labels = map[string]string{"tier": "front"}
		p.Status.Phase = corev1.PodRunning
		return nil
	}, withlock.Status())
	if err == nil || !strings.Contains(err.Error(), "more than the status") {
		t.Fatalf("got %v, want an error naming the change beside the status", err)
	}
	if got := f.calls.count("update", &corev1.Pod{}) + f.calls.count("update/status", &corev1.Pod{}); got != 0 {
		t.Errorf("got %d Pod writes, want 0", got)
	}
	f.assertNoLease(t)
}

// TestUpdateStatusUnstructured writes the status of an unstructured Pod:
// comparing the rest of the object must leave the status it writes alone.
func TestUpdateStatusUnstructured(t *testing.T) {
	pod := pendingPod()
	f := newFixture(t, interceptor.Funcs{}, pod)
	obj := &unstructured.Unstructured{}
	obj.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Pod"))
	obj.SetName("web")
	obj.SetNamespace(testNamespace)
	err := withlock.Update(t.Context(), withlock.New(f.locker()), f.c, obj, func(u *unstructured.Unstructured) error {
		return unstructured.SetNestedField(u.Object, string(corev1.PodRunning), "status", "phase")
	}, withlock.Status())
	if err != nil {
		t.Fatalf("Update: %v", err)
	}
	var got corev1.Pod
	if err := f.base.Get(t.Context(), client.ObjectKeyFromObject(pod), &got); err != nil {
		t.Fatalf("get Pod: %v", err)
	}
	if got.Status.Phase != corev1.PodRunning {
		t.Errorf("got stored phase %q, want %q", got.Status.Phase, corev1.PodRunning)
	}
}

func TestUpdateReadFrom(t *testing.T) {
	f := newFixture(t, interceptor.Funcs{}, counter("1"))
	reads := &recorder{}
	r := interceptor.NewClient(f.base, reads.funcs())
	cm := named()
	if err := withlock.Update(t.Context(), withlock.New(f.locker()), f.c, cm, increment, withlock.ReadFrom(r)); err != nil {
		t.Fatalf("Update: %v", err)
	}
	if got := reads.count("get", &corev1.ConfigMap{}); got != 1 {
		t.Errorf("got %d ConfigMap gets from the reader, want 1", got)
	}
	if got := f.calls.count("get", &corev1.ConfigMap{}); got != 0 {
		t.Errorf("got %d ConfigMap gets from the client, want 0", got)
	}
	if got := f.calls.count("update", &corev1.ConfigMap{}); got != 1 {
		t.Errorf("got %d ConfigMap updates through the client, want 1", got)
	}
	if got := f.stored(t).Data["count"]; got != "2" {
		t.Errorf("got stored count %q, want %q", got, "2")
	}
}

func TestUpdateNotFound(t *testing.T) {
	f := newFixture(t, interceptor.Funcs{})
	called := false
	err := withlock.Update(t.Context(), withlock.New(f.locker()), f.c, named(), func(*corev1.ConfigMap) error {
		called = true
		return nil
	})
	if !apierrors.IsNotFound(err) {
		t.Errorf("got error %v, want one for which apierrors.IsNotFound holds", err)
	}
	if called {
		t.Errorf("got mutate called, want it never called")
	}
	f.assertNoLease(t)
}

func TestUpdateLocksTheObject(t *testing.T) {
	f := newFixture(t, interceptor.Funcs{}, counter("1"))
	want := withlock.LockName(configMapKind, client.ObjectKeyFromObject(named()))
	var leases []coordinationv1.Lease
	err := withlock.Update(t.Context(), withlock.New(f.locker()), f.c, named(), func(cm *corev1.ConfigMap) error {
		leases = f.leases(t)
		return increment(cm)
	})
	if err != nil {
		t.Fatalf("Update: %v", err)
	}
	if len(leases) != 1 || leases[0].Name != want {
		var names []string
		for _, l := range leases {
			names = append(names, l.Name)
		}
		t.Errorf("got Leases %q while mutate ran, want [%s]", names, want)
	}
	f.assertNoLease(t)
}

// nilClient is a client type whose nil pointer a caller may pass by
// mistake.
type nilClient struct{ client.Client }

// noScheme is a client wrapper that does not pass on its client's scheme.
type noScheme struct{ client.Client }

func (noScheme) Scheme() *runtime.Scheme { return nil }

func TestUpdateRejectsBadInput(t *testing.T) {
	type call func(ctx context.Context, l *withlock.Locker, c client.Client, mutate func(*corev1.ConfigMap) error) error
	tests := []struct {
		name    string
		call    call
		wantMsg string
	}{
		{
			name: "nil locker",
			call: func(ctx context.Context, _ *withlock.Locker, c client.Client, mutate func(*corev1.ConfigMap) error) error {
				return withlock.Update(ctx, nil, c, named(), mutate)
			},
			wantMsg: "locker is nil",
		},
		{
			name: "locker with nil rl",
			call: func(ctx context.Context, _ *withlock.Locker, c client.Client, mutate func(*corev1.ConfigMap) error) error {
				return withlock.Update(ctx, withlock.New(nil), c, named(), mutate)
			},
			wantMsg: "nil ResourceLocker",
		},
		{
			name: "nil client",
			call: func(ctx context.Context, l *withlock.Locker, _ client.Client, mutate func(*corev1.ConfigMap) error) error {
				return withlock.Update(ctx, l, nil, named(), mutate)
			},
			wantMsg: "client is nil",
		},
		{
			name: "typed nil client",
			call: func(ctx context.Context, l *withlock.Locker, _ client.Client, mutate func(*corev1.ConfigMap) error) error {
				var c *nilClient
				return withlock.Update(ctx, l, c, named(), mutate)
			},
			wantMsg: "client is nil",
		},
		{
			name: "ReadFrom of a typed nil reader",
			call: func(ctx context.Context, l *withlock.Locker, c client.Client, mutate func(*corev1.ConfigMap) error) error {
				var r *nilClient
				return withlock.Update(ctx, l, c, named(), mutate, withlock.ReadFrom(r))
			},
			wantMsg: "ReadFrom reader is nil",
		},
		{
			name: "ReadFrom(nil)",
			call: func(ctx context.Context, l *withlock.Locker, c client.Client, mutate func(*corev1.ConfigMap) error) error {
				return withlock.Update(ctx, l, c, named(), mutate, withlock.ReadFrom(nil))
			},
			wantMsg: "ReadFrom reader is nil",
		},
		{
			name: "typed nil object",
			call: func(ctx context.Context, l *withlock.Locker, c client.Client, mutate func(*corev1.ConfigMap) error) error {
				var cm *corev1.ConfigMap
				return withlock.Update(ctx, l, c, cm, mutate)
			},
			wantMsg: "object is nil",
		},
		{
			name: "nil interface object",
			call: func(ctx context.Context, l *withlock.Locker, c client.Client, _ func(*corev1.ConfigMap) error) error {
				return withlock.Update(ctx, l, c, client.Object(nil), func(client.Object) error { return nil })
			},
			wantMsg: "object is nil",
		},
		{
			name: "nil mutate",
			call: func(ctx context.Context, l *withlock.Locker, c client.Client, _ func(*corev1.ConfigMap) error) error {
				return withlock.Update(ctx, l, c, named(), nil)
			},
			wantMsg: "mutate is nil",
		},
		{
			name: "object with no name",
			call: func(ctx context.Context, l *withlock.Locker, c client.Client, mutate func(*corev1.ConfigMap) error) error {
				return withlock.Update(ctx, l, c, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: testNamespace}}, mutate)
			},
			wantMsg: "no name",
		},
		{
			name: "client without a scheme",
			call: func(ctx context.Context, l *withlock.Locker, c client.Client, mutate func(*corev1.ConfigMap) error) error {
				return withlock.Update(ctx, l, noScheme{c}, named(), mutate)
			},
			wantMsg: "client has no scheme",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, interceptor.Funcs{}, counter("1"))
			called := false
			err := tt.call(t.Context(), withlock.New(f.locker()), f.c, func(*corev1.ConfigMap) error {
				called = true
				return nil
			})
			if err == nil || !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("got error %v, want one containing %q", err, tt.wantMsg)
			}
			if called {
				t.Errorf("got mutate called, want it never called")
			}
			if got := f.calls.all(); len(got) != 0 {
				t.Errorf("got requests %q, want none", got)
			}
		})
	}
}

func TestLockName(t *testing.T) {
	// These names are pinned: replicas of two releases that derive different
	// names for one object during a rollout do not exclude each other.
	tests := []struct {
		name string
		gk   schema.GroupKind
		key  client.ObjectKey
		want string
	}{
		{"namespaced core object", configMapKind, client.ObjectKey{Namespace: "default", Name: "settings"}, "configmap-default-settings-1a741e757d34f141"},
		{"group, dots and capitals", schema.GroupKind{Group: "apps", Kind: "Deployment"}, client.ObjectKey{Namespace: "prod", Name: "Web.Front"}, "deployment-prod-web-front-217dd5a214d44dbe"},
		{"cluster-scoped object", schema.GroupKind{Kind: "Namespace"}, client.ObjectKey{Name: "kube-system"}, "namespace-kube-system-8407a29b8c979928"},
		{"nothing readable", schema.GroupKind{}, client.ObjectKey{Name: "__"}, "x-5fd9bf197fdbc30a"},
		{"empty", schema.GroupKind{}, client.ObjectKey{}, "x-8538098a725acce2"},
		{"long name is cut to 200 readable characters", configMapKind, client.ObjectKey{Namespace: "ns", Name: strings.Repeat("a", 300)},
			"configmap-ns-" + strings.Repeat("a", 200-len("configmap-ns-")) + "-c26ef8a33ca27631"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := withlock.LockName(tt.gk, tt.key)
			if got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
			if err := resourcelock.ValidateLockName(got); err != nil {
				t.Errorf("got invalid name: %v", err)
			}
			if len(got) > 253 {
				t.Errorf("got %d characters, want at most 253", len(got))
			}
		})
	}
}

// tuple is the input of LockName.
type tuple struct{ group, kind, namespace, name string }

func (tp tuple) lockName() string {
	return withlock.LockName(schema.GroupKind{Group: tp.group, Kind: tp.kind}, client.ObjectKey{Namespace: tp.namespace, Name: tp.name})
}

func TestLockNameDistinct(t *testing.T) {
	long := strings.Repeat("a", 300)
	tests := []struct {
		name string
		a, b tuple
	}{
		{"group", tuple{"apps", "Deployment", "ns", "web"}, tuple{"extensions", "Deployment", "ns", "web"}},
		{"kind", tuple{"", "ConfigMap", "ns", "web"}, tuple{"", "Secret", "ns", "web"}},
		{"namespace", tuple{"", "ConfigMap", "a", "web"}, tuple{"", "ConfigMap", "b", "web"}},
		{"name", tuple{"", "ConfigMap", "ns", "a"}, tuple{"", "ConfigMap", "ns", "b"}},
		{"readable parts agree across kind and namespace", tuple{"", "a", "b-c", "x"}, tuple{"", "a-b", "c", "x"}},
		{"readable parts agree across namespace and name", tuple{"", "k", "a", "b-c"}, tuple{"", "k", "a-b", "c"}},
		{"readable parts agree by case", tuple{"", "ConfigMap", "ns", "Web"}, tuple{"", "ConfigMap", "ns", "web"}},
		{"readable parts agree by punctuation", tuple{"", "ConfigMap", "ns", "a.b"}, tuple{"", "ConfigMap", "ns", "a-b"}},
		{"empty namespace or empty name", tuple{"", "ConfigMap", "x", ""}, tuple{"", "ConfigMap", "", "x"}},
		{"long names that share 300 characters", tuple{"", "ConfigMap", "ns", long + "1"}, tuple{"", "ConfigMap", "ns", long + "2"}},
		{"slash moved across kind and namespace", tuple{"", "k", "a/b", "x"}, tuple{"", "k/a", "b", "x"}},
		{"slash moved across namespace and name", tuple{"", "k", "a/b", "c"}, tuple{"", "k", "a", "b/c"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, b := tt.a.lockName(), tt.b.lockName()
			if a == b {
				t.Errorf("got %q for both %+v and %+v, want distinct names", a, tt.a, tt.b)
			}
		})
	}
}

func TestLockNameIgnoresVersion(t *testing.T) {
	key := client.ObjectKey{Namespace: "ns", Name: "web"}
	v1 := schema.GroupVersionKind{Group: "autoscaling", Version: "v1", Kind: "HorizontalPodAutoscaler"}
	v2 := schema.GroupVersionKind{Group: "autoscaling", Version: "v2", Kind: "HorizontalPodAutoscaler"}
	if a, b := withlock.LockName(v1.GroupKind(), key), withlock.LockName(v2.GroupKind(), key); a != b {
		t.Errorf("got %q for %s and %q for %s, want one name", a, v1, b, v2)
	}
}

func FuzzLockName(f *testing.F) {
	f.Add("", "ConfigMap", "default", "settings")
	f.Add("apps", "Deployment", "prod", "Web.Front")
	f.Add("", "", "", "")
	f.Add("", "a", "b-c", "")
	f.Add("", "a-b", "c", "")
	f.Add("example.com", "Widget", "ns", strings.Repeat("x", 300))
	f.Add("", "Kind", "ns", "ÄÖ.ü\xff")
	// A slash at a field's edge: fields joined with "/" would hash alike
	// when it moves across the boundary (see TestLockNameDistinct).
	f.Add("", "k", "/b", "x")
	f.Fuzz(func(t *testing.T, group, kind, namespace, name string) {
		tp := tuple{group, kind, namespace, name}
		got := tp.lockName()
		if err := resourcelock.ValidateLockName(got); err != nil {
			t.Fatalf("LockName(%+v) = %q: %v", tp, got, err)
		}
		if len(got) > 253 {
			t.Fatalf("LockName(%+v) has %d characters, want at most 253", tp, len(got))
		}
		if again := tp.lockName(); again != got {
			t.Fatalf("LockName(%+v) gave %q, then %q, want the same", tp, got, again)
		}
		for _, other := range neighbours(tp) {
			if other == tp {
				continue
			}
			if o := other.lockName(); o == got {
				t.Errorf("got %q for both %+v and %+v, want distinct names", got, tp, other)
			}
		}
	})
}

// neighbours returns tuples that differ from tp in a way a careless
// encoding would miss: one field changed in case or by a trailing dash, or a
// character moved across the boundary of two adjacent fields.
func neighbours(tp tuple) []tuple {
	fields := [4]string{tp.group, tp.kind, tp.namespace, tp.name}
	var out []tuple
	add := func(fs [4]string) { out = append(out, tuple{fs[0], fs[1], fs[2], fs[3]}) }
	for i := range fields {
		fs := fields
		fs[i] += "-"
		add(fs)
		fs = fields
		fs[i] = strings.ToUpper(fs[i])
		add(fs)
	}
	for i := range len(fields) - 1 {
		if a := fields[i]; a != "" {
			fs := fields
			fs[i], fs[i+1] = a[:len(a)-1], a[len(a)-1:]+fs[i+1]
			add(fs)
		}
		if b := fields[i+1]; b != "" {
			fs := fields
			fs[i], fs[i+1] = fs[i]+b[:1], b[1:]
			add(fs)
		}
	}
	return out
}

// unsyncedCache is a reader whose Get waits for its ctx, as a cache-backed
// client's does while its informer cannot sync, and then fails as that
// one does.
type unsyncedCache struct{ client.Reader }

func (unsyncedCache) Get(ctx context.Context, _ client.ObjectKey, obj client.Object, _ ...client.GetOption) error {
	<-ctx.Done()
	return apierrors.NewTimeoutError(fmt.Sprintf("failed waiting for %T Informer to sync", obj), 0)
}

// TestUpdateBoundsTheRead reads through a reader that never answers: the
// read is given up a second before the lease less the margin (8s of a 10s
// lease) runs out, and Update returns a read error that says what a
// cache-backed client needs. The lock is not reported lost: no
// ErrLockLost, no count of a lost lock, no log line.
func TestUpdateBoundsTheRead(t *testing.T) {
	reg := prometheus.NewRegistry()
	ctx, logged := captureLog(t.Context())
	f := newFixture(t, interceptor.Funcs{}, counter("1"))
	// Without renewal, so that the clock has the two timers alone (with
	// it, the read is bounded by the expiry as it stood when it began).
	l := withlock.New(f.locker(resourcelock.WithLeaseDuration(10*time.Second), resourcelock.WithMetrics(reg)), withlock.WithoutRenewal())
	call := inBackground(func() error {
		return withlock.Update(ctx, l, f.c, named(), increment, withlock.ReadFrom(unsyncedCache{f.base}))
	})
	// The lock's timer and the read's.
	waitForWaiters(t, f.clock, 2, call.done)
	f.clock.Step(7*time.Second - time.Millisecond)
	if got := f.clock.Waiters(); got != 2 {
		t.Fatalf("got %d timers left just before 7s, want 2: the read was given up early", got)
	}
	f.clock.Step(time.Millisecond)
	err := call.wait()

	for _, want := range []string{"did not finish", "list and watch", "ReadFrom(mgr.GetAPIReader())", "NewForCluster", "ConfigMap"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("got %v, want an error that says %q", err, want)
		}
	}
	if !apierrors.IsTimeout(err) {
		t.Errorf("got %v, want the reader's Timeout wrapped", err)
	}
	if errors.Is(err, withlock.ErrLockLost) {
		t.Errorf("got %v, want no ErrLockLost: the read was given up before the lease ran out", err)
	}
	if got := counterSum(t, reg, "leaselock_locks_lost_total"); got != 0 {
		t.Errorf("got %v locks lost counted, want 0", got)
	}
	if lines := logged(); len(lines) != 0 {
		t.Errorf("got log lines %q, want none", lines)
	}
	if got := f.calls.count("update", &corev1.ConfigMap{}); got != 0 {
		t.Errorf("got %d ConfigMap updates, want 0", got)
	}
	f.assertNoLease(t)
}
