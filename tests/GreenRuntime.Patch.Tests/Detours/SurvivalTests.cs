using System.Diagnostics;
using System.Net.Sockets;
using System.Reflection;
using System.Reflection.Emit;
using DetourTargets;
using GreenRuntime.Detours;
using Microsoft.Win32.SafeHandles;

namespace GreenRuntime.Patch.Tests.Detours;

using static BclTargets;

/// <summary>
/// Every call reaches the replacement, for seconds, across tier-up, from callers compiled after the
/// detour, through delegates and function pointers, from two threads.
/// </summary>
/// <remarks>
/// All four targets run at once (eight threads) so the suite stays short. Each thread calls in batches
/// and pauses between them, which gives the tiering manager time to count calls, promote callers and
/// attempt (and be refused) the target's own tier-1 compile.
/// </remarks>
[TestFixture]
public class SurvivalTests
{
    private const long MinCallsPerTarget = 150_000;
    private static readonly TimeSpan MinDuration = TimeSpan.FromSeconds(5);

    [OneTimeSetUp]
    public void Supported() => Detour.EnsureSupported();

    [Test]
    public void EveryCallIsRedirectedAcrossTieringFromEveryKindOfCaller()
    {
        string path = Path.GetTempFileName();
        File.WriteAllText(path, "survival");
        using SafeFileHandle file = File.OpenHandle(path);
        using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        var buffer = new byte[8];

        // A normal call first puts Compute in the tiering pipeline (via the prestub), so it gets call-counted
        // and its tier-1 compile is attempted (and refused) while detoured.
        _ = TieredTargets.Compute(1);
        using Detour compute = DetourCompute();
        using Detour sleep = DetourSleep();
        using Detour read = DetourReadAtOffset();
        using Detour receive = DetourReceive();

        // Everything below is compiled after the detours exist.
        var targets = new (int Id, Action[] Callers)[]
        {
            (UserId, ComputeCallers()),
            (SleepId, SleepCallers()),
            (ReadId, ReadCallers(file)),
            (ReceiveId, ReceiveCallers(socket)),
        };

        long[] hitsBefore = (long[])Hits.Clone();
        long refusedBefore = JitGuard.RefusedCompiles;
        var calls = new long[Hits.Length];
        var errors = new List<Exception>();
        var threads = new List<Thread>();
        foreach ((int id, Action[] callers) in targets)
        {
            for (int t = 0; t < 2; t++)
            {
                var thread = new Thread(() =>
                {
                    try
                    {
                        Interlocked.Add(ref calls[id], Hammer(id, callers));
                    }
                    catch (Exception e)
                    {
                        lock (errors)
                        {
                            errors.Add(e);
                        }
                    }
                });
                thread.Start();
                threads.Add(thread);
            }
        }

        var watch = Stopwatch.StartNew();
        threads.ForEach(t => t.Join());
        TestContext.Out.WriteLine(
            $"survival ran {watch.Elapsed.TotalSeconds:F1} s; the JIT guard refused {JitGuard.RefusedCompiles - refusedBefore} compiles " +
            $"({JitGuard.RefusedCompiles} in this process)");
        Assert.That(errors, Is.Empty);
        Assert.Multiple(() =>
        {
            foreach ((int id, _) in targets)
            {
                long hits = Hits[id] - hitsBefore[id];
                TestContext.Out.WriteLine($"target {id}: {calls[id]} calls, {hits} redirected");
                Assert.That(calls[id], Is.GreaterThanOrEqualTo(MinCallsPerTarget), $"target {id} call count");
                Assert.That(hits, Is.EqualTo(calls[id]), $"target {id}: every call must reach the replacement");
            }
        });
    }

    /// <summary>Calls in batches until both minimums are met; returns the number of calls made.</summary>
    private static long Hammer(int id, Action[] callers)
    {
        using var never = new ManualResetEvent(false);
        var watch = Stopwatch.StartNew();
        long calls = 0;
        int next = 0;
        while (watch.Elapsed < MinDuration || calls < MinCallsPerTarget / 2)
        {
            Active = id;
            try
            {
                for (int i = 0; i < 500; i++)
                {
                    callers[next++ % callers.Length]();
                }
            }
            finally
            {
                Active = 0;
            }

            calls += 500;
            never.WaitOne(2);
        }

        return calls;
    }

    private static Action[] ComputeCallers()
    {
        var viaDynamic = EmitCaller<Func<int, int>>(Compute);
        var viaDelegate = Compute.CreateDelegate<Func<int, int>>();
        nint pointer = Compute.MethodHandle.GetFunctionPointer();
        return
        [
            () => Check(ComputeDirect(5)),
            () => Check(viaDynamic(5)),
            () => Check(Fresh<FreshKey>.Compute(5)),
            () => Check(viaDelegate(5)),
            () => Check(ComputeViaPointer(pointer, 5)),
        ];

        static void Check(int result)
        {
            if (result != -5)
            {
                throw new InvalidOperationException($"Compute returned {result}: the call missed the replacement.");
            }
        }
    }

