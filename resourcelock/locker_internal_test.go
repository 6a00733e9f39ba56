package resourcelock

import (
	"fmt"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	testingclock "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
)

// TestHeldRecordIsNoCache: a locker that holds more than maxTracked locks
// at once keeps the record of every one, since what a refresh or a release
// of a lock does depends on it; at maxTracked it forgets only the locks
// whose Lease has expired, which their callers never released.
func TestHeldRecordIsNoCache(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name     string
		expired  int // of the maxTracked held before, how many expired
		wantKept int // of those, how many are still recorded after one more
	}{
		{name: "none expired", expired: 0, wantKept: maxTracked},
		{name: "some expired", expired: 100, wantKept: maxTracked - 100},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rl := NewResourceLocker(fake.NewClientBuilder().Build(), "default",
				WithClock(testingclock.NewFakeClock(now)), WithMetrics(nil))
			for i := range maxTracked {
				at := now
				if i < tt.expired {
					at = now.Add(-rl.leaseDuration - time.Second)
				}
				rl.held[holding{fmt.Sprintf("lock-%d", i), "me"}] = acquisition{at: at}
			}
			lease := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "one-more", UID: "u", ResourceVersion: "1"}}
			rl.acquired("one-more", "me", lease, now)
			kept := 0
			for i := range maxTracked {
				if _, ok := rl.held[holding{fmt.Sprintf("lock-%d", i), "me"}]; ok {
					kept++
					if i < tt.expired {
						t.Errorf("lock-%d, expired, is still recorded", i)
					}
				}
			}
			if kept != tt.wantKept {
				t.Errorf("locks recorded of the %d held before: got %d, want %d", maxTracked, kept, tt.wantKept)
			}
			if _, ok := rl.held[holding{"one-more", "me"}]; !ok {
				t.Error("the new lock is not recorded")
			}
		})
	}
}
