using System.Net.Sockets;
using System.Reflection;
using System.Runtime.CompilerServices;
using DetourTargets;
using GreenRuntime.Detours;
using Microsoft.Win32.SafeHandles;

namespace GreenRuntime.Patch.Tests.Detours;

/// <summary>The BCL methods the patch sets need, found by reflection, with replacements that count.</summary>
/// <remarks>
/// A replacement counts a call only when the calling thread has opted in (<see cref="Active"/> equals the
/// target's id); every other call (NUnit's own Thread.Sleep, SpinWait, ...) goes to the original, so a
/// detour never changes the behaviour of unrelated code in the test process.
/// </remarks>
internal static class BclTargets
{
    public const int UserId = 1;
    public const int SleepId = 2;
    public const int ReadId = 3;
    public const int ReceiveId = 4;

    public static readonly long[] Hits = new long[5];

    [ThreadStatic]
    public static int Active;

    private static Action<int>? sleepOriginal;
    private static ReadAtOffsetFn? readOriginal;
    private static ReceiveFn? receiveOriginal;
    private static Func<int, int>? computeOriginal;

    internal delegate int ReadAtOffsetFn(SafeFileHandle handle, Span<byte> buffer, long fileOffset);

    internal delegate int ReceiveFn(Socket self, byte[] buffer, int offset, int size, SocketFlags flags, out SocketError error);

    public static MethodInfo Sleep { get; } = typeof(Thread).GetMethod(nameof(Thread.Sleep), [typeof(int)])!;

    public static MethodInfo ReadAtOffset { get; } = typeof(RandomAccess).GetMethod(
        "ReadAtOffset", BindingFlags.NonPublic | BindingFlags.Static, [typeof(SafeFileHandle), typeof(Span<byte>), typeof(long)])
        ?? throw new MissingMethodException("RandomAccess.ReadAtOffset(SafeFileHandle, Span<byte>, long) is gone.");

    public static MethodInfo Receive { get; } = typeof(Socket).GetMethod(
        nameof(Socket.Receive), [typeof(byte[]), typeof(int), typeof(int), typeof(SocketFlags), typeof(SocketError).MakeByRefType()])!;

    public static MethodInfo Compute { get; } = typeof(TieredTargets).GetMethod(nameof(TieredTargets.Compute))!;

    public static Detour DetourSleep()
    {
        Detour d = Detour.Create(Sleep, R(nameof(SleepReplacement)));
        Volatile.Write(ref sleepOriginal, d.GetOriginal<Action<int>>());
        return d;
    }

    public static Detour DetourReadAtOffset()
    {
        Detour d = Detour.Create(ReadAtOffset, R(nameof(ReadReplacement)));
        Volatile.Write(ref readOriginal, d.GetOriginal<ReadAtOffsetFn>());
        return d;
    }

    public static Detour DetourReceive()
    {
        Detour d = Detour.Create(Receive, R(nameof(ReceiveReplacement)));
        Volatile.Write(ref receiveOriginal, d.GetOriginal<ReceiveFn>());
        return d;
    }

    public static Detour DetourCompute()
    {
        Detour d = Detour.Create(Compute, R(nameof(ComputeReplacement)));
        Volatile.Write(ref computeOriginal, d.GetOriginal<Func<int, int>>());
        return d;
    }

    public static void SleepReplacement(int milliseconds)
    {
        if (Count(SleepId))
        {
            return;
        }

        Original(ref sleepOriginal)(milliseconds);
    }

    public static int ReadReplacement(SafeFileHandle handle, Span<byte> buffer, long fileOffset)
    {
        if (Count(ReadId))
        {
            buffer.Fill((byte)'Z');
            return buffer.Length;
        }

        return Original(ref readOriginal)(handle, buffer, fileOffset);
    }

    public static int ReceiveReplacement(Socket self, byte[] buffer, int offset, int size, SocketFlags flags, out SocketError error)
    {
        if (Count(ReceiveId))
        {
            error = SocketError.Success;
            return -42;
        }

        return Original(ref receiveOriginal)(self, buffer, offset, size, flags, out error);
    }

    public static int ComputeReplacement(int x)
    {
        if (Count(UserId))
        {
            return -x;
        }

        return Original(ref computeOriginal)(x);
    }

    private static bool Count(int id)
    {
        if (Active != id)
        {
            return false;
        }

        Interlocked.Increment(ref Hits[id]);
        return true;
    }

    /// <summary>Waits out the instant between Create and storing the original (Thread.Yield never sleeps).</summary>
    private static T Original<T>(ref T? field)
        where T : class
    {
        T? value;
        while ((value = Volatile.Read(ref field)) is null)
        {
            Thread.Yield();
        }

        return value;
    }

    private static MethodInfo R(string name) => typeof(BclTargets).GetMethod(name)!;
}