    private static Action[] SleepCallers()
    {
        var viaDynamic = EmitCaller<Action<int>>(Sleep);
        var viaDelegate = Sleep.CreateDelegate<Action<int>>();
        return
        [
            () => SleepDirect(1),
            () => Thread.Sleep(TimeSpan.FromMilliseconds(1)),
            () => viaDynamic(1),
            () => Fresh<FreshKey>.Sleep(1),
            () => viaDelegate(1),
            () => SleepViaPointer(1),
        ];
    }

    private static Action[] ReadCallers(SafeFileHandle file)
    {
        var viaDynamic = EmitCaller<ReadAtOffsetFn>(ReadAtOffset);
        var viaDelegate = ReadAtOffset.CreateDelegate<ReadAtOffsetFn>();
        nint pointer = ReadAtOffset.MethodHandle.GetFunctionPointer();
        var buffer = new byte[4];
        return
        [
            () => RandomAccess.Read(file, buffer, 0),
            () => viaDynamic(file, buffer, 0),
            () => Fresh<FreshKey>.Read(file, buffer),
            () => viaDelegate(file, buffer, 0),
            () => ReadViaPointer(pointer, file, buffer),
        ];
    }

    private static Action[] ReceiveCallers(Socket socket)
    {
        var viaDynamic = EmitCaller<ReceiveFn>(Receive);
        var viaDelegate = Receive.CreateDelegate<ReceiveFn>();
        nint pointer = Receive.MethodHandle.GetFunctionPointer();
        var buffer = new byte[4];
        return
        [
            () => Check(socket.Receive(buffer, 0, 4, SocketFlags.None, out _)),
            () => Check(viaDynamic(socket, buffer, 0, 4, SocketFlags.None, out _)),
            () => Check(Fresh<FreshKey>.Receive(socket, buffer)),
            () => Check(viaDelegate(socket, buffer, 0, 4, SocketFlags.None, out _)),
            () => Check(ReceiveViaPointer(pointer, socket, buffer)),
        ];

        static void Check(int result)
        {
            if (result != -42)
            {
                throw new InvalidOperationException($"Receive returned {result}: the call missed the replacement.");
            }
        }
    }

    private static int ComputeDirect(int x) => TieredTargets.Compute(x);

    private static void SleepDirect(int ms) => Thread.Sleep(ms);

    private static unsafe int ComputeViaPointer(nint pointer, int x) => ((delegate*<int, int>)pointer)(x);

    private static unsafe void SleepViaPointer(int ms)
    {
        delegate*<int, void> sleep = &Thread.Sleep;
        sleep(ms);
    }

    private static unsafe int ReadViaPointer(nint pointer, SafeFileHandle file, byte[] buffer) =>
        ((delegate*<SafeFileHandle, Span<byte>, long, int>)pointer)(file, buffer, 0);

    private static unsafe int ReceiveViaPointer(nint pointer, Socket socket, byte[] buffer) =>
        ((delegate*<Socket, byte[], int, int, SocketFlags, out SocketError, int>)pointer)(socket, buffer, 0, 4, SocketFlags.None, out _);

    /// <summary>A DynamicMethod that calls <paramref name="target"/> directly (`call`, not through a delegate).</summary>
    internal static TDelegate EmitCaller<TDelegate>(MethodInfo target)
        where TDelegate : Delegate
    {
        Type[] parameters = typeof(TDelegate).GetMethod("Invoke")!.GetParameters().Select(p => p.ParameterType).ToArray();
        var method = new DynamicMethod("Call_" + target.Name, target.ReturnType, parameters, typeof(SurvivalTests).Module, skipVisibility: true);
        ILGenerator il = method.GetILGenerator();
        for (int i = 0; i < parameters.Length; i++)
        {
            il.Emit(OpCodes.Ldarg, (short)i);
        }

        il.Emit(OpCodes.Call, target);
        il.Emit(OpCodes.Ret);
        return method.CreateDelegate<TDelegate>();
    }

    /// <summary>A fresh value-type instantiation: its code is compiled on first use, after the detours.</summary>
    private static class Fresh<T>
        where T : struct
    {
        private static int Zero => System.Runtime.CompilerServices.Unsafe.SizeOf<T>() - 1;

        public static int Compute(int x) => TieredTargets.Compute(x) + Zero;

        public static void Sleep(int ms) => Thread.Sleep(ms + Zero);

        public static int Read(SafeFileHandle file, byte[] buffer) => RandomAccess.Read(file, buffer, Zero);

        public static int Receive(Socket socket, byte[] buffer) =>
            socket.Receive(buffer, Zero, 4, SocketFlags.None, out _);
    }

    private struct FreshKey
    {
    }
}
