extern alias PatchAssembly;

using System.Reflection;
using System.Runtime.CompilerServices;
using Microsoft.Extensions.Logging;
using GreenRuntime.PatchSets;
using Patching = PatchAssembly::GreenRuntime.Patch;

namespace GreenRuntime.Patch.Tests.PatchSets;

/// <summary>The Patch API: report, idempotence, undo, and calls compiled before patching.</summary>
[TestFixture]
public class PatchAllTests
{
    [TearDown]
    public void Undo() => Patching.UndoAll();

    [Test]
    public void AllPatchesEverySetAndReportsEachRefusalWithAReason()
    {
        var report = Patching.All();
        TestContext.Out.WriteLine(report);
        var sleep = typeof(Thread).GetMethod(nameof(Thread.Sleep), [typeof(int)])!;
        var allPoints = new PatchSet[] { TimePatchSet.Instance, SocketsPatchSet.Instance, DnsPatchSet.Instance, FilesPatchSet.Instance, TasksPatchSet.Instance, ThreadingPatchSet.Instance, LocksPatchSet.Instance, ProcessesPatchSet.Instance, StdinPatchSet.Instance }
            .SelectMany(s => s.Points).Select(p => p.Description).ToList();
        Assert.Multiple(() =>
        {
            Assert.That(report.Patched.Select(p => p.Set).Distinct(), Is.SupersetOf(new[] { "Time", "Sockets", "Dns", "Files", "Tasks", "Threading", "Locks", "Processes" }));
            Assert.That(report.Patched.Select(p => p.Description).Concat(report.Refused.Select(r => r.Description)), Is.SupersetOf(allPoints),
                "every patch point is either patched or refused, never silently skipped");
            Assert.That(Patching.IsPatched(sleep), Is.True);
            Assert.That(Patching.Applied.Select(p => p.Description), Is.EqualTo(report.Patched.Select(p => p.Description)));
            Assert.That(report.Refused.Any(r => r.Description.Contains("SpinWait")), Is.True, "design limits are reported too");
            Assert.That(report.Patched.Select(p => p.Description), Has.Some.Contains("Monitor.Enter_Slowpath").And.Some.Contains("InitClassSlow").And.Some.Contains("Lock.TryEnterSlow"),
                "the lock and class-initialisation funnels are patched on this runtime");
            Assert.That(report.Refused.Select(r => r.Reason), Has.All.Length.GreaterThan(20));
        });
    }

    [Test]
    public void RefusalsThatLoseNoCooperationAreLoggedAsInformationAndOthersAsWarnings()
    {
        var recorder = new Recorder();
        var report = Patching.All(new PatchOptions { LoggerFactory = recorder });
        var known = new PatchSet[] { TimePatchSet.Instance, SocketsPatchSet.Instance, TasksPatchSet.Instance, StdinPatchSet.Instance }
            .SelectMany(s => s.KnownRefusals).ToList();
        var byDesign = known.Select(k => k.Method).ToList();
        Assert.That(byDesign, Is.Not.Empty);
        Assert.Multiple(() =>
        {
            foreach (var method in byDesign)
            {
                Assert.That(recorder.Entries.Where(e => e.Message.Contains(method)).Select(e => (e.Level, e.Id.Id)),
                    Is.EqualTo(new[] { (LogLevel.Information, 105) }), method);
            }
            var covered = report.Refused.Where(r => r.Reason.Contains("cooperative anyway")).ToList();
            foreach (var refusal in covered)
            {
                Assert.That(recorder.Entries.Where(e => e.Message.Contains(refusal.Reason)).Select(e => (e.Level, e.Id.Id)),
                    Is.EqualTo(new[] { (LogLevel.Information, 105) }), "a refusal whose calls reach a patched funnel: " + refusal.Description);
            }
            var warned = recorder.Entries.Where(e => e.Level == LogLevel.Warning).Select(e => e.Message).ToList();
            Assert.That(warned, Has.Count.EqualTo(report.Refused.Count - byDesign.Count - covered.Count), "every other refusal is a warning (event 102)");
            var harmless = known.Where(k => !k.Blocks).Select(k => k.Method);
            Assert.That(report.Refused.Where(r => !r.LosesCooperation).Select(r => r.Description),
                Is.EquivalentTo(harmless.Concat(covered.Select(r => r.Description))),
                "LosesCooperation is false for the refusals whose calls reach a patched method and the design limits that do not wait");
            Assert.That(report.Refused.Single(r => r.Description.Contains("Console.In.Read")).LosesCooperation, Is.True, "stdin block reads block the hub");
        });
    }

