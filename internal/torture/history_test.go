package torture_test

import (
	"cmp"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// The counter of a lock is a ConfigMap whose "count" every critical section
// reads and writes plus one. Its history is checked twice:
//
//   - for overlaps: the critical sections of a lock, sorted by when they
//     began, must each begin after every earlier one ended. The times are
//     wall times of one machine, so they compare across processes;
//   - for linearizability, with porcupine: each critical section is an
//     operation that reads v and writes v+1 at one instant between its start
//     and end, and the parent's read at the end observes the count. An
//     overlap that loses an update makes two operations read the same v,
//     which no order of a counter explains.

// counterInput is the input of an operation on a counter.
type counterInput struct {
	who   string // p<process>g<goroutine>, or "final read"
	final bool
}

// counterOutput is what an operation observed and did.
type counterOutput struct {
	read  int
	write string // wroteYes, wroteNo or wroteMaybe; "" for the final read
}

// counterModel: the state is the count. An increment whose write may or may
// not have happened (no answer from the server) leads to both states.
var counterModel = (&porcupine.NondeterministicModel{
	Init: func() []any { return []any{0} },
	Step: func(state, input, output any) []any {
		s, in, out := state.(int), input.(counterInput), output.(counterOutput)
		if out.read != s {
			return nil
		}
		switch {
		case in.final, out.write == wroteNo:
			return []any{s}
		case out.write == wroteYes:
			return []any{s + 1}
		default:
			return []any{s, s + 1}
		}
	},
	DescribeOperation: func(input, output any) string {
		in, out := input.(counterInput), output.(counterOutput)
		if in.final {
			return fmt.Sprintf("final read -> %d", out.read)
		}
		return fmt.Sprintf("%s: read %d, write %d (%s)", in.who, out.read, out.read+1, out.write)
	},
	DescribeState: func(state any) string { return strconv.Itoa(state.(int)) },
}).ToModel()

// createCounters creates the counter of every lock, at 0.
func createCounters(t *testing.T, c client.Client, ns string, locks []string) {
	t.Helper()
	for _, l := range locks {
		cm := &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Name: counterName(l), Namespace: ns},
			Data:       map[string]string{"count": "0"},
		}
		if err := c.Create(context.Background(), cm); err != nil {
			t.Fatalf("create counter %s: %v", cm.Name, err)
		}
	}
}

// readCounter reads the count of lock, with the times around the read.
func readCounter(t *testing.T, c client.Client, ns, lock string) (n int, call, ret int64) {
	t.Helper()
	var cm corev1.ConfigMap
	call = time.Now().UnixNano()
	if err := c.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: counterName(lock)}, &cm); err != nil {
		t.Fatalf("read counter of %s: %v", lock, err)
	}
	ret = time.Now().UnixNano()
	n, err := strconv.Atoi(cm.Data["count"])
	if err != nil {
		t.Fatalf("counter of %s: %q: %v", lock, cm.Data["count"], err)
	}
	return n, call, ret
}

// checkLock checks the history of one lock (see checkHistory) and adds
// its figures to the table.
func checkLock(t *testing.T, c client.Client, ns, lock string, recs []record, perProc int) {
	t.Helper()
	h := checkHistory(t, c, ns, lock, recs, perProc)
	figures.add(func(s *summary) { s.histories.add(h) })
}

// history is what checkHistory found in the history of one lock.
type history struct {
	ops          int // critical sections checked
	linearizable bool
	overlaps     int
}

// histories adds up the histories of a run.
type histories struct {
	ops, count, linearOK, overlaps int
}

func (hs *histories) add(h history) {
	hs.ops += h.ops
	hs.count++
	if h.linearizable {
		hs.linearOK++
	}
	hs.overlaps += h.overlaps
}

// checkHistory checks the history of one lock: the records of its critical
// sections (End set for those the parent killed) and the count at the end.
// It fails t for an overlap, a history that is not linearizable, or a
// count that is not the number of increments written, and returns what it
// found.
func checkHistory(t *testing.T, c client.Client, ns, lock string, recs []record, perProc int) history {
	t.Helper()
	var sections []record
	for _, r := range recs {
		if r.Lock == lock && r.Start != 0 && (r.Kind == "op" || r.Kind == "holding") {
			sections = append(sections, r)
		}
	}
	final, call, ret := readCounter(t, c, ns, lock)

	// Overlaps.
	slices.SortFunc(sections, func(a, b record) int { return cmp.Compare(a.Start, b.Start) })
	overlaps := 0
	var last record
	for i, r := range sections {
		if r.End == 0 {
			t.Fatalf("lock %s: critical section of p%d g%d has no end", lock, r.Proc, r.G)
		}
		if i > 0 && r.Start < last.End {
			if overlaps++; overlaps > 5 {
				continue // the count says the rest
			}
			t.Errorf("lock %s: two holders: p%d g%d held it from %s to %s, p%d g%d from %s",
				lock, last.Proc, last.G, stamp(last.Start), stamp(last.End), r.Proc, r.G, stamp(r.Start))
		}
		if i == 0 || r.End > last.End {
			last = r
		}
	}

	// Linearizability.
	ops, wrote, maybe := counterOps(sections, func(r record) int { return r.Proc*perProc + r.G }, call)
	checked := len(ops)
	res, info := checkCounter(ops, final, call, ret)
	if res != porcupine.Ok {
		t.Errorf("lock %s: history of %d critical sections is %s, want linearizable (visualization: %s)", lock, checked, res, visualize(lock, info))
	}

	// The count.
	if final < wrote || final > wrote+maybe {
		t.Errorf("lock %s: count %d, want %d (increments written) plus up to %d whose write got no answer", lock, final, wrote, maybe)
	}
	t.Logf("lock %s: %d critical sections, %d increments written (%d without answer), count %d, linearizable: %s, overlaps: %d",
		lock, len(sections), wrote, maybe, final, res, overlaps)
	return history{ops: checked, linearizable: res == porcupine.Ok, overlaps: overlaps}
}

