using System.Globalization;
using System.Text;

namespace GreenRuntime.Diagnostics;

/// <summary>Renders a <see cref="HubRunInfo"/> as an aligned text table (Hub.FormatRunInfo, Green.PrintRunInfo).</summary>
internal static class RunInfoFormatter
{
    public static string Format(HubRunInfo info)
    {
        var sb = new StringBuilder();
        var inv = CultureInfo.InvariantCulture;
        sb.Append(inv, $"{info.Hub} at {info.Taken.UtcDateTime:yyyy-MM-dd HH:mm:ss.fff}Z: {info.Greenlets.Count} greenlets, ");
        sb.Append(inv, $"{info.ReadyCount} ready items, {info.TimerCount} timers, {info.Switches} switches, ");
        sb.Append(inv, $"{info.BlockedEpisodes} blocked episodes, blocking monitor {(info.MonitorOn ? "on" : "off")}").AppendLine();

        var rows = info.Greenlets.Select(g => new[]
        {
            g.Id.ToString(inv),
            g.Name,
            g.IsStackless ? "stackless" : "stackful",
            g.Describe(),
            g.SinceLastSwitch is { } s ? Seconds(s) + " ago" : "-",
            g.ParentName is null ? "-" : $"{g.ParentName}#{g.ParentId}",
        }).ToList();
        string[] header = ["id", "name", "kind", "state", "last switch", "parent"];
        var widths = header.Select((h, i) => Math.Max(h.Length, rows.Count == 0 ? 0 : rows.Max(r => r[i].Length))).ToArray();
        AppendRow(sb, header, widths);
        for (int i = 0; i < rows.Count; i++)
        {
            AppendRow(sb, rows[i], widths);
            foreach (var step in info.Greenlets[i].BlockedSteps)
            {
                sb.Append("        step: ").Append(step.Describe());
                if (step.SinceLastSwitch is { } since) sb.Append(", since ").Append(Seconds(since)).Append(" ago");
                sb.AppendLine();
            }
            if (info.Greenlets[i].SpawnStack is { } stack)
            {
                sb.Append("        spawned at:").AppendLine();
                foreach (var line in stack.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
                    sb.Append("          ").Append(line).AppendLine();
            }
        }
        var c = info.Carriers;
        sb.Append(inv, $"  carriers ({c.StackSize / 1024} KiB stacks, pool shared by every hub): {c.Threads} threads, {c.Idle} idle, {c.Busy} busy");
        if (c.Kept > 0) sb.Append(inv, $", {c.Kept} kept (PrestartCarriers)");
        sb.Append("; ");
        sb.Append(inv, $"{c.HeldByThisHub} held by this hub, at most {c.Limit:N0} ({c.LimitSource})");
        if (c.Waiting > 0) sb.Append(inv, $"; {c.Waiting} greenlets waiting for one");
        sb.Append(inv, $"; made {c.MadeOnDemand:N0} on demand, {c.MadeByRefill:N0} by refill, {c.Prestarted:N0} prestarted");
        sb.AppendLine();
        return sb.ToString();
    }

    private static void AppendRow(StringBuilder sb, string[] cells, int[] widths)
    {
        sb.Append("  ");
        for (int i = 0; i < cells.Length; i++)
        {
            var cell = cells[i];
            // Numbers right-aligned, text left-aligned; the last column is not padded.
            if (i == 0) sb.Append(cell.PadLeft(widths[i]));
            else if (i == 4) sb.Append(cell.PadLeft(widths[i]));
            else if (i == cells.Length - 1) sb.Append(cell);
            else sb.Append(cell.PadRight(widths[i]));
            if (i < cells.Length - 1) sb.Append("  ");
        }
        sb.AppendLine();
    }

    /// <summary>A duration in seconds with three decimals, invariant culture: <c>0.950 s</c>.</summary>
    public static string Seconds(TimeSpan t) => t.TotalSeconds.ToString("0.000", CultureInfo.InvariantCulture) + " s";
}
