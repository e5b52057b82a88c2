using System.Runtime.CompilerServices;
using Microsoft.Extensions.Logging;

namespace GreenRuntime.Tests.Core;

/// <summary>State flags, values and exceptions (gevent's test__greenlet.py).</summary>
public class GreenletTests : HubTest
{
    [Test]
    public void FlagsBeforeStartWhileRunningAndAfterFinish()
    {
        bool? startedInside = null, deadInside = null;
        Greenlet? self = null;
        var g = new Greenlet(() =>
        {
            startedInside = self!.Started;
            deadInside = self.Dead;
            Assert.That(Green.Current, Is.SameAs(self));
        }, "probe");
        self = g;
        Assert.Multiple(() =>
        {
            Assert.That(g.Started, Is.False);
            Assert.That(g.Ready, Is.False);
            Assert.That(g.Dead, Is.False);
            Assert.That(g.Successful, Is.False);
            Assert.That(g.State, Is.EqualTo(GreenletState.Created));
            Assert.That(g.Name, Is.EqualTo("probe"));
            Assert.That(g.ToString(), Is.EqualTo($"<Greenlet probe#{g.Id}>"));
        });
        g.Start();
        Assert.That(g.Started, Is.True);
        Assert.That(g.State, Is.EqualTo(GreenletState.Scheduled));
        Assert.That(g.Join(), Is.True);
        Assert.Multiple(() =>
        {
            Assert.That(startedInside, Is.True);
            Assert.That(deadInside, Is.False);
            Assert.That(g.Started, Is.True);
            Assert.That(g.Ready, Is.True);
            Assert.That(g.Dead, Is.True);
            Assert.That(g.Successful, Is.True);
            Assert.That(g.Exception, Is.Null);
        });
    }

    [Test]
    public void SpawnDoesNotRunUntilTheMainGreenletBlocks()
    {
        var ran = false;
        var g = Green.Spawn(() => ran = true);
        Assert.That(ran, Is.False);
        Green.Sleep(0);
        Assert.That(ran, Is.True);
        Assert.That(g.Dead, Is.True);
    }

    [Test]
    public void ValueAndTypedGet()
    {
        var g = Green.Spawn(() => 42);
        Assert.That(g.Get(), Is.EqualTo(42));
        Assert.That(g.Value, Is.EqualTo(42));
        Assert.That(((Greenlet)g).Value, Is.EqualTo(42));
    }

    [Test]
    public void GetRethrowsTheExceptionWithItsOriginalStack()
    {
        var g = Green.Spawn(() => ThrowingHelper());
        var e = Assert.Throws<InvalidOperationException>(() => g.Get())!;
        Assert.That(e.Message, Is.EqualTo("boom"));
        Assert.That(e.StackTrace, Does.Contain(nameof(ThrowingHelper)));
        Assert.That(g.Successful, Is.False);
        Assert.That(g.Exception, Is.SameAs(e));
        Assert.That(g.Dead, Is.True);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void ThrowingHelper() => throw new InvalidOperationException("boom");

    [Test]
    public void AFailedGreenletIsLoggedAndDoesNotCrashTheHub()
    {
        var g = Green.Spawn(() => throw new ArgumentException("bad"), "failing");
        g.Join();
        var after = Green.Spawn(() => 1);
        Assert.That(after.Get(), Is.EqualTo(1));
        var entry = Logs.Entries.Single(e => e.Level == LogLevel.Error);
        Assert.Multiple(() =>
        {
            Assert.That(entry.Category, Is.EqualTo("GreenRuntime.Hub"));
            Assert.That(entry.Message, Is.EqualTo($"<Greenlet failing#{g.Id}> failed with ArgumentException"));
            Assert.That(entry.Exception, Is.SameAs(g.Exception));
            Assert.That(entry.EventId.Id, Is.EqualTo(1));
        });
    }

    [TestCase(false)]
    [TestCase(true)]
    public void AFailedGreenletEndsDeadWhenTheLoggerBlocksOrThrows(bool throws)
    {
        // The app's logger runs as the greenlet ends; one that blocks cooperatively (a file sink behind a lock) parked the
        // greenlet after it was marked dead, and the resume left it Running for good.
        var logger = new BlockingLogger(throws);
        Hub.Dispose();
        Hub = new Hub(new HubOptions { LoggerFactory = LoggerFactory.Create(b => b.AddProvider(logger)) });
        for (int round = 0; round < 5; round++)
        {
            var failing = Green.Spawn(() => { Green.Sleep(1); throw new InvalidOperationException("boom"); }, "failing");
            var other = Green.Spawn(() => { for (int i = 0; i < 5; i++) Green.Sleep(1); return 7; });
            Green.JoinAll([failing, other]);
            Green.Sleep(20);
            Assert.That(failing.State, Is.EqualTo(GreenletState.Dead));
            Assert.That(failing.Exception, Is.InstanceOf<InvalidOperationException>());
            Assert.That(other.Get(), Is.EqualTo(7));
            Assert.That(Hub.AliveCount, Is.Zero);
        }
        Assert.That(logger.Blocked, Is.EqualTo(5), "the logger ran, blocking, once per failure");
    }

    private sealed class BlockingLogger(bool throws) : ILoggerProvider, ILogger
    {
        public int Blocked;

        public ILogger CreateLogger(string categoryName) => this;
        public void Dispose() { }
        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;
        public bool IsEnabled(LogLevel logLevel) => logLevel >= LogLevel.Error;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            if (logLevel < LogLevel.Error) return;
            Green.Sleep(5);
            Blocked++;
            if (throws) throw new IOException("the log file's disk is full");
        }
    }

