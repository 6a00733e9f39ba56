package main

// The drawing: two panels side by side, one row per contender, the same
// rows in each.

import (
	"bytes"
	"cmp"
	"fmt"
	"image/color"
	"io"
	"slices"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/font"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgsvg"
)

// The chart's size, fit for a README, and the height of its title line.
const (
	chartWidth  = 9 * vg.Inch
	chartHeight = 3 * vg.Inch
	titleHeight = 0.35 * vg.Inch
)

// The chart's colours: the median and the 99th percentile.
var (
	p50Colour = color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff}
	p99Colour = color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 0xff}
)

// drawChart writes d to w as an SVG chart: a title, then on the left each
// contender's wait for the lock, median and 99th percentile, on a log scale
// (the waits span three orders of magnitude), and on the right its
// increments per second, on a linear one.
func drawChart(w io.Writer, d chartData) error {
	// Sans-serif, for every text of the chart: the plots and plotters read
	// these defaults when they are made.
	plot.DefaultFont.Variant = "Sans"
	plotter.DefaultFont.Variant = "Sans"
	waits, err := waitPlot(d)
	if err != nil {
		return err
	}
	rates, err := ratePlot(d)
	if err != nil {
		return err
	}
	canvas := vgsvg.New(chartWidth, chartHeight)
	dc := draw.New(canvas)
	title := waits.Title.TextStyle
	title.Font = font.From(plot.DefaultFont, 13)
	dc.FillText(title, vg.Point{X: chartWidth / 2, Y: chartHeight - titleHeight/4},
		fmt.Sprintf("%s (median of %s)", d.scenario, plural(d.runs, "run")))
	body := draw.Crop(dc, 0, 0, 0, -titleHeight)
	tiles := draw.Tiles{Rows: 1, Cols: 2, PadX: vg.Inch / 4, PadLeft: vg.Inch / 8, PadRight: vg.Inch / 4, PadBottom: vg.Inch / 16}
	cs := plot.Align([][]*plot.Plot{{waits, rates}}, tiles, body)
	waits.Draw(cs[0][0])
	rates.Draw(cs[0][1])
	var svg bytes.Buffer
	if _, err := canvas.WriteTo(&svg); err != nil {
		return err
	}
	// The fonts are not embedded (that would add hundreds of KB): name the
	// fonts metric-compatible with Liberation Sans, whose widths the layout
	// used, and a generic one, for a viewer that lacks it.
	_, err = w.Write(bytes.ReplaceAll(svg.Bytes(), []byte("font-family:Liberation Sans;"),
		[]byte("font-family:Liberation Sans,Arimo,Arial,Helvetica,sans-serif;")))
	return err
}

// waitPlot is the left panel: per contender, a line from its median wait to
// its 99th percentile, a dot at each, and both figures beside them.
func waitPlot(d chartData) (*plot.Plot, error) {
	p := newPanel(d, "wait for the lock, ms (log scale)")
	p.X.Scale = plot.LogScale{}
	p.X.Tick.Marker = plot.LogTicks{Prec: -1}
	var p50s, p99s plotter.XYs
	var labels []string
	for i, c := range d.rows {
		y := rowY(d, i)
		p50s = append(p50s, plotter.XY{X: c.waitP50, Y: y})
		p99s = append(p99s, plotter.XY{X: c.waitP99, Y: y})
		labels = append(labels, fmt.Sprintf("%s / %s", ms(c.waitP50), ms(c.waitP99)))
		span, err := plotter.NewLine(plotter.XYs{{X: c.waitP50, Y: y}, {X: c.waitP99, Y: y}})
		if err != nil {
			return nil, err
		}
		span.Color = color.Gray{Y: 0x99}
		span.Width = vg.Points(2)
		p.Add(span)
	}
	for _, s := range []struct {
		name   string
		xys    plotter.XYs
		colour color.Color
	}{{"p50", p50s, p50Colour}, {"p99", p99s, p99Colour}} {
		dots, err := plotter.NewScatter(s.xys)
		if err != nil {
			return nil, err
		}
		dots.Color, dots.Shape, dots.Radius = s.colour, draw.CircleGlyph{}, vg.Points(4)
		p.Add(dots)
		p.Legend.Add(s.name, dots)
	}
	figures, err := plotter.NewLabels(plotter.XYLabels{XYs: p99s, Labels: labels})
	if err != nil {
		return nil, err
	}
	figures.Offset = vg.Point{X: vg.Points(8), Y: -vg.Points(4)}
	p.Add(figures)
	// Bottom right: the serial floor, the bottom row, has the shortest
	// waits, at the left.
	p.Legend.Top, p.Legend.Left = false, false
	p.Legend.TextStyle.Font = font.From(plot.DefaultFont, 10)
	// Room on the right for the figures, at either end for the dots.
	p.X.Min = slices.MinFunc(d.rows, func(a, b contender) int { return cmp.Compare(a.waitP50, b.waitP50) }).waitP50 / 2
	p.X.Max = slices.MaxFunc(d.rows, func(a, b contender) int { return cmp.Compare(a.waitP99, b.waitP99) }).waitP99 * 20
	return p, nil
}

