using System.Net;
using System.Net.Sockets;
using System.Reflection;

namespace GreenRuntime.Patch.Tests.PatchSets;

/// <summary>
/// Lazy initialisation on first use — static constructors, Lazy&lt;T&gt;, LazyInitializer — doing patched I/O
/// while many greenlets touch it at the same moment: the first one parks inside the initialiser, the others
/// wait for it without holding the baton, and all complete.
/// </summary>
public class LazyInitialisationTests : PatchedHubTest
{
    private const int Greenlets = 100, Rounds = 200;

    private static EchoPeer s_peer = null!;
    private static string s_directory = null!;

    [OneTimeSetUp]
    public void StartPeer()
    {
        s_peer = new EchoPeer();
        s_directory = Directory.CreateTempSubdirectory("greenruntime-lazy-").FullName;
    }

    [OneTimeTearDown]
    public void StopPeer()
    {
        s_peer.Dispose();
        Directory.Delete(s_directory, recursive: true);
    }

    /// <summary>What every initialiser does: a file write, a socket round trip and a sleep, all patched.</summary>
    internal static string SlowInitialisation(string name)
    {
        var file = Path.Combine(s_directory, name);
        File.WriteAllText(file, name);
        using (var client = new TcpClient())
        {
            client.Connect(IPAddress.Loopback, s_peer.Port);
            var stream = client.GetStream();
            stream.WriteByte(42);
            if (stream.ReadByte() != 42) throw new InvalidOperationException("the echo peer answered wrongly");
        }
        Thread.Sleep(50);
        return File.ReadAllText(file);
    }

    // A type per round, each with its own static constructor: Holder<A, B, C> over six tags gives 216.
    private static readonly Type[] s_tags = [typeof(T0), typeof(T1), typeof(T2), typeof(T3), typeof(T4), typeof(T5)];

    private static Func<string> FreshStaticConstructor(int round)
    {
        var type = typeof(Holder<,,>).MakeGenericType(s_tags[round % 6], s_tags[round / 6 % 6], s_tags[round / 36 % 6]);
        return type.GetMethod(nameof(Holder<T0, T0, T0>.Value), BindingFlags.Public | BindingFlags.Static)!.CreateDelegate<Func<string>>();
    }

    private static void TouchAtOnce(Func<string> touch, string expected)
    {
        var all = Enumerable.Range(0, Greenlets).Select(_ => Green.Spawn(touch)).ToList();
        Green.JoinAll(all, raiseError: true);
        foreach (var g in all) Assert.That(g.Get(), Is.EqualTo(expected));
    }

    [Test]
    public void StaticConstructorsThatDoPatchedIoCompleteWhenManyGreenletsTouchThemAtOnce()
    {
        for (int round = 0; round < Rounds; round++)
        {
            var touch = FreshStaticConstructor(round);
            var holder = touch.Method.DeclaringType!;
            TouchAtOnce(touch, holder.Name + string.Join(",", holder.GetGenericArguments().Select(t => t.Name)));
        }
        Assert.That(Holder.Runs, Is.EqualTo(Rounds), "each static constructor ran exactly once");
    }

    [Test]
    public void LazyExecutionAndPublicationCompletesWhenManyGreenletsAskAtOnce()
    {
        for (int round = 0; round < Rounds; round++)
        {
            int runs = 0;
            string name = $"lazy-{round}";
            var lazy = new Lazy<string>(() =>
            {
                Interlocked.Increment(ref runs);
                return SlowInitialisation(name);
            }, LazyThreadSafetyMode.ExecutionAndPublication);
            TouchAtOnce(() => lazy.Value, name);
            Assert.That(runs, Is.EqualTo(1));
        }
    }

    [Test]
    public void LazyInitializerWithALockCompletesWhenManyGreenletsAskAtOnce()
    {
        for (int round = 0; round < Rounds; round++)
        {
            int runs = 0;
            string name = $"initializer-{round}";
            string? target = null;
            bool initialized = false;
            object? syncLock = null;
            TouchAtOnce(() => LazyInitializer.EnsureInitialized(ref target, ref initialized, ref syncLock, () =>
            {
                Interlocked.Increment(ref runs);
                return SlowInitialisation(name);
            })!, name);
            Assert.That(runs, Is.EqualTo(1));
        }
    }

    [Test]
    public void AStaticConstructorThatFailsFailsEveryToucherAlike()
    {
        var all = Enumerable.Range(0, 20).Select(_ => Green.Spawn(() => Failing.Value)).ToList();
        Green.JoinAll(all);
        Assert.That(all.Select(g => g.Exception), Is.All.TypeOf<TypeInitializationException>());
    }

