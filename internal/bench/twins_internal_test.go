package bench_test

import (
	"math"
	"slices"
	"strings"
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

// TestSpreadOf: the median of an even count is the mean of the middle two,
// the range is the least and the greatest, and the figures given keep
// their order.
func TestSpreadOf(t *testing.T) {
	tests := []struct {
		name   string
		vs     []float64
		want   spread
		wantOK bool
	}{
		{name: "none"},
		{name: "one", vs: []float64{3}, want: spread{3, 3, 3}, wantOK: true},
		{name: "odd", vs: []float64{5, 1, 4, 2, 3}, want: spread{3, 1, 5}, wantOK: true},
		{name: "even", vs: []float64{4, 1, 2, 10}, want: spread{3, 1, 10}, wantOK: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			given := slices.Clone(tt.vs)
			got, ok := spreadOf(tt.vs)
			if got != tt.want || ok != tt.wantOK {
				t.Errorf("spreadOf(%v) = %+v, %v; want %+v, %v", tt.vs, got, ok, tt.want, tt.wantOK)
			}
			if !slices.Equal(tt.vs, given) {
				t.Errorf("spreadOf sorted its input: got %v, want %v", tt.vs, given)
			}
		})
	}
}

// TestCompareTwin: a row's figures beside its twin's, each with its median
// and range over the runs, and the median of their ratio taken run by run:
// a run that only one of them has is in its spread, but in no ratio. Worse
// is judged by the figure's direction: beyond the wider of the two ranges,
// or, short of that, in every run of 3 or more.
func TestCompareTwin(t *testing.T) {
	const twin = "leaselock" + twinRow
	r := map[string]map[string][]map[string]float64{free8: {
		"leaselock": {
			{"increments/s": 60, "wait-p99-ms": 100, "requests/acq": 2.3, "wait-p50-ms": 10, runKey: 0},
			{"increments/s": 70, "wait-p99-ms": 120, "requests/acq": 2.4, runKey: 1},
			{"increments/s": 50, "wait-p99-ms": 110, "requests/acq": 2.5, runKey: 2},
			{"increments/s": 10, "wait-p99-ms": 999, "requests/acq": 9.0, runKey: 3}, // the twin's run 3 failed
		},
		twin: {
			{"increments/s": 50, "wait-p99-ms": 100, "requests/acq": 2.0, "client-cpu-ms/acq": 0, "wait-p50-ms": 5, runKey: 0},
			{"increments/s": 70, "wait-p99-ms": 100, "requests/acq": 2.0, "client-cpu-ms/acq": 0, runKey: 1},
			{"increments/s": 100, "wait-p99-ms": 50, "requests/acq": 2.1, "client-cpu-ms/acq": 0, runKey: 2},
		},
	}}
	tests := []struct {
		name, metric string
		want         twinFigure
		wantOK       bool
	}{
		{
			// now 10-70, before 50-100: a median 15 lower is within the range
			// of 60; run by run 60/50, 70/70, 50/100.
			name: "higher is better, within the spread", metric: "increments/s", wantOK: true,
			want: twinFigure{now: spread{55, 10, 70}, before: spread{70, 50, 100}, ratio: spread{1, 0.5, 1.2}, hasRatio: true, ratios: 3, verdict: notWorse},
		},
		{
			// now 100-999: its median, 115, is 15 above before's 100, within
			// now's own range.
			name: "lower is better, within the spread", metric: "wait-p99-ms", wantOK: true,
			want: twinFigure{now: spread{115, 100, 999}, before: spread{100, 50, 100}, ratio: spread{1.2, 1, 2.2}, hasRatio: true, ratios: 3, verdict: notWorse},
		},
		{
			// now's median 2.45 is 0.45 above before's 2.0, where the ranges
			// are 6.7 and 0.1: within. Without run 3 (below) it is not. But
			// each of the 3 runs both have is worse: 1.15, 1.2 and 1.19.
			name: "lower is better, a run of one side only", metric: "requests/acq", wantOK: true,
			want: twinFigure{now: spread{2.45, 2.3, 9.0}, before: spread{2.0, 2.0, 2.1}, ratio: spread{2.5 / 2.1, 1.15, 1.2}, hasRatio: true, ratios: 3, verdict: worseInEveryRun},
		},
		{
			// One run each: 10 against 5, but no range to judge it by.
			name: "a single run", metric: "wait-p50-ms", wantOK: true,
			want: twinFigure{now: spread{10, 10, 10}, before: spread{5, 5, 5}, ratio: spread{2, 2, 2}, hasRatio: true, ratios: 1, verdict: unjudged},
		},
		{name: "a figure the row has not", metric: "client-cpu-ms/acq"},
		{name: "a figure neither has", metric: "server-cpu-ms/acq"},
	}
	withResults(t, r, map[string][]string{free8: {"leaselock", twin}}, func() {
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				got, ok := compareTwin(free8, "leaselock", tt.metric)
				if ok != tt.wantOK || !closeTwin(got, tt.want) {
					t.Errorf("compareTwin(%q) = %+v, %v; want %+v, %v", tt.metric, got, ok, tt.want, tt.wantOK)
				}
			})
		}
	})

	// Without the run that only the row has, now's range is 0.2, and its
	// median 0.4 above before's: worse.
	r[free8]["leaselock"] = r[free8]["leaselock"][:3]
	withResults(t, r, map[string][]string{free8: {"leaselock", twin}}, func() {
		got, _ := compareTwin(free8, "leaselock", "requests/acq")
		want := twinFigure{now: spread{2.4, 2.3, 2.5}, before: spread{2.0, 2.0, 2.1}, ratio: spread{2.5 / 2.1, 1.15, 1.2}, hasRatio: true, ratios: 3, verdict: worseBeyondSpread}
		if !closeTwin(got, want) {
			t.Errorf("without run 3: got %+v, want %+v", got, want)
		}
	})
}

