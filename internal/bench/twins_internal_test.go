package bench_test

import (
	"math"
	"slices"
	"testing"
)

// withResults runs f with results, scenarios and rows set to the figures
// given, and puts the run's own back after.
func withResults(t *testing.T, r map[string]map[string][]map[string]float64, rs map[string][]string, f func()) {
	t.Helper()
	resultsMu.Lock()
	savedResults, savedScenarios, savedRows := results, scenarios, rows
	results, rows, scenarios = r, rs, slices.Sorted(func(yield func(string) bool) {
		for sc := range rs {
			if !yield(sc) {
				return
			}
		}
	})
	resultsMu.Unlock()
	defer func() {
		resultsMu.Lock()
		results, scenarios, rows = savedResults, savedScenarios, savedRows
		resultsMu.Unlock()
	}()
	f()
}

// TestWaitOverBoundOfTwin: a twin's wait is over the bound of the serial
// row's twin in the same run, not the serial row's.
func TestWaitOverBoundOfTwin(t *testing.T) {
	r := map[string]map[string][]map[string]float64{free8: {
		serialRow:                            {{"increments/s": 100, runKey: 0}}, // bound 160ms
		serialRow + twinRow:                  {{"increments/s": 50, runKey: 0}},  // bound 320ms
		"leaselock":                          {{"contenders": 8, "wait-p99-ms": 80, runKey: 0}},
		"leaselock" + twinRow:                {{"contenders": 8, "wait-p99-ms": 80, runKey: 0}},
		"client-go-leaderelection" + twinRow: {{"contenders": 8, "wait-p99-ms": 160, runKey: 1}},
	}}
	tests := []struct {
		row    string
		want   float64
		wantOK bool
	}{
		{row: "leaselock", want: 0.5, wantOK: true},
		{row: "leaselock" + twinRow, want: 0.25, wantOK: true},
		{row: serialRow + twinRow},
		// No twin of the serial row in its run: no bound.
		{row: "client-go-leaderelection" + twinRow},
	}
	withResults(t, r, map[string][]string{free8: nil}, func() {
		for _, tt := range tests {
			got, ok := waitOverBound(free8, tt.row, "wait-p99-ms")
			if ok != tt.wantOK || math.Abs(got-tt.want) > 1e-9 {
				t.Errorf("waitOverBound(%q) = %v, %v; want %v, %v", tt.row, got, ok, tt.want, tt.wantOK)
			}
		}
	})
}

// TestPermutations: every order once, lexicographic, so that the
// uncontended loop of two cycles alternates them as it always has.
func TestPermutations(t *testing.T) {
	tests := []struct {
		n    int
		want [][]int
	}{
		{n: 1, want: [][]int{{0}}},
		{n: 2, want: [][]int{{0, 1}, {1, 0}}},
		{n: 3, want: [][]int{{0, 1, 2}, {0, 2, 1}, {1, 0, 2}, {1, 2, 0}, {2, 0, 1}, {2, 1, 0}}},
	}
	for _, tt := range tests {
		if got := permutations(tt.n); !slices.EqualFunc(got, tt.want, slices.Equal) {
			t.Errorf("permutations(%d): got %v, want %v", tt.n, got, tt.want)
		}
	}
}
