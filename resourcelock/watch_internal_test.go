package resourcelock

import (
	"testing"
	"time"
)

// TestHeadStart: waiters that saw the deletion go in order of handoffs
// waited, a gap apart, with a random half gap to break ties; the head start
// counts from the deletion, so a waiter that comes after it is over goes at
// once.
func TestHeadStart(t *testing.T) {
	const gap = 4 * time.Millisecond
	tests := []struct {
		name     string
		ahead    int
		seen     time.Duration
		min, max time.Duration
	}{
		{"head of the queue, deletion just seen", 0, 0, 0, gap / 2},
		{"behind the head", 1, 0, gap, gap + gap/2},
		{"three behind", 3, 0, 3 * gap, 3*gap + gap/2},
		{"waited more than the last winner", -2, 0, 0, gap / 2},
		{"three behind, seen a gap ago", 3, gap, 2 * gap, 2*gap + gap/2},
		{"arrives after the head starts are over", 7, time.Second, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for range 200 {
				if got := headStart(tt.ahead, gap, tt.seen); got < tt.min || got > tt.max {
					t.Fatalf("headStart(%d, %v, %v) = %v, want in [%v, %v]", tt.ahead, gap, tt.seen, got, tt.min, tt.max)
				}
			}
		})
	}
}
