package bench_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// TestFigures: the figures written for the chart are the table's medians,
// scenario by scenario and row by row in the order recorded, with only the
// table's columns (not the run tag, nor the contenders), and a figure that
// no run of a row has is absent, not zero.
func TestFigures(t *testing.T) {
	r := map[string]map[string][]map[string]float64{
		rounds8: {
			serialRow: {
				{"increments/s": 100, "wait-p50-ms": 4, runKey: 0},
				{"increments/s": 50, "wait-p50-ms": 6, runKey: 1},
				{"increments/s": 90, "wait-p50-ms": 5, runKey: 2},
			},
			"leaselock": {
				{"increments/s": 80, "wait-p50-ms": 40, "wait-p99-ms": 90, "contenders": 8, runKey: 0},
				{"increments/s": 70, "wait-p50-ms": 50, "wait-p99-ms": 70, "contenders": 8, runKey: 1},
			},
		},
		"uncontended": {"leaselock": {{"ns/op": 2e6, runKey: 0}}},
	}
	// withResults orders the scenarios by name: rounds8 comes first.
	withResults(t, r, map[string][]string{rounds8: {serialRow, "leaselock"}, "uncontended": {"leaselock"}}, func() {
		checkFigures(t)
	})
}

// checkFigures checks the figures of TestFigures' results.
func checkFigures(t *testing.T) {
	t.Helper()
	want := figures{Scenarios: []scenarioFigures{
		{Name: rounds8, Runs: 3, Rows: []rowFigures{
			{Name: serialRow, Medians: map[string]float64{"increments/s": 90, "wait-p50-ms": 5}},
			// Two runs: the median is the mean of the two.
			{Name: "leaselock", Medians: map[string]float64{"increments/s": 75, "wait-p50-ms": 45, "wait-p99-ms": 80}},
		}},
		{Name: "uncontended", Runs: 1, Rows: []rowFigures{
			{Name: "leaselock", Medians: map[string]float64{"ns/op": 2e6}},
		}},
	}}
	got := collectFigures()
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v, want %+v", got, want)
	}

	path := filepath.Join(t.TempDir(), "figures.json")
	if err := writeFigures(path, got); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var read figures
	if err := json.Unmarshal(data, &read); err != nil {
		t.Fatalf("read back %s: %v", data, err)
	}
	if !reflect.DeepEqual(read, want) {
		t.Errorf("read back: got %+v, want %+v", read, want)
	}
}
