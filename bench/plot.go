package main

import (
	"fmt"
	"image/color"
	"math"
	"os"
	"slices"
	"strconv"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// writePlot draws the lifecycle load of r into a PNG at path: events/s
// against clients (with the single-commit and group-commit floors) beside
// p99 latency against clients, a line per system.
func writePlot(r *Results, path string) error {
	clients := slices.Clone(r.Settings.Clients)
	slices.Sort(clients)
	if len(clients) == 0 {
		return fmt.Errorf("plot: no clients")
	}
	xTicks := make([]plot.Tick, len(clients))
	for i, c := range clients {
		xTicks[i] = plot.Tick{Value: float64(c), Label: strconv.Itoa(c)}
	}
	// A log axis needs a range, even with one number of clients.
	xMin, xMax := float64(clients[0])/1.5, float64(clients[len(clients)-1])*1.5

	// Both panels: clients on a log axis, one tick per number measured.
	panel := func(title, yLabel string) *plot.Plot {
		p := plot.New()
		p.Title.Text = title
		p.X.Label.Text, p.Y.Label.Text = "clients", yLabel
		p.X.Scale = plot.LogScale{}
		p.X.Tick.Marker = plot.ConstantTicks(xTicks)
		p.X.Min, p.X.Max = xMin, xMax
		return p
	}

	tp := panel("Lifecycle throughput (sync=full)", "events/s")
	tp.Y.Min = 0
	tp.Y.Tick.Marker = rateTicks{}
	tp.Legend.Top, tp.Legend.Left = true, true
	tp.Legend.XOffs, tp.Legend.YOffs = vg.Points(8), -vg.Points(4)

	lp := panel("Lifecycle p99 latency (log scale)", "p99 (ms)")
	lp.Y.Scale = plot.LogScale{}
	lp.Y.Tick.Marker = plot.LogTicks{Prec: -1}
	// Latency grows with clients: the bottom right is where the lines are
	// not.
	lp.Legend.Top, lp.Legend.Left = false, false
	lp.Legend.XOffs, lp.Legend.YOffs = -vg.Points(8), vg.Points(8)

	yMin, yMax := math.Inf(1), math.Inf(-1)
	for i, sys := range orderSystems(r.Systems) {
		var events, p99 plotter.XYs
		for _, c := range clients {
			if p, ok := r.point(sys.Name, modeLifecycle, c); ok {
				events = append(events, plotter.XY{X: float64(c), Y: p.EventsPerSec})
				if p.P99Ms > 0 {
					p99 = append(p99, plotter.XY{X: float64(c), Y: p.P99Ms})
					yMin, yMax = min(yMin, p.P99Ms), max(yMax, p.P99Ms)
				}
			}
		}
		if len(events) == 0 {
			continue
		}
		if err := addLine(tp, sys.Name, i, events, true); err != nil {
			return err
		}
		if len(p99) > 0 {
			if err := addLine(lp, sys.Name, i, p99, true); err != nil {
				return err
			}
		}
	}
	if yMin <= yMax {
		// Whole decades, so that the log axis has labelled ticks.
		lp.Y.Min = math.Pow(10, math.Floor(math.Log10(yMin)))
		lp.Y.Max = math.Pow(10, math.Ceil(math.Log10(yMax)))
		if lp.Y.Min == lp.Y.Max {
			lp.Y.Max *= 10
		}
	} else {
		lp.Y.Min, lp.Y.Max = 0.1, 10
	}
	for _, fl := range []struct {
		name, legend string
		dashes       []vg.Length
	}{
		{floorSQLiteCommit, "single-commit floor", []vg.Length{vg.Points(6), vg.Points(3)}},
		{floorGroupCommit, fmt.Sprintf("group-commit floor (%d goroutines)", ratioClients), []vg.Length{vg.Points(2), vg.Points(2)}},
	} {
		f, ok := r.floor(fl.name)
		if !ok {
			continue
		}
		floor := plotter.NewFunction(func(float64) float64 { return f.OpsPerSec })
		floor.Color = color.Gray{Y: 90}
		floor.Dashes = fl.dashes
		floor.Width = vg.Points(1.5)
		tp.Add(floor)
		tp.Legend.Add(fl.legend, floor)
		tp.Y.Max = max(tp.Y.Max, f.OpsPerSec)
	}
	tp.Y.Max *= 1.4 // room for the legend above the lines
	tp.Add(plotter.NewGrid())
	lp.Add(plotter.NewGrid())

	return writePanels(path, tp, lp)
}

// writePanels draws the two panels side by side into a PNG at path.
func writePanels(path string, left, right *plot.Plot) error {
	img := vgimg.NewWith(vgimg.UseWH(13*vg.Inch, 5*vg.Inch), vgimg.UseDPI(110))
	dc := draw.New(img)
	tiles := draw.Tiles{Rows: 1, Cols: 2, PadX: vg.Inch / 2, PadTop: vg.Inch / 8, PadBottom: vg.Inch / 8, PadLeft: vg.Inch / 8, PadRight: vg.Inch / 4}
	left.Draw(tiles.At(dc, 0, 0))
	right.Draw(tiles.At(dc, 1, 0))

	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	return f.Close()
}

// addLine adds the line of series number i to p, with a mark at each
// point if marks.
func addLine(p *plot.Plot, name string, i int, xys plotter.XYs, marks bool) error {
	l, s, err := plotter.NewLinePoints(xys)
	if err != nil {
		return fmt.Errorf("plot %s: %w", name, err)
	}
	l.Color, l.Width = plotutil.Color(i), vg.Points(2)
	if !marks {
		p.Add(l)
		p.Legend.Add(name, l)
		return nil
	}
	s.Color, s.Shape = plotutil.Color(i), plotutil.Shape(i)
	s.Radius = vg.Points(3.5)
	p.Add(l, s)
	p.Legend.Add(name, l, s)
	return nil
}

// writeSoakPlot draws the soak of r into a PNG at path: the sizes of the
// database file and of its WAL and the daemon's RSS against time, beside
// the latency of the ops of each interval, with the end of the warm-up
// marked on both.
func writeSoakPlot(r *SoakResult, path string) error {
	type series struct {
		name string
		y    func(SoakSample) float64
	}
	mib := func(n int64) float64 { return float64(n) / (1 << 20) }
	// panel draws the series against minutes; a sample with no op has no
	// latency to draw.
	panel := func(title, yLabel string, latency bool, all ...series) (*plot.Plot, error) {
		p := plot.New()
		p.Title.Text = title
		p.X.Label.Text, p.Y.Label.Text = "minutes", yLabel
		p.Legend.Top, p.Legend.Left = true, true
		p.Legend.XOffs, p.Legend.YOffs = vg.Points(8), -vg.Points(4)
		p.Y.Tick.Marker = rateTicks{}
		p.Add(plotter.NewGrid())
		top := 0.0
		for i, s := range all {
			var xys plotter.XYs
			for _, smp := range r.Soak.Samples {
				if latency && smp.Ops == 0 {
					continue
				}
				xys = append(xys, plotter.XY{X: smp.ElapsedSeconds / 60, Y: s.y(smp)})
				top = max(top, s.y(smp))
			}
			if len(xys) == 0 {
				continue
			}
			if err := addLine(p, s.name, i, xys, false); err != nil {
				return nil, err
			}
		}
		// Room above the lines for the legend.
		p.Y.Min, p.Y.Max = 0, max(top, 1)*1.45
		warm := plotter.XYs{{X: r.Settings.WarmupSeconds / 60, Y: 0}, {X: r.Settings.WarmupSeconds / 60, Y: p.Y.Max}}
		l, err := plotter.NewLine(warm)
		if err != nil {
			return nil, err
		}
		l.Color = color.Gray{Y: 90}
		l.Dashes = []vg.Length{vg.Points(6), vg.Points(3)}
		p.Add(l)
		p.Legend.Add("end of the warm-up", l)
		return p, nil
	}
	s := r.Settings
	sp, err := panel(fmt.Sprintf("Files and memory (retain_finished %s, retain_tombstones %s)", s.RetainFinished, s.RetainTombstones), "MiB", false,
		series{"database file", func(x SoakSample) float64 { return mib(x.DBBytes) }},
		series{"WAL", func(x SoakSample) float64 { return mib(x.WALBytes) }},
		series{"daemon RSS", func(x SoakSample) float64 { return mib(x.RSSBytes) }})
	if err != nil {
		return err
	}
	lp, err := panel(fmt.Sprintf("Write latency of the ops of each %s (%d clients)", seconds(s.SampleSeconds), s.Clients), "ms", true,
		series{"p50", func(x SoakSample) float64 { return x.P50Ms }},
		series{"p99", func(x SoakSample) float64 { return x.P99Ms }},
		series{"p99.9", func(x SoakSample) float64 { return x.P999Ms }})
	if err != nil {
		return err
	}
	return writePanels(path, sp, lp)
}

// rateTicks are the default ticks with labels in thousands ("20k").
type rateTicks struct{}

func (rateTicks) Ticks(lo, hi float64) []plot.Tick {
	ticks := plot.DefaultTicks{}.Ticks(lo, hi)
	for i, t := range ticks {
		if t.Label == "" {
			continue
		}
		switch {
		case t.Value >= 1000:
			ticks[i].Label = strconv.FormatFloat(t.Value/1000, 'f', -1, 64) + "k"
		default:
			ticks[i].Label = strconv.FormatFloat(t.Value, 'f', -1, 64)
		}
	}
	return ticks
}
