package bench_test

import (
	"encoding/csv"
	"math"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/leaselock/leaselock/internal/testenv"
)

// TestPerRun: each run's figures are judged against the reference row of the
// same run, and the table gives the median of those ratios, not the ratio
// of the medians. Runs pair by the run they were measured in: the serial
// row's run 1 failed and was not recorded, so leaselock's run 1 has no pair
// and its runs 2 and 3 pair with the serial row's runs 2 and 3, not 1 and 2.
// A row without a wait p99 has no ratio to its bound.
func TestPerRun(t *testing.T) {
	resultsMu.Lock()
	saved := results
	results = map[string]map[string][]map[string]float64{free8: {
		// 100/s alone: a 10ms cycle, so 8 contenders are bound to 160ms.
		serialRow: {{"increments/s": 100, runKey: 0}, {"increments/s": 50, runKey: 2}, {"increments/s": 100, runKey: 3}},
		"leaselock": {
			{"contenders": 8, "wait-p99-ms": 80, "settled-wait-p99-ms": 40, "increments/s": 80, runKey: 0},  // 0.5 and 0.25 of its bound; 0.8 of the serial rate
			{"contenders": 8, "wait-p99-ms": 9999, "increments/s": 1, runKey: 1},                            // no pair
			{"contenders": 8, "wait-p99-ms": 160, "settled-wait-p99-ms": 80, "increments/s": 40, runKey: 2}, // 160 / 320: 0.5; 0.25; 0.8
			{"contenders": 8, "wait-p99-ms": 320, "increments/s": 20, runKey: 3},                            // 2; 0.2
		},
		"no waits":             {{"contenders": 8, "increments/s": 80, runKey: 0}},
		"32 workers, 32 locks": {{"wait-p99-ms": 50, runKey: 0}},
	}}
	resultsMu.Unlock()
	defer func() {
		resultsMu.Lock()
		results = saved
		resultsMu.Unlock()
	}()

	tests := []struct {
		name   string
		f      func(sc, row string) (float64, bool)
		row    string
		want   float64
		wantOK bool
	}{
		{name: "wait over bound", f: overBound("wait-p99-ms"), row: "leaselock", want: 0.5, wantOK: true},
		// Runs 0 and 2 have a settled wait, 0.25 of the bound each; run 3 none.
		{name: "settled wait over bound", f: overBound("settled-wait-p99-ms"), row: "leaselock", want: 0.25, wantOK: true},
		{name: "wait over bound of the serial row", f: overBound("wait-p99-ms"), row: serialRow},
		{name: "wait over bound of distinct locks", f: overBound("wait-p99-ms"), row: "32 workers, 32 locks"},
		{name: "wait over bound without a wait p99", f: overBound("wait-p99-ms"), row: "no waits"},
		// leaselock's increments/s over the serial row's: the median of 0.8,
		// 0.8 and 0.2, where the ratio of the medians would be 0.4.
		{name: "serial row versus leaselock", f: versus, row: serialRow, want: 0.8, wantOK: true},
		{name: "leaselock versus itself", f: versus, row: "leaselock", want: 1, wantOK: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := tt.f(free8, tt.row)
			if ok != tt.wantOK || math.Abs(got-tt.want) > 1e-9 {
				t.Errorf("%s(%q) = %v, %v; want %v, %v", tt.name, tt.row, got, ok, tt.want, tt.wantOK)
			}
		})
	}
}

// overBound is waitOverBound of the wait figure wait.
func overBound(wait string) func(sc, row string) (float64, bool) {
	return func(sc, row string) (float64, bool) { return waitOverBound(sc, row, wait) }
}

// TestQueueOf: the first meeting ends when the last worker releases its
// first section; a wait asked before that is not settled, even a worker's
// second. Turns count the holders that acquired while a section waited.
func TestQueueOf(t *testing.T) {
	began := time.Now()
	at := func(ms int) time.Time { return began.Add(time.Duration(ms) * time.Millisecond) }
	// Workers 0, 1 and 2 ask at 0 and are served in that order. Worker 0
	// asks again at 10, before worker 2's first turn ends at 30, and goes
	// after it; worker 1 asks again at 31, after, and goes last.
	byLock := map[string][]section{"shared": {
		{asked: at(31), acquired: at(45), released: at(50), worker: 1},
		{asked: at(0), acquired: at(0), released: at(10), worker: 0, first: true},
		{asked: at(10), acquired: at(32), released: at(40), worker: 0},
		{asked: at(0), acquired: at(11), released: at(20), worker: 1, first: true},
		{asked: at(0), acquired: at(21), released: at(30), worker: 2, first: true},
	}}
	q, n := queueOf(byLock)
	ms := func(ds ...int) []time.Duration {
		var out []time.Duration
		for _, d := range ds {
			out = append(out, time.Duration(d)*time.Millisecond)
		}
		return out
	}
	tests := []struct {
		name      string
		got, want []time.Duration
	}{
		{name: "waits", got: q.waits, want: ms(0, 11, 21, 22, 14)},
		{name: "later", got: q.later, want: ms(22, 14)},
		{name: "settled", got: q.settled, want: ms(14)},
		{name: "handoffs", got: q.handoffs, want: ms(1, 1, 2, 5)},
		// Turns are counts, kept as Durations for percentile.
		{name: "turns", got: q.turns, want: []time.Duration{0, 1, 2, 2, 1}},
	}
	for _, tt := range tests {
		if !slices.Equal(tt.got, tt.want) {
			t.Errorf("%s: got %v, want %v", tt.name, tt.got, tt.want)
		}
	}
	if n != 5 {
		t.Errorf("got %d sections, want 5", n)
	}
}