    /// <summary>A kill raised inside a static constructor would fail it, and the runtime remembers that for the life of
    /// the process: every later use of the class throws TypeInitializationException. An ASP.NET Core request whose
    /// client went away (RequestAborted kills its greenlet) during the first use of a service broke the service this way.
    /// A thread is never stopped inside one, so neither is a greenlet: the kill waits for the constructor.</summary>
    [Test]
    public void AKillThatComesDuringAStaticConstructorWaitsForItAndLeavesTheClassUsable()
    {
        bool returned = false;
        var first = Green.Spawn(() =>
        {
            _ = KilledDuringInit.Value;
            returned = true;
            Thread.Sleep(1000); // the next blocking point: the kill is raised here
        });
        Green.Sleep(50); // inside the constructor's sleep
        first.Kill(block: false);
        Green.JoinAll([first], TimeSpan.FromSeconds(10));
        Assert.That((first.Dead, returned), Is.EqualTo((true, true)), "the constructor finished; the kill ended the greenlet after it");
        Assert.That(Green.Spawn(() => KilledDuringInit.Value).Get(TimeSpan.FromSeconds(10)), Is.EqualTo("initialised"));
        // A timeout that expires inside the constructor is held back the same way.
        var timedOut = Green.Spawn(() => GreenTimeout.RunSilently(TimeSpan.FromMilliseconds(20), () => _ = TimedOutDuringInit.Value));
        Green.JoinAll([timedOut], TimeSpan.FromSeconds(10));
        Assert.That(timedOut.Exception, Is.Null);
        Assert.That(TimedOutDuringInit.Value, Is.EqualTo("initialised"));
    }

    [Test]
    public void AKillThatComesDuringALazyFactoryWaitsForItAndLeavesTheLazyUsable()
    {
        // Lazy<T> caches what its factory threw for good: a kill raised inside would be every later caller's exception.
        var lazy = new Lazy<string>(() =>
        {
            Thread.Sleep(200);
            return "created";
        });
        bool returned = false;
        var first = Green.Spawn(() =>
        {
            _ = lazy.Value;
            returned = true;
            Thread.Sleep(1000); // the next blocking point: the kill is raised here
        });
        Green.Sleep(50); // inside the factory's sleep
        first.Kill(block: false);
        Green.JoinAll([first], TimeSpan.FromSeconds(10));
        Assert.That((first.Dead, returned), Is.EqualTo((true, true)), "the factory finished; the kill ended the greenlet after it");
        Assert.That(Green.Spawn(() => lazy.Value).Get(TimeSpan.FromSeconds(10)), Is.EqualTo("created"));

        // A timeout that expires inside a factory is held back the same way, in the modes that cache exceptions.
        var unsafeLazy = new Lazy<Uri>(() =>
        {
            Thread.Sleep(100);
            return new Uri("http://created/");
        }, LazyThreadSafetyMode.None);
        var timedOut = Green.Spawn(() => GreenTimeout.RunSilently(TimeSpan.FromMilliseconds(20), () => _ = unsafeLazy.Value));
        Green.JoinAll([timedOut], TimeSpan.FromSeconds(10));
        Assert.That(timedOut.Exception, Is.Null);
        Assert.That(unsafeLazy.Value, Is.EqualTo(new Uri("http://created/")));

        // What the factory itself throws is still the Lazy's outcome, as off the hub.
        var failing = new Lazy<string>(() => throw new InvalidOperationException("broken on purpose"));
        Assert.Throws<InvalidOperationException>(() => Green.Spawn(() => failing.Value).Get(TimeSpan.FromSeconds(10)));
        Assert.That(() => failing.Value, Throws.InvalidOperationException.With.Message.EqualTo("broken on purpose"));
    }

    [Test]
    public void AHubCallbackThatReachesAClassAParkedGreenletIsInitialisingFailsInsteadOfHangingTheHub()
    {
        // The callback holds the baton that the greenlet inside the constructor needs: waiting for the class there never
        // ended. Run on a hub of its own thread, so that a hang fails this test instead of the run.
        Exception? seen = null;
        var runner = new Thread(() =>
        {
            using var hub = new Hub(new HubOptions { MaxBlockingTime = null });
            var initialiser = Green.Spawn(() => { _ = TouchedByACallbackDuringInit.Value; });
            var other = Green.Spawn(() => Green.Sleep(5)); // ends while the constructor is parked in its I/O
            other.RawLink(ended =>
            {
                try
                {
                    _ = TouchedByACallbackDuringInit.Value;
                }
                catch (InvalidOperationException e)
                {
                    seen = e;
                }
            });
            Green.JoinAll([initialiser, other]);
        }) { IsBackground = true };
        runner.Start();
        Assert.That(runner.Join(TimeSpan.FromSeconds(20)), Is.True, "the hub went on");
        Assert.That(seen, Is.InstanceOf<InvalidOperationException>().With.Message.Contains(nameof(TouchedByACallbackDuringInit)));
        Assert.That(TouchedByACallbackDuringInit.Value, Is.EqualTo(nameof(TouchedByACallbackDuringInit)), "the class was initialised");
    }