// counterOps turns increments (records of a read of the counter and a
// write of it plus one, from Start to End) into porcupine operations, each
// of client clientID(r), and counts the writes that happened and those
// that got no answer. An increment that read nothing had no effect and is
// left out; one whose write got no answer may land any time before the
// final read, which was called at finalCall.
func counterOps(incs []record, clientID func(record) int, finalCall int64) (ops []porcupine.Operation, wrote, maybe int) {
	for _, r := range incs {
		if !r.ReadOK {
			continue
		}
		switch r.Write {
		case wroteYes:
			wrote++
		case wroteMaybe:
			maybe++
		}
		ret := r.End
		if r.Write == wroteMaybe {
			ret = finalCall - 1
		}
		ops = append(ops, porcupine.Operation{
			ClientId: clientID(r),
			Input:    counterInput{who: fmt.Sprintf("p%dg%d", r.Proc, r.G)},
			Call:     r.Start, Output: counterOutput{read: r.Read, write: r.Write}, Return: ret,
		})
	}
	return ops, wrote, maybe
}

// checkCounter checks with porcupine that ops, followed by the final read
// of the counter (final, read from call to ret), are a history of a
// counter.
func checkCounter(ops []porcupine.Operation, final int, call, ret int64) (porcupine.CheckResult, porcupine.LinearizationInfo) {
	ops = append(ops, porcupine.Operation{
		ClientId: 0, Input: counterInput{who: "final read", final: true},
		Call: call, Output: counterOutput{read: final}, Return: ret,
	})
	return porcupine.CheckOperationsVerbose(counterModel, ops, time.Minute)
}

// visualize writes porcupine's visualization of a history of lock's
// counter to a file in the temp folder, and returns its path, or why it
// could not.
func visualize(lock string, info porcupine.LinearizationInfo) string {
	path := filepath.Join(os.TempDir(), fmt.Sprintf("leaselock-torture-%s-%d.html", lock, time.Now().UnixNano()))
	if err := porcupine.VisualizePath(counterModel, info, path); err != nil {
		return "not written: " + err.Error()
	}
	return path
}

func stamp(ns int64) string { return time.Unix(0, ns).Format("15:04:05.000000") }

// getLease reads a Lease; nil when there is none.
func getLease(t *testing.T, c client.Client, ns, name string) *coordinationv1.Lease {
	t.Helper()
	lease := &coordinationv1.Lease{}
	err := c.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: name}, lease)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		t.Fatalf("get Lease %s/%s: %v", ns, name, err)
	}
	return lease
}

// checkLeases checks the Leases left in ns (see countLeases) and adds the
// counts to the table.
func checkLeases(t *testing.T, c client.Client, ns string, allowed func(*coordinationv1.Lease) bool) {
	t.Helper()
	leaked, crashed := countLeases(t, c, ns, allowed)
	figures.add(func(s *summary) {
		s.leaked += leaked
		s.crashLeft += crashed
	})
}

// countLeases lists the Leases left in ns, deletes those that allowed
// accepts (a crashed holder's), and fails t for the rest. testenv.Namespace
// checks the same at cleanup; this counts them for the table.
func countLeases(t *testing.T, c client.Client, ns string, allowed func(*coordinationv1.Lease) bool) (leaked, crashed int) {
	t.Helper()
	var list coordinationv1.LeaseList
	if err := c.List(context.Background(), &list, client.InNamespace(ns)); err != nil {
		t.Fatalf("list Leases: %v", err)
	}
	for i := range list.Items {
		l := &list.Items[i]
		if allowed != nil && allowed(l) {
			crashed++
			if err := c.Delete(context.Background(), l); err != nil {
				t.Errorf("delete crashed holder's Lease %s: %v", l.Name, err)
			}
			continue
		}
		leaked++
		t.Errorf("Lease %s left behind, held by %q", l.Name, ptr.Deref(l.Spec.HolderIdentity, ""))
	}
	return leaked, crashed
}

// checkDone checks that every worker that was not killed wrote its share of
// increments, and adds its faults and errors to the figures.
func checkDone(t *testing.T, recs []record, ops int, goroutines map[int]int) {
	t.Helper()
	faults := map[string]int{}
	doErrs := 0
	seen := map[int]bool{}
	for _, r := range recs {
		if r.Kind != "done" {
			continue
		}
		seen[r.Proc] = true
		if want := goroutines[r.Proc] * ops; r.Wrote != want {
			t.Errorf("worker %d wrote %d increments, want %d", r.Proc, r.Wrote, want)
		}
		for k, v := range r.Faults {
			faults[k] += v
		}
		doErrs += r.DoErr
	}
	for p := range goroutines {
		if !seen[p] {
			t.Errorf("worker %d did not report its totals", p)
		}
	}
	// The errors withlock returned, a few of each kind, for the log.
	shown := map[string]int{}
	for _, r := range recs {
		if r.Err != "" && shown[r.Lock] < 3 {
			shown[r.Lock]++
			t.Logf("p%d g%d on %s: withlock returned: %s (write: %q)", r.Proc, r.G, r.Lock, r.Err, r.Write)
		}
	}
	if len(faults) > 0 {
		t.Logf("faults injected: %s", faultList(faults))
	}
	figures.add(func(s *summary) {
		for k, v := range faults {
			s.faults[k] += v
		}
		s.doErrors += doErrs
	})
}
