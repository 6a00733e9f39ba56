package bench_test

import (
	"fmt"
	"slices"
	"strings"
)

// beforeCommit names the commit of the twins' library, its short hash and
// subject: before_test.go sets it under make bench-ab.
var beforeCommit string

// twinFigures are the figures on which a row is set against its twin, by
// scenario; the contended scenarios, not named, take contendedTwinFigures.
var twinFigures = map[string][]string{
	"uncontended":   {"ns/op", "median-ns", "allocs/op", "requests/op"},
	watchesScenario: {"heap-bytes/name", "goroutines/name", "server-watches/name", "server-goroutines/name", "requests/name", "connections", "watches-closed-ms"},
}

var contendedTwinFigures = []string{"increments/s", "wait-p50-ms", "wait-p99-ms", "requests/acq", "client-cpu-ms/acq", "server-cpu-ms/acq"}

// higherIsBetter names the figures of which more is better; of the others,
// less is.
var higherIsBetter = map[string]bool{"increments/s": true}

// spread is what a figure did over the runs: its median and its range.
type spread struct{ median, min, max float64 }

// spreadOf returns the spread of vs, and false when vs is empty.
func spreadOf(vs []float64) (spread, bool) {
	m, ok := middle(vs)
	if !ok {
		return spread{}, false
	}
	return spread{m, slices.Min(vs), slices.Max(vs)}, true
}

// width is how far apart the runs were.
func (s spread) width() float64 { return s.max - s.min }

// verdict is how a figure of a row fared against its twin's.
type verdict int

const (
	// unjudged: one of them has a single run, and no range to judge by.
	unjudged verdict = iota
	notWorse
	// worseInEveryRun: in every run (3 or more) the row's figure was worse
	// than its twin's of the same run, each by less than the spread.
	worseInEveryRun
	// worseBeyondSpread: the row's median is worse than its twin's by more
	// than the wider of the two ranges, more than the runs of either moved
	// (issue 19's test).
	worseBeyondSpread
)

func (v verdict) String() string {
	return [...]string{unjudged: "-", notWorse: "", worseInEveryRun: "in every run", worseBeyondSpread: "beyond the spread"}[v]
}

// twinFigure is one figure of a row beside its twin's.
type twinFigure struct {
	now, before spread
	// ratio is now over before, run by run; hasRatio is false when no run
	// has both, or both with a figure other than 0.
	ratio    spread
	hasRatio bool
	ratios   int // how many runs have a ratio
	verdict  verdict
}

// compareTwin returns row's figure metric beside its twin's, and false when
// either has no figure of it.
func compareTwin(sc, row, metric string) (twinFigure, bool) {
	nows, befores := figuresOf(results[sc][row], metric), figuresOf(results[sc][row+twinRow], metric)
	now, ok := spreadOf(nows)
	if !ok {
		return twinFigure{}, false
	}
	before, ok := spreadOf(befores)
	if !ok {
		return twinFigure{}, false
	}
	t := twinFigure{now: now, before: before}
	ratios := paired(sc, row, row+twinRow, func(m, ref map[string]float64) (float64, bool) {
		v, ok := m[metric]
		r, refOK := ref[metric]
		if !ok || !refOK || r == 0 {
			return 0, false
		}
		return v / r, true
	})
	t.ratio, t.hasRatio = spreadOf(ratios)
	t.ratios = len(ratios)
	worseBy, worseRatio := now.median-before.median, t.ratio.min > 1
	if higherIsBetter[metric] {
		worseBy, worseRatio = -worseBy, t.ratio.max < 1
	}
	switch {
	case len(nows) < 2 || len(befores) < 2:
		t.verdict = unjudged
	case worseBy > max(now.width(), before.width()):
		t.verdict = worseBeyondSpread
	case t.ratios >= 3 && worseRatio:
		t.verdict = worseInEveryRun
	default:
		t.verdict = notWorse
	}
	return t, true
}

// twinTable returns the table that sets each row of scenario sc that has a
// twin against it, figure by figure, or "" when none has.
func twinTable(sc string) string {
	figures, ok := twinFigures[sc]
	if !ok {
		figures = contendedTwinFigures
	}
	var lines strings.Builder
	for _, row := range rows[sc] {
		if strings.HasSuffix(row, twinRow) || results[sc][row+twinRow] == nil {
			continue
		}
		for _, metric := range figures {
			t, ok := compareTwin(sc, row, metric)
			if !ok {
				continue
			}
			ratio := ""
			if t.hasRatio {
				ratio = fmt.Sprintf("%.2fx (%.2f-%.2f)", t.ratio.median, t.ratio.min, t.ratio.max)
			}
			fmt.Fprintf(&lines, "|%s|%s|%s|%s|%s|%s|\n", row, metric, t.now, t.before, ratio, t.verdict)
		}
	}
	if lines.Len() == 0 {
		return ""
	}
	before := "before"
	if beforeCommit != "" {
		before += " (" + beforeCommit + ")"
	}
	return fmt.Sprintf("\n### %s: now against %s\n\n"+
		"Median (min-max) over the runs; now/before is taken run by run. Worse: beyond\n"+
		"the spread, when now's median is worse than before's by more than the wider\n"+
		"of their two ranges; in every run, when now was worse than before in each of\n"+
		"3 or more runs, by less than that (-: a single run, nothing to judge by).\n\n"+
		"| |figure|now|before|now/before|worse|\n|---|---|---:|---:|---:|---|\n%s",
		sc, before, lines.String())
}

// String formats s as its median and range, as the tables give figures.
func (s spread) String() string {
	return fmt.Sprintf("%s (%s-%s)", format(s.median), format(s.min), format(s.max))
}