    [Test]
    public void AGreenletThatReachesAClassAParkedGreenletIsInitialisingWhenNoCarrierIsLeftWaitsWithoutHangingTheHub()
    {
        // Every carrier is taken (one by the initialiser, parked in the constructor's I/O), so the main greenlet cannot
        // hand the hub to another while it waits for the class: the runtime's wait held the baton the initialiser needed.
        string? seen = null;
        var runner = new Thread(() =>
        {
            using var hub = new Hub(new HubOptions { MaxCarriers = 2, MaxBlockingTime = null });
            var initialiser = Green.Spawn(() => { _ = TouchedAtTheCarrierCap.Value; });
            var sleeper = Green.Spawn(() => Green.Sleep(500));
            Green.Sleep(20); // both parked, each on a carrier: none left
            seen = TouchedAtTheCarrierCap.Value;
            Green.JoinAll([initialiser, sleeper]);
        }) { IsBackground = true };
        runner.Start();
        Assert.That(runner.Join(TimeSpan.FromSeconds(20)), Is.True, "the hub went on");
        Assert.That(seen, Is.EqualTo(nameof(TouchedAtTheCarrierCap)), "the class was initialised once, by the greenlet");
    }

    private static class TouchedAtTheCarrierCap
    {
        public static readonly string Value = LazyInitialisationTests.SlowInitialisation(nameof(TouchedAtTheCarrierCap));
    }

    private static class TouchedByACallbackDuringInit
    {
        public static readonly string Value = LazyInitialisationTests.SlowInitialisation(nameof(TouchedByACallbackDuringInit));
    }

    [Test]
    public void RunClassConstructorFromManyGreenletsRunsItOnce()
    {
        var all = Enumerable.Range(0, 20).Select(_ => Green.Spawn(() => System.Runtime.CompilerServices.RuntimeHelpers.RunClassConstructor(typeof(ViaReflection).TypeHandle))).ToList();
        Green.JoinAll(all, raiseError: true);
        Assert.That(ViaReflection.Runs, Is.EqualTo(1));
    }

    private static class Failing
    {
        public static readonly string Value = Fail();

        private static string Fail()
        {
            Thread.Sleep(20);
            throw new InvalidOperationException("broken on purpose");
        }
    }

    private static class KilledDuringInit
    {
        public static readonly string Value = Slow();

        private static string Slow()
        {
            Thread.Sleep(200);
            return "initialised";
        }
    }

    private static class TimedOutDuringInit
    {
        public static readonly string Value = Slow();

        private static string Slow()
        {
            Thread.Sleep(200);
            return "initialised";
        }
    }

    private static class ViaReflection
    {
        public static int Runs;

        static ViaReflection()
        {
            Thread.Sleep(50);
            Runs++;
        }
    }

    /// <summary>A loopback peer on a plain thread that echoes every byte back.</summary>
    private sealed class EchoPeer : IDisposable
    {
        private readonly TcpListener _listener = new(IPAddress.Loopback, 0);

        public EchoPeer()
        {
            _listener.Start(1024);
            new Thread(Accept) { IsBackground = true, Name = "echo peer" }.Start();
        }

        public int Port => ((IPEndPoint)_listener.LocalEndpoint).Port;

        private void Accept()
        {
            try
            {
                while (true)
                {
                    var client = _listener.AcceptTcpClient();
                    ThreadPool.QueueUserWorkItem(_ =>
                    {
                        using (client)
                        {
                            var stream = client.GetStream();
                            int b;
                            while ((b = stream.ReadByte()) >= 0) stream.WriteByte((byte)b);
                        }
                    });
                }
            }
            catch (SocketException)
            {
            }
            catch (ObjectDisposedException)
            {
            }
        }

        public void Dispose() => _listener.Stop();
    }
}

internal struct T0;
internal struct T1;
internal struct T2;
internal struct T3;
internal struct T4;
internal struct T5;

internal static class Holder
{
    public static int Runs;
}

/// <summary>One static constructor per instantiation, each doing patched I/O.</summary>
internal static class Holder<TA, TB, TC>
{
    private static readonly string s_value;

    static Holder()
    {
        Interlocked.Increment(ref Holder.Runs);
        var type = typeof(Holder<TA, TB, TC>);
        s_value = LazyInitialisationTests.SlowInitialisation(type.Name + string.Join(",", type.GetGenericArguments().Select(t => t.Name)));
    }

    public static string Value() => s_value;
}
