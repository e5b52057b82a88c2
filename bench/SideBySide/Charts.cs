using OxyPlot;
using OxyPlot.Axes;
using OxyPlot.Legends;
using OxyPlot.Series;

namespace GreenRuntime.SideBySide;

/// <summary>
/// The SVG charts of docs/BENCHMARKS.md, drawn with OxyPlot: rates and memory per greenlet from the main table,
/// and for each sweep requests/s against connections (one line per system) and latency percentiles.
/// Every chart is written only when it has data; the caller links only the charts that were written.
/// </summary>
internal static class Charts
{
    /// <summary>One colour per system across all charts, so a reader matches lines and bars at a glance.</summary>
    private static OxyColor ColorOf(string system) => system switch
    {
        Sweep.Ours => OxyColors.SeaGreen,
        "gevent" => OxyColors.SteelBlue,
        "thread pool" => OxyColors.IndianRed,
        _ => OxyColors.Goldenrod,
    };

    /// <summary>Every higher-is-better row of the main table, one bar per system (log scale: rates span decades).</summary>
    public static bool Rates(List<Result> results, string path)
    {
        var rates = results.Where(r => r.Workload.HigherIsBetter).ToList();
        if (rates.Count == 0) return false;
        var model = new PlotModel { Title = "Throughput (log scale, higher is better)", Background = OxyColors.White };
        model.Axes.Add(new CategoryAxis { Position = AxisPosition.Left, ItemsSource = rates.Select(r => r.Workload.Name).ToList() });
        model.Axes.Add(new LogarithmicAxis { Position = AxisPosition.Bottom, Title = "operations per second", Minimum = 1e3 });
        AddSeries(model, "GreenRuntime", ColorOf(Sweep.Ours), rates.Select(r => Get(r.Ours, r.Workload.Metric)));
        AddSeries(model, "gevent", ColorOf("gevent"), rates.Select(r => Get(r.Gevent, r.Workload.GeventMetric)));
        AddSeries(model, "Go (GOMAXPROCS=1)", ColorOf("Go"), rates.Select(r => Get(r.Go, r.Workload.GoMetric)));
        Export(model, path);
        return true;
    }

    /// <summary>Bytes per greenlet (goroutine) of the memory rows of the main table.</summary>
    public static bool Memory(List<Result> results, string path)
    {
        var mem = results.Where(r => r.Workload.Extra.Any(x => x.Label == "bytes per greenlet")).ToList();
        if (mem.Count == 0) return false;
        var model = new PlotModel { Title = "Memory per greenlet (bytes, lower is better)", Background = OxyColors.White };
        model.Axes.Add(new CategoryAxis { Position = AxisPosition.Left, ItemsSource = mem.Select(r => r.Workload.Name).ToList() });
        model.Axes.Add(new LinearAxis { Position = AxisPosition.Bottom, Title = "bytes", Minimum = 0 });
        static double Mem(Result r, Dictionary<string, double>? d, int which)
        {
            var x = r.Workload.Extra.First(e => e.Label == "bytes per greenlet");
            return Get(d, which switch { 0 => x.Ours, 1 => x.Gevent, _ => x.Go });
        }
        AddSeries(model, "GreenRuntime", ColorOf(Sweep.Ours), mem.Select(r => Mem(r, r.Ours, 0)));
        AddSeries(model, "gevent", ColorOf("gevent"), mem.Select(r => Mem(r, r.Gevent, 1)));
        AddSeries(model, "Go", ColorOf("Go"), mem.Select(r => Mem(r, r.Go, 2)));
        Export(model, path);
        return true;
    }

    private static double Get(Dictionary<string, double>? d, string key) => d != null && key.Length > 0 && d.TryGetValue(key, out var v) ? v : double.NaN;

    private static void AddSeries(PlotModel model, string title, OxyColor color, IEnumerable<double> values)
    {
        var series = new BarSeries { Title = title, FillColor = color };
        foreach (var v in values) series.Items.Add(new BarItem(double.IsNaN(v) ? 0 : v));
        model.Series.Add(series);
    }

