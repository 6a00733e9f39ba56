package main

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// rowsJSON is a scenario's rows in the bench's JSON, each with medians, in
// an order other than the chart's; drop leaves a row out, and edit
// changes a row's medians.
func rowsJSON(drop string, edit map[string]string) string {
	medians := map[string]string{
		"serial floor (1 worker)":  `{"wait-p50-ms": 9.5, "wait-p99-ms": 14, "increments/s": 105}`,
		"client-go-leaderelection": `{"wait-p50-ms": 3100, "wait-p99-ms": 15800, "increments/s": 0.9}`,
		"leaselock":                `{"wait-p50-ms": 41, "wait-p99-ms": 96, "increments/s": 70, "requests/acq": 3.1}`,
		"leaselock-poll-500ms":     `{"wait-p50-ms": 480, "wait-p99-ms": 1900, "increments/s": 9.8}`,
	}
	var rows []string
	for _, name := range []string{"serial floor (1 worker)", "client-go-leaderelection", "leaselock", "leaselock-poll-500ms"} {
		if name == drop {
			continue
		}
		m := medians[name]
		if e, ok := edit[name]; ok {
			m = e
		}
		rows = append(rows, `{"name": "`+name+`", "medians": `+m+`}`)
	}
	return strings.Join(rows, ",\n")
}

func TestSelectData(t *testing.T) {
	other := `{"name": "8 workers, one lock, free-running", "runs": 5, "rows": [{"name": "leaselock", "medians": {"wait-p50-ms": 1, "wait-p99-ms": 2, "increments/s": 3}}]}`
	scenario := func(rows string) string {
		return `{"scenarios": [` + other + `, {"name": "` + defaultScenario + `", "runs": 5, "rows": [` + rows + `]}]}`
	}
	want := chartData{scenario: defaultScenario, runs: 5, rows: []contender{
		{label: "leaselock", waitP50: 41, waitP99: 96, perSec: 70},
		{label: "polling every 500ms", waitP50: 480, waitP99: 1900, perSec: 9.8},
		{label: "client-go leader election", waitP50: 3100, waitP99: 15800, perSec: 0.9},
		{label: "serial floor (1 worker)", waitP50: 9.5, waitP99: 14, perSec: 105},
	}}
	tests := []struct {
		name     string
		json     string
		scenario string
		want     chartData
		wantErr  string // a part of the error; "" for none
	}{
		{name: "the four rows, in the chart's order", json: scenario(rowsJSON("", nil)), scenario: defaultScenario, want: want},
		{name: "another scenario", json: scenario(rowsJSON("", nil)), scenario: "8 workers, one lock, free-running",
			wantErr: `has no row "leaselock-poll-500ms"`},
		{name: "no such scenario", json: scenario(rowsJSON("", nil)), scenario: "scale", wantErr: `no scenario "scale"`},
		{name: "a row missing", json: scenario(rowsJSON("client-go-leaderelection", nil)), scenario: defaultScenario,
			wantErr: `no row "client-go-leaderelection"`},
		{name: "a figure missing", json: scenario(rowsJSON("", map[string]string{"leaselock": `{"wait-p50-ms": 41, "increments/s": 70}`})),
			scenario: defaultScenario, wantErr: `row "leaselock": wait-p99-ms is missing`},
		{name: "a wait of zero", json: scenario(rowsJSON("", map[string]string{"serial floor (1 worker)": `{"wait-p50-ms": 0, "wait-p99-ms": 14, "increments/s": 105}`})),
			scenario: defaultScenario, wantErr: `wait-p50-ms is 0, want a figure above 0`},
		{name: "no scenarios", json: `{"scenarios": []}`, scenario: defaultScenario, wantErr: errNoFigures.Error()},
		{name: "not JSON", json: `| |increments/s|`, scenario: defaultScenario, wantErr: "read figures"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := read(tt.json, tt.scenario)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("got error %v, want none", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("got error %v, want one with %q", err, tt.wantErr)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

// read is readFigures and selectData in one.
func read(json, scenario string) (chartData, error) {
	f, err := readFigures(strings.NewReader(json))
	if err != nil {
		return chartData{}, err
	}
	return selectData(f, scenario)
}

// TestDrawChart draws a chart of the figures and checks that it is an SVG
// with every contender's label and figures in it.
func TestDrawChart(t *testing.T) {
	d, err := read(`{"scenarios": [{"name": "`+defaultScenario+`", "runs": 5, "rows": [`+rowsJSON("", nil)+`]}]}`, defaultScenario)
	if err != nil {
		t.Fatal(err)
	}
	var sb strings.Builder
	if err := drawChart(&sb, d); err != nil {
		t.Fatal(err)
	}
	svg := sb.String()
	for _, want := range []string{"<svg", "leaselock", "polling every 500ms", "client-go leader election",
		"serial floor (1 worker)", "41ms / 96ms", "3.1s / 15.8s", "105", "median of 5 runs", "sans-serif"} {
		if !strings.Contains(svg, want) {
			t.Errorf("no %q in the chart", want)
		}
	}
}

// TestRun: run writes the chart over the old one, and on an error leaves
// the old one as it was.
func TestRun(t *testing.T) {
	good := `{"scenarios": [{"name": "` + defaultScenario + `", "runs": 5, "rows": [` + rowsJSON("", nil) + `]}]}`
	bad := `{"scenarios": [{"name": "` + defaultScenario + `", "runs": 5, "rows": [` + rowsJSON("leaselock", nil) + `]}]}`
	tests := []struct {
		name    string
		figures string
		wantErr bool
		want    string // a part of the file at out after the run
	}{
		{name: "good figures", figures: good, want: "<svg"},
		{name: "a row missing", figures: bad, wantErr: true, want: "the old chart"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			in, out := filepath.Join(dir, "figures.json"), filepath.Join(dir, "chart.svg")
			if err := os.WriteFile(in, []byte(tt.figures), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(out, []byte("the old chart"), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := run(in, out, defaultScenario); (err != nil) != tt.wantErr {
				t.Errorf("run: got error %v, want one: %v", err, tt.wantErr)
			}
			data, err := os.ReadFile(out)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(string(data), tt.want) {
				t.Errorf("chart after the run: got %.40q..., want %q in it", data, tt.want)
			}
			if left, _ := filepath.Glob(filepath.Join(dir, ".benchchart-*")); len(left) > 0 {
				t.Errorf("temporary files left: got %q, want none", left)
			}
		})
	}
}
