package bench_test

import (
	"encoding/json"
	"os"
)

// figures are the medians of a run, as the table gives them, in the JSON
// that $LEASELOCK_BENCH_FIGURES asks for. hack/tools/benchchart reads it
// to draw docs/benchmarks.svg: a change of these fields is a change of
// that tool's input.
type figures struct {
	Scenarios []scenarioFigures `json:"scenarios"`
}

// scenarioFigures are one scenario's rows, in the table's order.
type scenarioFigures struct {
	Name string `json:"name"`
	// Runs is the number of runs of the first row, as the table's heading
	// gives it.
	Runs int          `json:"runs"`
	Rows []rowFigures `json:"rows"`
}

// rowFigures are one row's medians over runs, by column (wait-p50-ms,
// increments/s, ...); a column without a figure is absent.
type rowFigures struct {
	Name    string             `json:"name"`
	Medians map[string]float64 `json:"medians"`
}

// collectFigures returns the medians of every scenario and row recorded so
// far, for the columns of the table.
func collectFigures() figures {
	resultsMu.Lock()
	defer resultsMu.Unlock()
	var f figures
	for _, sc := range scenarios {
		sf := scenarioFigures{Name: sc, Runs: len(results[sc][rows[sc][0]])}
		for _, row := range rows[sc] {
			rf := rowFigures{Name: row, Medians: map[string]float64{}}
			for _, c := range columns {
				if v, ok := median(results[sc][row], c); ok {
					rf.Medians[c] = v
				}
			}
			sf.Rows = append(sf.Rows, rf)
		}
		f.Scenarios = append(f.Scenarios, sf)
	}
	return f
}

// writeFigures writes f to the file at path, as indented JSON.
func writeFigures(path string, f figures) error {
	data, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(data, '\n'), 0o644)
}