    private static string Slack(string text) => new(' ', 4 + text.Length / 2); // a space is narrow: ~0.28 em

    private static void Export(PlotModel model, string path, LegendPosition legend = LegendPosition.BottomRight)
    {
        model.Legends.Add(new Legend { LegendPosition = legend });
        // OxyPlot lays text out with Helvetica metrics; naming a metric-compatible font keeps legends and labels
        // from overflowing their boxes, and the baseline workaround places text right in viewers that ignore
        // dominant-baseline (GitHub's image proxy, rsvg).
        model.DefaultFont = "Arial, Helvetica, sans-serif";
        // Its metrics still run about a sixth narrow for Arial, so the legend box clips its text and long category
        // labels run off the left edge. Spaces widen what OxyPlot measures while SVG drops leading and trailing
        // spaces when it draws: trailing for the left-aligned legend, leading for the right-aligned categories.
        foreach (var series in model.Series) series.Title += Slack(series.Title);
        foreach (var axis in model.Axes.OfType<CategoryAxis>())
            axis.ItemsSource = axis.ItemsSource.Cast<string>().Select(label => Slack(label) + label).ToList();
        foreach (var axis in model.Axes.Where(a => a.IsVertical())) axis.AxisTitleDistance = 18; // clear of the tick labels
        using var stream = File.Create(path);
        new SvgExporter { Width = 900, Height = 420, UseVerticalTextAlignmentWorkaround = true }.Export(model, stream);
    }

    /// <summary>Requests/s against connections, one line per system (log-scaled connections: the levels are decades).</summary>
    public static bool Concurrency(SweepResult result, string path)
    {
        var s = result.Sweep;
        if (result.Points.Count == 0) return false;
        var model = new PlotModel { Title = $"{s.Name}: requests/s vs connections (higher is better)", Background = OxyColors.White };
        model.Axes.Add(new LogarithmicAxis { Position = AxisPosition.Bottom, Title = "connections", Minimum = s.Levels.Min() / 1.5, Maximum = s.Levels.Max() * 1.5 });
        model.Axes.Add(new LinearAxis { Position = AxisPosition.Left, Title = "requests/s", Minimum = 0 });
        foreach (var system in s.Systems.Where(x => !result.Notes.ContainsKey(x.Label)))
        {
            var line = new LineSeries { Title = system.Label, Color = ColorOf(system.Label), MarkerType = MarkerType.Circle, MarkerFill = ColorOf(system.Label), StrokeThickness = 2 };
            foreach (var level in s.Levels)
                if (result.Get(system.Label, level, "req_per_s") is var v && !double.IsNaN(v)) line.Points.Add(new DataPoint(level, v));
            model.Series.Add(line);
        }
        Export(model, path, LegendPosition.TopLeft);
        return true;
    }

    /// <summary>p50/p90/p99/p99.9 at the sweep's latency level, one bar per system (log scale: percentiles span decades).</summary>
    public static bool Latency(SweepResult result, string path)
    {
        var s = result.Sweep;
        var systems = s.Systems.Where(x => result.Points.ContainsKey((x.Label, s.LatencyLevel))).ToList();
        if (systems.Count == 0) return false;
        (string Key, string Label)[] percentiles = [("p50_us", "p50"), ("p90_us", "p90"), ("p99_us", "p99"), ("p999_us", "p99.9")];
        var model = new PlotModel { Title = $"{s.Name}: latency at {s.LatencyLevel} connections (ms, log scale, lower is better)", Background = OxyColors.White };
        model.Axes.Add(new CategoryAxis { Position = AxisPosition.Left, ItemsSource = percentiles.Select(p => p.Label).ToList() });
        model.Axes.Add(new LogarithmicAxis { Position = AxisPosition.Bottom, Title = "milliseconds" });
        foreach (var system in systems)
            AddSeries(model, system.Label, ColorOf(system.Label), percentiles.Select(p => result.Get(system.Label, s.LatencyLevel, p.Key) / 1000));
        Export(model, path, LegendPosition.BottomRight);
        return true;
    }
}