    [Test]
    public void GetWithTimeoutThrowsTimeoutWhileRunning()
    {
        var g = Green.Spawn(() => Green.Sleep(5000));
        Assert.Throws<TimeoutException>(() => g.Get(TimeSpan.FromMilliseconds(20)));
        Assert.That(g.Join(TimeSpan.FromMilliseconds(10)), Is.False);
        g.Kill();
    }

    [Test]
    public void StartTwiceIsRefused()
    {
        var g = Green.Spawn(() => { });
        Assert.Throws<InvalidOperationException>(() => g.Start());
    }

    [Test]
    public void StartLaterStartsAfterTheDelay()
    {
        var order = new List<string>();
        var late = new Greenlet(() => order.Add("late"));
        late.StartLater(TimeSpan.FromMilliseconds(30));
        Assert.That(late.Started, Is.True);
        var early = Green.Spawn(() => order.Add("early"));
        Green.JoinAll([late, early]);
        Assert.That(order, Is.EqualTo(new[] { "early", "late" }));
    }

    [Test]
    public void SpawnLaterHonoursTheDelay()
    {
        var watch = System.Diagnostics.Stopwatch.StartNew();
        var g = Green.SpawnLater(TimeSpan.FromMilliseconds(50), () => { });
        g.Join();
        Assert.That(watch.ElapsedMilliseconds, Is.GreaterThanOrEqualTo(45));
    }

    [Test]
    public void SleepRejectsNegativeDelays()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => Green.Sleep(-1));
        Assert.Throws<ArgumentOutOfRangeException>(() => Green.Sleep(TimeSpan.FromSeconds(-1)));
    }

    [Test]
    public void JoiningItselfIsRefused()
    {
        var g = Green.Spawn(() => Green.Current.Join());
        g.Join();
        Assert.That(g.Exception, Is.InstanceOf<InvalidOperationException>());
    }

    [Test]
    public void HubOnlyOperationsFailClearlyFromAForeignThread()
    {
        var g = new Greenlet(() => { });
        Exception? error = null;
        var t = new Thread(() =>
        {
            try { g.Start(); }
            catch (Exception e) { error = e; }
        });
        t.Start();
        t.Join();
        Assert.That(error, Is.InstanceOf<InvalidOperationException>());
        Assert.That(error!.Message, Does.Contain("Hub.Post"));
    }

    [Test]
    public void PostFromAForeignThreadRunsOnTheHub()
    {
        Greenlet? spawned = null;
        var t = new Thread(() => Hub.Post(() => spawned = Green.Spawn(() => 7)));
        t.Start();
        t.Join();
        Green.Sleep(10);
        Assert.That(spawned, Is.Not.Null);
        Assert.That(((Greenlet<int>)spawned!).Get(), Is.EqualTo(7));
    }

    [Test]
    public void ASecondHubOnTheSameThreadIsRefused()
    {
        Assert.Throws<InvalidOperationException>(() => new Hub());
        Assert.That(Hub.Current, Is.SameAs(Hub));
    }

    [Test]
    public void InvalidOptionsAreRefused()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => new Hub(new HubOptions { MaxCarriers = 1 }));
        Assert.Throws<ArgumentOutOfRangeException>(() => new Hub(new HubOptions { CarrierStackSize = 1024 }));
        Assert.Throws<ArgumentOutOfRangeException>(() => new Hub(new HubOptions { MaxBlockingTime = TimeSpan.Zero }));
    }
}