// TestAppendSections: two runs appended to one file give one header and a
// line per section, each lock's sections in order, times in microseconds
// from the start of its run; a row name with a comma survives.
func TestAppendSections(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sections.csv")
	began := time.Now()
	at := func(us int) time.Time { return began.Add(time.Duration(us) * time.Microsecond) }
	run := map[string][]section{
		"shared": {
			{asked: at(0), acquired: at(10), released: at(25), worker: 1},
			{asked: at(5), acquired: at(30), released: at(41), worker: 0, round: 2},
		},
	}
	for range 2 {
		if err := appendSections(path, "scale", "2 contenders, one lock", began, run); err != nil {
			t.Fatal(err)
		}
	}
	lines := readCSV(t, path)
	want := [][]string{
		{"scenario", "row", "lock", "worker", "round", "asked_us", "acquired_us", "released_us"},
		{"scale", "2 contenders, one lock", "shared", "1", "0", "0", "10", "25"},
		{"scale", "2 contenders, one lock", "shared", "0", "2", "5", "30", "41"},
	}
	want = append(want, want[1:]...)
	if !slices.EqualFunc(lines, want, slices.Equal) {
		t.Errorf("got %q, want %q", lines, want)
	}
}

// TestAppendRequests: the requests of a run are appended in the order sent,
// whatever order they were logged in, with their status and times in
// microseconds from the start of the run, under one header.
func TestAppendRequests(t *testing.T) {
	path := filepath.Join(t.TempDir(), "requests.csv")
	began := time.Now()
	at := func(us int) time.Time { return began.Add(time.Duration(us) * time.Microsecond) }
	log := []testenv.Request{
		{Verb: "delete", Resource: "leases", Sent: at(40), Took: 3 * time.Microsecond, Code: 200},
		{Verb: "create", Resource: "leases", Sent: at(10), Took: 25 * time.Microsecond, Code: 409},
	}
	for range 2 {
		if err := appendRequests(path, "scale", "32 contenders, one lock", began, log); err != nil {
			t.Fatal(err)
		}
	}
	lines := readCSV(t, path)
	want := [][]string{
		{"scenario", "row", "verb", "resource", "code", "sent_us", "took_us"},
		{"scale", "32 contenders, one lock", "create", "leases", "409", "10", "25"},
		{"scale", "32 contenders, one lock", "delete", "leases", "200", "40", "3"},
	}
	want = append(want, want[1:]...)
	if !slices.EqualFunc(lines, want, slices.Equal) {
		t.Errorf("got %q, want %q", lines, want)
	}
}

// readCSV returns the lines of the CSV file at path.
func readCSV(t *testing.T, path string) [][]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	lines, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	return lines
}

// TestRefFor: a twin (make bench-ab) is set against its reference's twin,
// where the scenario has one, and against the reference itself where it
// has none (the raw Lease floor has no twin); a row of the work tree is
// always set against the reference.
func TestRefFor(t *testing.T) {
	r := map[string]map[string][]map[string]float64{
		free8:         {"leaselock": {{}}, "leaselock" + twinRow: {{}}, "leaselock-poll-500ms" + twinRow: {{}}},
		"uncontended": {"raw-create-delete": {{}}, "leaselock" + twinRow: {{}}},
	}
	tests := []struct {
		sc, row, ref, want string
	}{
		{free8, "leaselock-poll-500ms" + twinRow, "leaselock", "leaselock" + twinRow},
		{free8, "leaselock-poll-500ms", "leaselock", "leaselock"},
		{"uncontended", "leaselock" + twinRow, "raw-create-delete", "raw-create-delete"},
	}
	withResults(t, r, nil, func() {
		for _, tt := range tests {
			if got := refFor(tt.sc, tt.row, tt.ref); got != tt.want {
				t.Errorf("refFor(%q, %q, %q): got %q, want %q", tt.sc, tt.row, tt.ref, got, tt.want)
			}
		}
	})
}
