using System.Reflection;

namespace GreenRuntime.Cooperative;

/// <summary>
/// <c>File.Copy</c>, <c>FileInfo.CopyTo</c> and a <c>File.Move</c> across file systems on a greenlet: on Unix they
/// reach <c>FileSystem.CopyFile(string, string, bool)</c>, which copies the whole file in native code (one
/// <c>copy_file_range</c>/<c>sendfile</c> loop) that no read or write funnel sees. On a greenlet the copy runs through
/// <see cref="Green.RunBlocking(Action)"/>: on the greenlet's own thread with the hub's baton released (on the thread
/// pool for a stackless greenlet), so the other greenlets run meanwhile (measured: ten 64 MiB copies in ten greenlets
/// held the hub for 240 ms).
/// </summary>
/// <remarks>A kill or timeout that arrives during the copy of a stackful greenlet is raised at the greenlet's next
/// blocking point: a copy cannot be interrupted, and the destination is then complete, as after the original, so the
/// copy is not reported as failed.</remarks>
internal static class CooperativeFileCopy
{
    internal static readonly MethodInfo? CopyFileMethod = typeof(File).Assembly.GetType("System.IO.FileSystem")
        ?.GetMethod("CopyFile", BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.Static, [typeof(string), typeof(string), typeof(bool)]);

    internal static readonly OriginalSlot<Action<string, string, bool>> CopyFileSlot =
        new(CopyFileMethod?.CreateDelegate<Action<string, string, bool>>() ?? File.Copy);

    /// <summary>Replaces <c>FileSystem.CopyFile(string, string, bool)</c> (Unix).</summary>
    public static void CopyFile(string sourceFullPath, string destFullPath, bool overwrite)
    {
        if (Cooperative.ParkingHub() is null)
        {
            CopyFileSlot.Call(sourceFullPath, destFullPath, overwrite);
            return;
        }
        Green.RunBlocking(() => CopyFileSlot.Call(sourceFullPath, destFullPath, overwrite));
    }
}
