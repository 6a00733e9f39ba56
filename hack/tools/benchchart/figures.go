package main

// The input: the figures that internal/bench writes when
// $LEASELOCK_BENCH_FIGURES names a file (its figures_test.go defines them),
// and the choice of the few the chart draws.

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
)

// figures are the medians of one `make bench` run.
type figures struct {
	Scenarios []scenarioFigures `json:"scenarios"`
}

// scenarioFigures are one scenario's rows, and how many runs it had.
type scenarioFigures struct {
	Name string       `json:"name"`
	Runs int          `json:"runs"`
	Rows []rowFigures `json:"rows"`
}

// rowFigures are one row's medians, by column.
type rowFigures struct {
	Name    string             `json:"name"`
	Medians map[string]float64 `json:"medians"`
}

// defaultScenario is the scenario the chart draws unless told otherwise:
// replicas that each reconcile the same event, which is how controllers
// meet at a lock.
const defaultScenario = "8 workers, one lock, one increment each per round"

// contenders are the rows the chart draws, top to bottom, with the label
// each has on it.
var contenders = []struct{ row, label string }{
	{"leaselock", "leaselock"},
	{"leaselock-poll-500ms", "polling every 500ms"},
	{"client-go-leaderelection", "client-go leader election"},
	{"serial floor (1 worker)", "serial floor (1 worker)"},
}

// The columns the chart draws.
const (
	waitP50   = "wait-p50-ms"
	waitP99   = "wait-p99-ms"
	perSecond = "increments/s"
)

// contender is one row of the chart: how long a waiter waited for the lock
// (median and 99th percentile, in ms) and how many increments all workers
// made per second.
type contender struct {
	label                    string
	waitP50, waitP99, perSec float64
}

// chartData is what the chart shows: the scenario, its number of runs, and
// its contenders in the order of contenders.
type chartData struct {
	scenario string
	runs     int
	rows     []contender
}

var errNoFigures = errors.New("benchchart: no figures")

// readFigures decodes the figures that r holds.
func readFigures(r io.Reader) (figures, error) {
	var f figures
	if err := json.NewDecoder(r).Decode(&f); err != nil {
		return figures{}, fmt.Errorf("benchchart: read figures: %w", err)
	}
	if len(f.Scenarios) == 0 {
		return figures{}, errNoFigures
	}
	return f, nil
}

// selectData returns the contenders of scenario in f. Each must be there
// with its three figures, and its waits above zero (the wait axis is
// logarithmic): a chart with a row missing would mislead.
func selectData(f figures, scenario string) (chartData, error) {
	i := slices.IndexFunc(f.Scenarios, func(sc scenarioFigures) bool { return sc.Name == scenario })
	if i < 0 {
		return chartData{}, fmt.Errorf("benchchart: no scenario %q in the figures", scenario)
	}
	sc := f.Scenarios[i]
	d := chartData{scenario: sc.Name, runs: sc.Runs}
	for _, c := range contenders {
		j := slices.IndexFunc(sc.Rows, func(r rowFigures) bool { return r.Name == c.row })
		if j < 0 {
			return chartData{}, fmt.Errorf("benchchart: scenario %q has no row %q", scenario, c.row)
		}
		ct := contender{label: c.label}
		for _, fig := range []struct {
			column string
			into   *float64
		}{{waitP50, &ct.waitP50}, {waitP99, &ct.waitP99}, {perSecond, &ct.perSec}} {
			v, ok := sc.Rows[j].Medians[fig.column]
			if !ok || v <= 0 {
				return chartData{}, fmt.Errorf("benchchart: scenario %q, row %q: %s is %s, want a figure above 0",
					scenario, c.row, fig.column, describe(v, ok))
			}
			*fig.into = v
		}
		d.rows = append(d.rows, ct)
	}
	return d, nil
}

// describe is v for an error message, or "missing".
func describe(v float64, ok bool) string {
	if !ok {
		return "missing"
	}
	return fmt.Sprint(v)
}
