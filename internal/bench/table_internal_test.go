package bench_test

import (
	"math"
	"testing"
)

// TestWaitOverBound: each run's wait p99 is judged against the serial row of
// the same run, and the table gives the median of those ratios.
func TestWaitOverBound(t *testing.T) {
	resultsMu.Lock()
	saved := results
	results = map[string]map[string][]map[string]float64{free8: {
		// 100/s alone: a 10ms cycle, so 8 contenders are bound to 160ms.
		serialRow: {{"increments/s": 100}, {"increments/s": 50}, {"increments/s": 100}},
		"leaselock": {
			{"contenders": 8, "wait-p99-ms": 80},  // 0.5
			{"contenders": 8, "wait-p99-ms": 160}, // 160 / 320: 0.5
			{"contenders": 8, "wait-p99-ms": 320}, // 2
		},
		"32 workers, 32 locks": {{"wait-p99-ms": 50}},
	}}
	resultsMu.Unlock()
	defer func() {
		resultsMu.Lock()
		results = saved
		resultsMu.Unlock()
	}()

	tests := []struct {
		row    string
		want   float64
		wantOK bool
	}{
		{row: "leaselock", want: 0.5, wantOK: true},
		{row: serialRow},
		{row: "32 workers, 32 locks"},
	}
	for _, tt := range tests {
		t.Run(tt.row, func(t *testing.T) {
			got, ok := waitOverBound(free8, tt.row)
			if ok != tt.wantOK || math.Abs(got-tt.want) > 1e-9 {
				t.Errorf("waitOverBound(%q) = %v, %v; want %v, %v", tt.row, got, ok, tt.want, tt.wantOK)
			}
		})
	}
}
