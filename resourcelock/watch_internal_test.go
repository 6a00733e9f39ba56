package resourcelock

import (
	"testing"
	"time"
)

// TestHeadStart: waiters that saw the deletion go in order of handoffs
// waited, a gap apart, with a random tie-break; the head start counts from
// the deletion, so a waiter that comes after it is over goes at once.
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
				if got := headStart(tt.ahead, gap, gap/2, tt.seen); got < tt.min || got > tt.max {
					t.Fatalf("headStart(%d, %v, %v) = %v, want in [%v, %v]", tt.ahead, gap, tt.seen, got, tt.min, tt.max)
				}
			}
		})
	}
}

// TestTieWindow: an eighth of a gap until a call's Create collides, then
// doubling up to half a gap, so the tie-break never reaches the next slot.
func TestTieWindow(t *testing.T) {
	const gap = 8 * time.Millisecond
	tests := []struct {
		collisions int
		want       time.Duration
	}{
		{0, time.Millisecond},
		{1, 2 * time.Millisecond},
		{2, 4 * time.Millisecond},
		{9, 4 * time.Millisecond},
	}
	for _, tt := range tests {
		if got := tieWindow(gap, tt.collisions); got != tt.want {
			t.Errorf("tieWindow(%v, %d): got %v, want %v", gap, tt.collisions, got, tt.want)
		}
	}
}