// ratePlot is the right panel: per contender, a bar of its increments per
// second, with the figure at its end. Its rows are those of waitPlot,
// whose labels they share.
func ratePlot(d chartData) (*plot.Plot, error) {
	p := newPanel(d, "increments/s, all workers")
	values := make(plotter.Values, len(d.rows))
	var ends plotter.XYs
	var labels []string
	for i, c := range d.rows {
		values[int(rowY(d, i))] = c.perSec
		ends = append(ends, plotter.XY{X: c.perSec, Y: rowY(d, i)})
		labels = append(labels, rate(c.perSec))
	}
	bars, err := plotter.NewBarChart(values, vg.Points(14))
	if err != nil {
		return nil, err
	}
	bars.Horizontal = true
	bars.Color = p50Colour
	bars.LineStyle.Width = 0
	p.Add(bars)
	figures, err := plotter.NewLabels(plotter.XYLabels{XYs: ends, Labels: labels})
	if err != nil {
		return nil, err
	}
	figures.Offset = vg.Point{X: vg.Points(4), Y: -vg.Points(4)}
	p.Add(figures)
	p.X.Min = 0
	p.X.Max *= 1.2 // room for the figures
	// No names: they stand beside the same rows on the left, and would
	// take the room of the bars (a transparent colour is not honoured by
	// every SVG viewer).
	p.NominalY(make([]string, len(d.rows))...)
	return p, nil
}

// newPanel returns a panel with title, and a row per contender, the first
// at the top.
func newPanel(d chartData, title string) *plot.Plot {
	p := plot.New()
	p.Title.Text = title
	p.Title.TextStyle.Font = font.From(plot.DefaultFont, 11)
	names := make([]string, len(d.rows))
	for i, c := range d.rows {
		names[int(rowY(d, i))] = c.label
	}
	p.NominalY(names...)
	p.Y.Min, p.Y.Max = -0.6, float64(len(d.rows))-0.4
	return p
}

// rowY is the y of the i-th contender: the first at the top.
func rowY(d chartData, i int) float64 { return float64(len(d.rows) - 1 - i) }

// plural is n and noun, in the plural unless n is 1.
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// rate is a number of increments per second, with the digits that matter.
func rate(v float64) string {
	if v >= 10 {
		return fmt.Sprintf("%.0f", v)
	}
	return fmt.Sprintf("%.1f", v)
}

// ms is a wait in ms, with the digits that matter.
func ms(v float64) string {
	switch {
	case v >= 1000:
		return fmt.Sprintf("%.1fs", v/1000)
	case v >= 10:
		return fmt.Sprintf("%.0fms", v)
	default:
		return fmt.Sprintf("%.1fms", v)
	}
}
