using System.Diagnostics;
using System.Reflection;
using System.Runtime.ExceptionServices;
using GreenRuntime.Detours;
using GreenRuntime.PatchSets;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace GreenRuntime;

/// <summary>
/// Makes blocking BCL calls cooperative, like gevent's <c>monkey.patch_all()</c>: after <see cref="All"/>,
/// unmodified blocking code (yours and third-party libraries') that runs on a greenlet parks only that greenlet,
/// and every other caller sees the original behaviour.
/// </summary>
/// <remarks>
/// <para>Call it once at startup, before spawning greenlets. Patching is process-wide, idempotent and
/// thread-safe; calling a set twice reports its methods as already patched. Calls compiled before patching
/// are redirected too, except where the JIT had already inlined a patched method into its caller; the patch
/// points are chosen so that this cannot happen (see docs/patching.md).</para>
/// <para>Nothing is skipped silently: every method a set could not redirect is in
/// <see cref="PatchReport.Refused"/> with the reason, and logged as a warning.</para>
/// <para>Supported where the detour engine is (.NET 10, x64 Linux); elsewhere every method is refused with the
/// engine's reason and nothing is changed.</para>
/// </remarks>
/// <example>
/// <code>
/// var report = Patch.All();
/// foreach (var refused in report.Refused) Console.Error.WriteLine(refused);
/// var greenlets = urls.Select(u => Green.Spawn(() => new WebClient().DownloadString(u))).ToList();
/// Green.JoinAll(greenlets);
/// </code>
/// </example>
public static class Patch
{
    private static readonly Lock s_gate = new();
    private static readonly Dictionary<MethodBase, Entry> s_applied = new();
    private static ILoggerFactory s_lastLoggerFactory = NullLoggerFactory.Instance;

    private sealed record Entry(PatchedMethod Info, Detour Detour);

    /// <summary>Where the time of the last <see cref="All"/> (or single-set call) went; for the start-up benchmark.</summary>
    internal static PatchTimings? LastTimings { get; private set; }

    /// <summary>Applies every patch set switched on in <paramref name="options"/> (all by default).</summary>
    public static PatchReport All(PatchOptions? options = null)
    {
        long start = Stopwatch.GetTimestamp();
        options ??= new PatchOptions();
        // The engine's one-time checks run on another thread while this one finds the sets' methods.
        Detour.PrepareInBackground();
        var sets = new List<PatchSet>();
        if (options.Time) sets.Add(TimePatchSet.Instance);
        if (options.Sockets) sets.Add(SocketsPatchSet.Instance);
        if (options.Dns) sets.Add(DnsPatchSet.Instance);
        if (options.Files) sets.Add(FilesPatchSet.Instance);
        if (options.Tasks) sets.Add(TasksPatchSet.Instance);
        if (options.Threading) sets.Add(ThreadingPatchSet.Instance);
        if (options.Locks) sets.Add(LocksPatchSet.Instance);
        if (options.Processes) sets.Add(ProcessesPatchSet.Instance);
        if (options.Stdin) sets.Add(StdinPatchSet.Instance);
        // The sets' first use finds their methods by reflection (in their static initialisers).
        return Apply(sets, options.LoggerFactory, Stopwatch.GetElapsedTime(start));
    }

    /// <summary><c>Thread.Sleep</c> (Sleep(0) yields) and <c>Thread.Yield</c>.</summary>
    public static PatchReport Time() => Apply([TimePatchSet.Instance], null);

    /// <summary>Synchronous <c>Socket</c> operations, and so every stream and client built on them.</summary>
    public static PatchReport Sockets() => Apply([SocketsPatchSet.Instance], null);

    /// <summary><c>Dns.GetHostAddresses</c> and <c>Dns.GetHostEntry</c> (all synchronous overloads).</summary>
    public static PatchReport Dns() => Apply([DnsPatchSet.Instance], null);

    /// <summary>Synchronous file reads and writes (FileStream, File.*, RandomAccess): what the page cache can serve is read
    /// inline (Linux: one <c>preadv2</c> with <c>RWF_NOWAIT</c>), the rest runs on the thread pool while the greenlet waits;
    /// <c>File.Copy</c>; console writes that would wait for a pipe's reader.</summary>
    public static PatchReport Files() => Apply([FilesPatchSet.Instance], null);

    /// <summary><c>Task.Wait</c>, <c>Task&lt;T&gt;.Result</c>, <c>GetAwaiter().GetResult()</c>, <c>Task.WaitAll/WaitAny</c>.</summary>
    public static PatchReport Tasks() => Apply([TasksPatchSet.Instance], null);