// TestCompareTwinDirection: fewer increments/s is worse, fewer requests
// better, each beyond ranges of 2.
func TestCompareTwinDirection(t *testing.T) {
	const twin = "leaselock" + twinRow
	r := map[string]map[string][]map[string]float64{free8: {
		"leaselock": {
			{"increments/s": 50, "requests/acq": 50, runKey: 0},
			{"increments/s": 51, "requests/acq": 51, runKey: 1},
			{"increments/s": 52, "requests/acq": 52, runKey: 2},
		},
		twin: {
			{"increments/s": 60, "requests/acq": 60, runKey: 0},
			{"increments/s": 61, "requests/acq": 61, runKey: 1},
			{"increments/s": 62, "requests/acq": 62, runKey: 2},
		},
	}}
	tests := []struct {
		metric string
		want   verdict
	}{
		{metric: "increments/s", want: worseBeyondSpread},
		{metric: "requests/acq", want: notWorse},
	}
	withResults(t, r, map[string][]string{free8: {"leaselock", twin}}, func() {
		for _, tt := range tests {
			got, ok := compareTwin(free8, "leaselock", tt.metric)
			if !ok || got.verdict != tt.want {
				t.Errorf("compareTwin(%q): got verdict %q (%v), want %q", tt.metric, got.verdict, ok, tt.want)
			}
		}
	})
}

// closeTwin reports whether a and b are the same figures, but for rounding.
func closeTwin(a, b twinFigure) bool {
	close := func(x, y spread) bool {
		return math.Abs(x.median-y.median) < 1e-9 && math.Abs(x.min-y.min) < 1e-9 && math.Abs(x.max-y.max) < 1e-9
	}
	return close(a.now, b.now) && close(a.before, b.before) && close(a.ratio, b.ratio) &&
		a.hasRatio == b.hasRatio && a.ratios == b.ratios && a.verdict == b.verdict
}

// TestTwinTable: a scenario's rows with a twin are set against it, figure
// by figure, in the order of the rows and of the figures; a row without a
// twin, and a twin itself, have no line; a figure 0 in the twin has no
// ratio; a figure of one run each is not judged. The table heading names
// the twins' commit. The scenario's table ends with it.
func TestTwinTable(t *testing.T) {
	r := map[string]map[string][]map[string]float64{
		"uncontended": {
			"leaselock": {
				{"ns/op": 8e6, "median-ns": 7e6, "allocs/op": 400, "requests/op": 2, runKey: 0},
				{"ns/op": 9e6, "median-ns": 8e6, "allocs/op": 400, runKey: 1},
			},
			"raw-create-delete": {{"ns/op": 7e6, runKey: 0}, {"ns/op": 7e6, runKey: 1}},
			"leaselock" + twinRow: {
				{"ns/op": 6e6, "median-ns": 6e6, "allocs/op": 0, "requests/op": 2, runKey: 0},
				{"ns/op": 8e6, "median-ns": 7e6, "allocs/op": 0, runKey: 1},
			},
		},
	}
	savedCommit := beforeCommit
	beforeCommit = "cd551cf a subject"
	defer func() { beforeCommit = savedCommit }()
	want := `
### uncontended: now against before (cd551cf a subject)

Median (min-max) over the runs; now/before is taken run by run. Worse: beyond
the spread, when now's median is worse than before's by more than the wider
of their two ranges; in every run, when now was worse than before in each of
3 or more runs, by less than that (-: a single run, nothing to judge by).

| |figure|now|before|now/before|worse|
|---|---|---:|---:|---:|---|
|leaselock|ns/op|8500000 (8000000-9000000)|7000000 (6000000-8000000)|1.23x (1.12-1.33)||
|leaselock|median-ns|7500000 (7000000-8000000)|6500000 (6000000-7000000)|1.15x (1.14-1.17)||
|leaselock|allocs/op|400.0 (400.0-400.0)|0.00 (0.00-0.00)||beyond the spread|
|leaselock|requests/op|2.00 (2.00-2.00)|2.00 (2.00-2.00)|1.00x (1.00-1.00)|-|
`
	withResults(t, r, map[string][]string{"uncontended": {"leaselock", "raw-create-delete", "leaselock" + twinRow}}, func() {
		if got := twinTable("uncontended"); got != want {
			t.Errorf("got\n%s\nwant\n%s", got, want)
		}
		if got := table(); !strings.HasSuffix(got, want) {
			t.Errorf("the scenario's table ends\n%s\nwant it to end with the twins'\n%s", got, want)
		}
		if got := twinTable(rounds8); got != "" {
			t.Errorf("a scenario without rows: got %q, want none", got)
		}
	})
	withResults(t, r, map[string][]string{"uncontended": {"leaselock", "raw-create-delete"}}, func() {
		delete(r["uncontended"], "leaselock"+twinRow)
		if got := twinTable("uncontended"); got != "" {
			t.Errorf("no twin: got %q, want no table", got)
		}
	})
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
