// Command benchchart draws the chart of docs/benchmarks.svg from the figures
// of a `make bench` run: for leaselock and its baselines in one scenario,
// the wait for the lock (median and 99th percentile) and the increments per
// second. `make bench` runs it after the benchmarks:
//
//	benchchart -in bin/bench-figures.json -out docs/benchmarks.svg
//
// It exits 1 when the figures cannot be read or lack a row or a figure of
// the chart, and 2 on a bad flag.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
)

func main() {
	in := flag.String("in", "", "the figures: the JSON file that internal/bench writes to $LEASELOCK_BENCH_FIGURES")
	out := flag.String("out", "", "the SVG file to write")
	scenario := flag.String("scenario", defaultScenario, "the scenario to draw, as named in the benchmark's table")
	flag.Parse()
	if *in == "" || *out == "" || flag.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "usage: benchchart -in FIGURES.json -out CHART.svg [-scenario NAME]")
		os.Exit(2)
	}
	if err := run(*in, *out, *scenario); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// run reads the figures at in and writes the chart of scenario to out. On
// an error, out is left as it was.
func run(in, out, scenario string) error {
	f, err := os.Open(in)
	if err != nil {
		return fmt.Errorf("benchchart: %w", err)
	}
	defer f.Close()
	figs, err := readFigures(f)
	if err != nil {
		return err
	}
	d, err := selectData(figs, scenario)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(out), ".benchchart-*.svg")
	if err != nil {
		return fmt.Errorf("benchchart: %w", err)
	}
	defer os.Remove(tmp.Name()) // after the rename, there is none
	if err := errors.Join(drawChart(tmp, d), tmp.Chmod(0o644), tmp.Close()); err != nil {
		return fmt.Errorf("benchchart: write %s: %w", out, err)
	}
	return os.Rename(tmp.Name(), out)
}