    /// <summary><c>SemaphoreSlim.Wait</c>, <c>ManualResetEventSlim.Wait</c> (CountdownEvent, Barrier), <c>WaitHandle.WaitOne/WaitAny/WaitAll</c>, <c>Thread.Join</c>.</summary>
    public static PatchReport Threading() => Apply([ThreadingPatchSet.Instance], null);

    /// <summary>
    /// Applies the Locks set: a greenlet that would wait for a contended <c>lock</c>/<see cref="Monitor"/>, a
    /// <see cref="Lock"/>, in <see cref="Monitor.Wait(object, int)"/>, or for a class another thread is still
    /// initialising, waits on its own thread with the hub's baton released, so the other greenlets (among them
    /// the holder) go on.
    /// </summary>
    public static PatchReport Locks() => Apply([LocksPatchSet.Instance], null);

    /// <summary><c>Process.WaitForExit</c>.</summary>
    public static PatchReport Processes() => Apply([ProcessesPatchSet.Instance], null);

    /// <summary><c>Console.ReadLine</c> and <c>Console.Read</c>.</summary>
    public static PatchReport Stdin() => Apply([StdinPatchSet.Instance], null);

    /// <summary>Whether <paramref name="method"/> is currently redirected by a patch set.</summary>
    public static bool IsPatched(MethodBase method)
    {
        ArgumentNullException.ThrowIfNull(method);
        lock (s_gate)
            return s_applied.ContainsKey(method);
    }

    /// <summary>Every method currently redirected, in the order it was patched.</summary>
    public static IReadOnlyList<PatchedMethod> Applied
    {
        get
        {
            lock (s_gate)
                return s_applied.Values.Select(e => e.Info).ToList();
        }
    }

    /// <summary>Restores every patched method's original code (tests use it in their teardown).</summary>
    /// <remarks>Undone methods stay excluded from inlining and re-compilation (see the detour engine); they
    /// behave exactly like the originals. They can be patched again.</remarks>
    public static void UndoAll()
    {
        int count;
        ILogger logger;
        using (Cooperative.Cooperative.Bypass())
        lock (s_gate)
        {
            Cooperative.NativeClassInit.Initialise();
            foreach (var entry in s_applied.Values.Reverse()) entry.Detour.Dispose();
            count = s_applied.Count;
            s_applied.Clear();
            logger = s_lastLoggerFactory.CreateLogger(PatchLog.Category);
        }
        PatchLog.Undone(logger, count);
    }

    private static PatchReport Apply(IReadOnlyList<PatchSet> sets, ILoggerFactory? loggerFactory, TimeSpan lookup = default)
    {
        loggerFactory ??= GreenRuntime.LowLevel.Parking.CurrentHub?.Options.LoggerFactory ?? NullLoggerFactory.Instance;
        var logger = loggerFactory.CreateLogger(PatchLog.Category);
        var patched = new List<PatchedMethod>();
        var already = new List<PatchedMethod>();
        var refused = new List<RefusedMethod>();
        // Bypass: whatever the engine calls while creating detours (it may be a method patched a moment ago)
        // runs the original, even when Patch is called from a greenlet.
        using (Cooperative.Cooperative.Bypass())
        lock (s_gate)
        {
            Cooperative.NativeClassInit.Initialise();
            s_lastLoggerFactory = loggerFactory;
            long start = Stopwatch.GetTimestamp();
            var checks = ApplyLocked(sets, patched, already, refused, out var support, out var batch);
            LastTimings = new PatchTimings(lookup, support, checks, batch, Stopwatch.GetElapsedTime(start));
        }
        // Log after releasing the lock: logger providers are foreign code.
        foreach (var m in patched) PatchLog.Patched(logger, m.Set, m.Description);
        foreach (var m in already) PatchLog.AlreadyPatched(logger, m.Set, m.Description);
        foreach (var m in refused)
        {
            if (m.Informational) PatchLog.RefusedHarmlessly(logger, m.Set, m.Description, m.Reason);
            else PatchLog.Refused(logger, m.Set, m.Description, m.Reason);
        }
        PatchLog.Summary(logger, string.Join(", ", sets.Select(s => s.Name)), patched.Count, already.Count, refused.Count);
        return new PatchReport(patched, already, refused);
    }