    private sealed class Recorder : Microsoft.Extensions.Logging.ILoggerFactory, Microsoft.Extensions.Logging.ILogger
    {
        public readonly List<(LogLevel Level, Microsoft.Extensions.Logging.EventId Id, string Message)> Entries = new();
        public Microsoft.Extensions.Logging.ILogger CreateLogger(string categoryName) => this;
        public void AddProvider(Microsoft.Extensions.Logging.ILoggerProvider provider) { }
        public void Dispose() { }
        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;
        public bool IsEnabled(LogLevel logLevel) => true;
        public void Log<TState>(LogLevel logLevel, Microsoft.Extensions.Logging.EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            lock (Entries) Entries.Add((logLevel, eventId, formatter(state, exception)));
        }
    }

    [Test]
    public void PatchingTwiceIsANoOpThatSaysSo()
    {
        var first = Patching.All();
        var second = Patching.All();
        var time = Patching.Time();
        Assert.Multiple(() =>
        {
            Assert.That(second.Patched, Is.Empty);
            Assert.That(second.AlreadyPatched.Select(p => p.Method), Is.EquivalentTo(first.Patched.Select(p => p.Method)));
            Assert.That(time.AlreadyPatched.Select(p => p.Set), Has.All.EqualTo("Time").And.Not.Empty);
        });
    }

    [Test]
    public void PatchingFromSeveralThreadsAtOncePatchesEachMethodOnce()
    {
        var reports = new PatchAssembly::GreenRuntime.PatchReport[4];
        var threads = Enumerable.Range(0, reports.Length).Select(i => new Thread(() => reports[i] = Patching.All())).ToList();
        threads.ForEach(t => t.Start());
        threads.ForEach(t => t.Join());
        var patchedOnce = reports.SelectMany(r => r.Patched).Select(p => p.Method).ToList();
        Assert.That(patchedOnce, Is.Unique);
        Assert.That(patchedOnce, Has.Count.EqualTo(Patching.Applied.Count));
    }

    [Test]
    public void UndoAllRestoresTheOriginalsAndAllowsPatchingAgain()
    {
        var sleep = typeof(Thread).GetMethod(nameof(Thread.Sleep), [typeof(int)])!;
        Patching.Time();
        Patching.UndoAll();
        Assert.That(Patching.IsPatched(sleep), Is.False);
        Assert.That(Patching.Applied, Is.Empty);
        using (var hub = new Hub())
        {
            // Unpatched, Thread.Sleep on a greenlet blocks the hub: two sleeps in two greenlets take twice as long.
            // Patched, they overlap: the bound leaves 350 ms for a loaded machine's scheduling (a 90 ms margin failed
            // at a load average of 30).
            var watch = System.Diagnostics.Stopwatch.StartNew();
            Green.JoinAll([Green.Spawn(() => Thread.Sleep(500)), Green.Spawn(() => Thread.Sleep(500))]);
            Assert.That(watch.Elapsed, Is.GreaterThanOrEqualTo(TimeSpan.FromMilliseconds(990)));
            Assert.That(Patching.Time().Patched.Select(p => p.Method), Does.Contain(sleep));
            watch.Restart();
            Green.JoinAll([Green.Spawn(() => Thread.Sleep(500)), Green.Spawn(() => Thread.Sleep(500))]);
            Assert.That(watch.Elapsed, Is.LessThan(TimeSpan.FromMilliseconds(850)));
        }
    }
}
