namespace GreenRuntime.Servers;

/// <summary>
/// The number of file descriptors this process may open (the soft <c>RLIMIT_NOFILE</c>, which the .NET runtime
/// raises to the hard limit at startup), read from <c>/proc/self/limits</c>.
/// </summary>
internal static class DescriptorLimit
{
    /// <summary>Where nothing can be read (no Linux /proc): a limit every platform .NET runs on allows.</summary>
    private const int Fallback = 1024;

    private static readonly Lazy<int> s_current = new(Read, LazyThreadSafetyMode.PublicationOnly);

    /// <summary>The soft limit on open file descriptors.</summary>
    public static int Current => s_current.Value;

    /// <summary>
    /// Connections a server may hold when each costs one descriptor: the limit minus a reserve of a tenth (at least
    /// 64) for listeners, files, the runtime's own descriptors and outgoing connections the handlers make.
    /// </summary>
    public static int ForConnections()
    {
        int limit = Current;
        return Math.Max(1, limit - Math.Max(64, limit / 10));
    }

    private static int Read()
    {
        try
        {
            foreach (var line in File.ReadLines("/proc/self/limits"))
            {
                if (!line.StartsWith("Max open files", StringComparison.Ordinal)) continue;
                var fields = line["Max open files".Length..].Split(' ', StringSplitOptions.RemoveEmptyEntries);
                if (fields.Length > 0 && fields[0] == "unlimited") return int.MaxValue;
                if (fields.Length > 0 && long.TryParse(fields[0], out long soft)) return (int)Math.Min(soft, int.MaxValue);
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // Not Linux, or /proc is not mounted.
        }
        return Fallback;
    }
}