    /// <summary>
    /// Checks every point of <paramref name="sets"/>, then creates the detours of all that pass in one batch:
    /// the engine waits once for the whole batch rather than once per method, which keeps <see cref="All"/>
    /// in the tens of milliseconds.
    /// </summary>
    /// <remarks>The checks run before the engine's own one-time gate (<see cref="Detour.EnsureSupported"/>), which
    /// <see cref="All"/> started on another thread: they overlap with it. Only the cheap platform check comes first
    /// (the checks read code bytes the x64 Linux way).</remarks>
    /// <returns>The time the checks took (warm-up calls, tail-call guard).</returns>
    private static TimeSpan ApplyLocked(IReadOnlyList<PatchSet> sets, List<PatchedMethod> patched, List<PatchedMethod> already, List<RefusedMethod> refused, out TimeSpan support, out BatchTimings engine)
    {
        long start = Stopwatch.GetTimestamp();
        support = TimeSpan.Zero;
        engine = default;
        string? unsupported = Detour.PlatformProblem();
        var batch = new List<(PatchSet Set, PatchPoint Point)>();
        var requested = new HashSet<MethodBase>();
        var duplicates = new List<(PatchSet Set, PatchPoint Point)>();
        foreach (var set in sets)
        {
            foreach (var point in set.Points)
            {
                if (point.Target is not { } target)
                {
                    refused.Add(new RefusedMethod(set.Name, null, point.Description, $"This runtime ({Environment.Version}) has no such method; the funnel it stands for has moved. Its callers are not cooperative."));
                    continue;
                }
                if (s_applied.TryGetValue(target, out var existing))
                {
                    already.Add(existing.Info);
                    continue;
                }
                if (unsupported is not null)
                {
                    refused.Add(new RefusedMethod(set.Name, target, point.Description, unsupported));
                    continue;
                }
                if (!requested.Add(target))
                {
                    duplicates.Add((set, point)); // two sets name the same method: the first one patches it
                    continue;
                }
                point.WarmUp?.Invoke();
                if (TailCallGuard.Check(target) is { } hazard)
                {
                    refused.Add(new RefusedMethod(set.Name, target, point.Description, hazard));
                    continue;
                }
                batch.Add((set, point));
            }
            foreach (var (method, reason, blocks) in set.KnownRefusals)
                refused.Add(new RefusedMethod(set.Name, null, method, reason, informational: true, losesCooperation: blocks));
        }
        var checks = Stopwatch.GetElapsedTime(start);
        if (batch.Count == 0)
            return checks;
        try
        {
            Detour.EnsureSupported();
        }
        catch (PlatformNotSupportedException e)
        {
            foreach (var (set, point) in batch)
                refused.Add(new RefusedMethod(set.Name, point.Target, point.Description, e.Message));
            batch.Clear();
        }
        support = Stopwatch.GetElapsedTime(start) - checks;
        if (batch.Count == 0)
            return checks;

        foreach (var (_, point) in batch)
            point.Slot.BeginPatching();
        // Each slot is bound before any jump goes live: the first redirected call already finds its original.
        DetourOutcome[] outcomes;
        try
        {
            outcomes = Detour.CreateBatch(batch.ConvertAll(b => new DetourRequest(b.Point.Target!, b.Point.Replacement, b.Point.Slot.Bind)));
            engine = Detour.LastBatch;
        }
        catch
        {
            foreach (var (_, point) in batch)
                point.Slot.AbortPatching();
            throw;
        }
        for (int i = 0; i < batch.Count; i++)
        {
            var (set, point) = batch[i];
            if (outcomes[i].Detour is { } detour)
            {
                var info = new PatchedMethod(set.Name, point.Target!, point.Description);
                s_applied.Add(point.Target!, new Entry(info, detour));
                patched.Add(info);
            }
        }
        Exception? unexpected = null;
        for (int i = 0; i < batch.Count; i++)
        {
            var (set, point) = batch[i];
            if (outcomes[i].Error is not { } e)
                continue;
            point.Slot.AbortPatching();
            if (e is not (NotSupportedException or InvalidOperationException or ArgumentException or PlatformNotSupportedException))
            {
                unexpected ??= e;
                continue;
            }
            bool isCovered = point.CoveredBy is { } funnel && s_applied.Keys.Any(m => $"{m.DeclaringType?.FullName}.{m.Name}({string.Join(", ", m.GetParameters().Select(p => p.ParameterType.Name))})" == funnel);
            string covered = isCovered ? $" Its calls still reach {point.CoveredBy}, which is patched, so they are cooperative anyway." : "";
            refused.Add(new RefusedMethod(set.Name, point.Target, point.Description, e.Message + covered, informational: isCovered, losesCooperation: !isCovered));
        }
        foreach (var (set, point) in duplicates)
        {
            if (s_applied.TryGetValue(point.Target!, out var existing))
                already.Add(existing.Info);
            else
                refused.Add(new RefusedMethod(set.Name, point.Target, point.Description, "Another patch set of this call names the same method, and it was refused there (see that refusal)."));
        }
        // Every slot is settled and every live detour registered (so UndoAll can undo it) before a failure the
        // engine did not expect leaves this method, as it did when detours were created one by one.
        if (unexpected is not null)
            ExceptionDispatchInfo.Throw(unexpected);
        return checks;
    }
}
