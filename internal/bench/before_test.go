//go:build leaselock_before

package bench_test

import (
	"testing"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"

	before "github.com/leaselock/leaselock/internal/bench/_before"
	beforerl "github.com/leaselock/leaselock/internal/bench/_before/resourcelock"
	beforewl "github.com/leaselock/leaselock/internal/bench/_before/withlock"
	"github.com/leaselock/leaselock/internal/testenv"
)

// With the tag leaselock_before, which make bench-ab sets after
// hack/bench-before.sh has copied the library as of an earlier commit into
// _before, every row of the library gets a twin built from that copy (see
// withTwin), and BenchmarkUncontended a third cycle. The twins are built as
// the rows are, option for option: the copy must have the same API.
func init() {
	beforeCommit = before.Commit
	locks["leaselock"+twinKind] = func(b *testing.B, ns string, reqs *testenv.Requests) func() *worker {
		return func() *worker {
			c := testenv.CountedClient(b, reqs)
			return beforeWorker(c, beforerl.NewResourceLocker(c, ns,
				beforerl.WithRetryTimeout(time.Minute), beforerl.WithMetrics(nil)))
		}
	}
	locks["leaselock-poll-500ms"+twinKind] = func(b *testing.B, ns string, reqs *testenv.Requests) func() *worker {
		return func() *worker {
			c := testenv.CountedClient(b, reqs)
			return beforeWorker(c, beforerl.NewResourceLocker(c, ns, beforerl.WithoutWatch(),
				beforerl.WithRetryTimeout(time.Minute), beforerl.WithMetrics(nil)))
		}
	}
	watchLockers["leaselock"+twinKind] = func(c client.Client, ns string) locker {
		return beforerl.NewResourceLocker(c, ns, beforerl.WithRetryTimeout(10*time.Minute), beforerl.WithMetrics(nil))
	}
	uncontendedLockers = append(uncontendedLockers, lockerRow{"leaselock" + twinRow, func(c client.Client, ns string) locker {
		return beforerl.NewResourceLocker(c, ns, beforerl.WithMetrics(nil))
	}})
}

// beforeWorker is leaselockWorker with the copy: its ResourceLocker, and
// so its withlock.Locker, registers no metrics, so the two copies never
// register the same collectors in one registry.
func beforeWorker(c client.WithWatch, rl *beforerl.ResourceLocker) *worker {
	return &worker{c: c, withLock: beforewl.New(rl).WithLock}
}
