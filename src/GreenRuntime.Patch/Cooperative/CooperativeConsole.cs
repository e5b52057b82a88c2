using GreenRuntime.Scheduling;

namespace GreenRuntime.Cooperative;

/// <summary>
/// <c>Console.ReadLine</c> and <c>Console.Read</c> on a greenlet: the read runs on a thread-pool thread while
/// only the greenlet waits.
/// </summary>
/// <remarks>
/// A read on stdin cannot be cancelled. When the waiting greenlet is killed, the read it started stays
/// pending and its result is kept: the next <c>Console.ReadLine</c> (resp. <c>Console.Read</c>), on a
/// greenlet or not, returns it instead of reading again, so no input is lost.
/// </remarks>
internal static class CooperativeConsole
{
    internal static readonly OriginalSlot<Func<string?>> ReadLineSlot = new(static () => Console.ReadLine());
    internal static readonly OriginalSlot<Func<int>> ReadSlot = new(static () => Console.Read());

    private static Task<string?>? s_pendingLine;
    private static Task<int>? s_pendingChar;

    public static string? ReadLine() => ReadVia(ref s_pendingLine, ReadLineSlot.Call);

    public static int Read() => ReadVia(ref s_pendingChar, ReadSlot.Call);

    private static T ReadVia<T>(ref Task<T>? pending, Func<T> original)
    {
        var hub = Cooperative.ParkingHub();
        var leftover = Interlocked.Exchange(ref pending, null);
        if (hub is null)
        {
            if (leftover is null) return original();
            Cooperative.WaitBlocking(leftover);
            return leftover.GetAwaiter().GetResult();
        }
        var read = leftover ?? Task.Run(original);
        try
        {
            Cooperative.Park(hub, read, null, WaitReason.Other);
        }
        catch
        {
            // Killed: keep the read for the next caller unless someone already started another one.
            Interlocked.CompareExchange(ref pending, read, null);
            throw;
        }
        return read.GetAwaiter().GetResult();
    }
}
