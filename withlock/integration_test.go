package withlock_test

import (
	"context"
	"strconv"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/leaselock/leaselock/internal/testenv"
	"github.com/leaselock/leaselock/resourcelock"
	"github.com/leaselock/leaselock/withlock"
)

const (
	workers    = 8
	increments = 50
)

// incrementFunc adds one to the counter of the ConfigMap named key, with the
// client of one worker, under the lock or not.
type incrementFunc func(ctx context.Context, c client.Client, rl *resourcelock.ResourceLocker, key client.ObjectKey) error

// readModifyWrite is the unguarded increment: a Get, then an Update that
// carries no resourceVersion, as a careless replica writes. Two replicas
// that read the same value write the same value, and one increment is lost.
func readModifyWrite(ctx context.Context, c client.Client, key client.ObjectKey) error {
	var cm corev1.ConfigMap
	if err := c.Get(ctx, key, &cm); err != nil {
		return err
	}
	n, _ := strconv.Atoi(cm.Data["count"])
	cm.Data["count"] = strconv.Itoa(n + 1)
	cm.ResourceVersion = ""
	return c.Update(ctx, &cm)
}

// countConcurrently runs workers goroutines, each with a client of its own,
// each doing increments calls of inc on one new ConfigMap, and returns the
// final count.
func countConcurrently(t *testing.T, inc incrementFunc, opts ...resourcelock.Option) int {
	t.Helper()
	admin := testenv.Client(t)
	ns := testenv.Namespace(t, admin)
	ctx := t.Context()
	cm := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "counter", Namespace: ns},
		Data:       map[string]string{"count": "0"},
	}
	if err := admin.Create(ctx, cm); err != nil {
		t.Fatalf("create ConfigMap: %v", err)
	}
	key := client.ObjectKeyFromObject(cm)

	var wg sync.WaitGroup
	for w := range workers {
		c := testenv.Client(t)
		rl := resourcelock.NewResourceLocker(c, ns, append([]resourcelock.Option{resourcelock.WithRetryTimeout(2 * time.Minute)}, opts...)...)
		wg.Go(func() {
			for i := range increments {
				if err := inc(ctx, c, rl, key); err != nil {
					t.Errorf("worker %d, increment %d: %v", w, i, err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := admin.Get(ctx, key, cm); err != nil {
		t.Fatalf("get ConfigMap: %v", err)
	}
	n, err := strconv.Atoi(cm.Data["count"])
	if err != nil {
		t.Fatalf("count %q: %v", cm.Data["count"], err)
	}
	return n
}

// modes are the two ways a waiter waits: on a watch of the Lease (the
// default for a client that can watch), and polling.
var modes = []struct {
	name string
	opts []resourcelock.Option
}{
	{"watch", nil},
	{"poll", []resourcelock.Option{resourcelock.WithoutWatch()}},
}

func TestServerDoSerialisesIncrements(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode.name, func(t *testing.T) {
			got := countConcurrently(t, func(ctx context.Context, c client.Client, rl *resourcelock.ResourceLocker, key client.ObjectKey) error {
				return withlock.Do(ctx, rl, "counter", func(ctx context.Context) error {
					return readModifyWrite(ctx, c, key)
				})
			}, mode.opts...)
			if want := workers * increments; got != want {
				t.Fatalf("count after %d workers x %d increments through Do: got %d, want %d", workers, increments, got, want)
			}
		})
	}
}

func TestServerUpdateSerialisesIncrements(t *testing.T) {
	got := countConcurrently(t, func(ctx context.Context, c client.Client, rl *resourcelock.ResourceLocker, key client.ObjectKey) error {
		cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: key.Name, Namespace: key.Namespace}}
		return withlock.Update(ctx, withlock.New(rl), c, cm, func(cm *corev1.ConfigMap) error {
			n, _ := strconv.Atoi(cm.Data["count"])
			cm.Data["count"] = strconv.Itoa(n + 1)
			return nil
		})
	})
	if want := workers * increments; got != want {
		t.Fatalf("count after %d workers x %d increments through Update: got %d, want %d", workers, increments, got, want)
	}
}

// TestServerUnlockedLosesUpdates is the same run without the lock: updates
// are lost, which shows that the workers' increments do overlap, so that the
// tests above show the lock at work. How many are lost depends on
// scheduling; none lost would take every one of 400 reads to come after the
// last write.
func TestServerUnlockedLosesUpdates(t *testing.T) {
	got := countConcurrently(t, func(ctx context.Context, c client.Client, _ *resourcelock.ResourceLocker, key client.ObjectKey) error {
		return readModifyWrite(ctx, c, key)
	})
	want := workers * increments
	t.Logf("without the lock: count %d of %d, %d updates lost", got, want, want-got)
	if got >= want {
		t.Errorf("count without the lock: got %d, want less than %d: the workers did not overlap", got, want)
	}
}
