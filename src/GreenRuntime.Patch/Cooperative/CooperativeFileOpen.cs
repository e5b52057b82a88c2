using System.Reflection;
using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace GreenRuntime.Cooperative;

/// <summary>
/// Opening and deleting a file on a greenlet. Every open on Unix (<c>FileStream</c>, <c>File.OpenHandle</c>, the
/// <c>File.ReadAll*</c>/<c>WriteAll*</c> helpers) reaches one private <c>SafeFileHandle.Open</c>, which calls
/// <c>open()</c> and then, in <c>Init</c>, <c>fstat</c>, <c>flock</c> and, for <c>FileMode.Create</c>/<c>Truncate</c>,
/// <c>ftruncate</c>; <c>File.Delete</c> and <c>FileInfo.Delete</c> reach <c>FileSystem.DeleteFile</c>, one
/// <c>unlink()</c>. They return at once, except: an open of a FIFO for reading waits for a writer, and one for writing
/// for a reader (two greenlets of one hub opening the two ends deadlocked the hub); and truncating or deleting a file
/// frees its blocks and drops its cached pages inside the call (ext4 here: 1.3 ms for 1 MiB written, 30–40 ms for
/// 128 MiB). Those calls run the original on the greenlet's own thread with the hub's baton released; everything else
/// runs the original inline, as before.
/// </summary>
/// <remarks>
/// <para>Deciding costs one <c>stat</c> of the path (following symlinks as the open does, not for a delete or an open
/// that refuses symlinks), made only where the call could wait: not for <c>FileMode.CreateNew</c> (the open fails on
/// any existing path) nor for a read-write open that does not truncate (Linux never makes an <c>O_RDWR</c> open of a
/// FIFO wait). The path may change between the <c>stat</c> and the call; the call is then the original's on whatever
/// the path names, only inline or released by the earlier look. Character devices are left inline: the ones whose
/// <c>open()</c> can wait (a serial line waiting for its carrier) are not looked for.</para>
/// <para>A released call is no cancellation point, as a file write run released is not: a kill or timeout that arrives
/// meanwhile is raised at the greenlet's next blocking point, so the caller gets the handle it opened (and disposes of
/// it as it unwinds) and a delete that happened is not reported as failed. Only a kill or timeout not raised yet is
/// raised before a FIFO open starts (<see cref="Parking.YieldPoint"/>); a truncation or a delete changes the file
/// system, as a write does, and raises nothing (a scratch file's delete in a <c>finally</c> raised the kill that had
/// come during the writes before it, and the file stayed). At the carrier cap (<see cref="HubOptions.MaxCarriers"/>) with no
/// parked greenlet's thread to run the hub meanwhile, the call waits for a carrier first, as
/// <see cref="Green.RunBlocking(Action)"/> does: a kill or timeout that comes during that wait ends it, since nothing has
/// been opened or changed yet (it used to be shielded, and an open stuck there could be neither killed nor timed out).
/// A truncation or a delete that finds a kill or timeout already pending there does not wait: it runs inline (it ends by
/// itself, as a write at the cap does) and the kill stays pending; it used to wait for a carrier with the kill held back,
/// for as long as every carrier stayed in a released call. An <c>open()</c> cannot be interrupted, on a thread either: a
/// FIFO open whose other end never comes waits for ever, now without holding the hub.</para>
/// </remarks>
internal static unsafe partial class CooperativeFileOpen
{
    /// <summary>Allocated bytes from which truncating or deleting a regular file runs released: below, the call takes
    /// well under a millisecond (measured on ext4: 0.3 ms for 64 KiB, 0.8 ms for 512 KiB, 1.3 ms for 1 MiB, 10 ms for
    /// 4 MiB at best, on a loaded machine), less than the two hand-offs are worth.</summary>
    internal const long ReleaseBytes = 1 << 20;

    internal delegate SafeFileHandle OpenFn(string fullPath, FileMode mode, FileAccess access, FileShare share, FileOptions options,
        long preallocationSize, UnixFileMode openPermissions, out long fileLength, out UnixFileMode filePermissions,
        bool failForSymlink, out bool wasSymlink, object? createOpenException);

    /// <summary>The private <c>SafeFileHandle.Open</c> every other open overload calls (its last parameter, a
    /// <c>Func</c> over internal types, is passed as <see cref="object"/>).</summary>
    internal static readonly MethodInfo? OpenMethod = typeof(SafeFileHandle)
        .GetMethods(BindingFlags.NonPublic | BindingFlags.Static | BindingFlags.DeclaredOnly)
        .FirstOrDefault(m => m.Name == "Open" && m.ReturnType == typeof(SafeFileHandle) && m.GetParameters() is { Length: 12 } p
            && p[0].ParameterType == typeof(string) && p[1].ParameterType == typeof(FileMode) && p[2].ParameterType == typeof(FileAccess)
            && p[3].ParameterType == typeof(FileShare) && p[4].ParameterType == typeof(FileOptions) && p[5].ParameterType == typeof(long)
            && p[6].ParameterType == typeof(UnixFileMode) && p[7].ParameterType == typeof(long).MakeByRefType()
            && p[8].ParameterType == typeof(UnixFileMode).MakeByRefType() && p[9].ParameterType == typeof(bool)
            && p[10].ParameterType == typeof(bool).MakeByRefType() && !p[11].ParameterType.IsValueType);

    internal static readonly MethodInfo? DeleteFileMethod = typeof(File).Assembly.GetType("System.IO.FileSystem")
        ?.GetMethod("DeleteFile", BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.Static, [typeof(string)]);

    internal static readonly OriginalSlot<OpenFn> OpenSlot = new(OpenMethod is null ? OpenMissing : OpenDirect);

    internal static readonly OriginalSlot<Action<string>> DeleteFileSlot =
        new(DeleteFileMethod?.CreateDelegate<Action<string>>() ?? (_ => throw Missing("System.IO.FileSystem.DeleteFile(String)")));

    /// <summary>Replaces the private <c>SafeFileHandle.Open(string, FileMode, FileAccess, FileShare, FileOptions, long,
    /// UnixFileMode, out long, out UnixFileMode, bool, out bool, Func)</c> (Unix).</summary>
    public static SafeFileHandle Open(string fullPath, FileMode mode, FileAccess access, FileShare share, FileOptions options,
        long preallocationSize, UnixFileMode openPermissions, out long fileLength, out UnixFileMode filePermissions,
        bool failForSymlink, out bool wasSymlink, object? createOpenException)
    {
        if (Cooperative.ParkingHub() is null || !OpenMayWait(fullPath, mode, access, failForSymlink))
        {
            // Every open of the process comes here: a direct calli to the original when bound (see OriginalSlot.Entry).
            nint entry = OpenSlot.Entry;
            return entry != 0
                ? ((delegate* managed<string, FileMode, FileAccess, FileShare, FileOptions, long, UnixFileMode, out long, out UnixFileMode, bool, out bool, object?, SafeFileHandle>)entry)(
                    fullPath, mode, access, share, options, preallocationSize, openPermissions, out fileLength, out filePermissions, failForSymlink, out wasSymlink, createOpenException)
                : OpenSlot.Call(fullPath, mode, access, share, options, preallocationSize, openPermissions, out fileLength, out filePermissions, failForSymlink, out wasSymlink, createOpenException);
        }
        var call = new OpenCall(fullPath, mode, access, share, options, preallocationSize, openPermissions, failForSymlink, createOpenException);
        // A FIFO open waits for its other end: a kill not raised yet is raised before it starts. A truncation changes the
        // file, as a write does: no cancellation point.
        var handle = Released(s_open, call, cancellationPoint: mode is not (FileMode.Create or FileMode.Truncate));
        fileLength = call.FileLength;
        filePermissions = call.FilePermissions;
        wasSymlink = call.WasSymlink;
        return handle;
    }

    /// <summary>Replaces <c>FileSystem.DeleteFile(string)</c> (Unix): <c>File.Delete</c>, <c>FileInfo.Delete</c>.</summary>
    public static void DeleteFile(string fullPath)
    {
        if (Cooperative.ParkingHub() is null || !DeleteMayWait(fullPath))
        {
            DeleteFileSlot.Call(fullPath);
            return;
        }
        Released(s_delete, fullPath, cancellationPoint: false); // it changes the file system, as a write does
    }

    /// <summary>Whether the open may wait: a FIFO opened for reading or for writing only, or a truncation of a regular file
    /// with <see cref="ReleaseBytes"/> or more allocated.</summary>
    internal static bool OpenMayWait(string fullPath, FileMode mode, FileAccess access, bool failForSymlink)
    {
        bool truncates = mode is FileMode.Create or FileMode.Truncate;
        if (mode == FileMode.CreateNew || (access == FileAccess.ReadWrite && !truncates)) return false;
        if (!TryStat(fullPath, follow: !failForSymlink, out var status)) return false; // the original reports it, or creates the file
        uint type = status.Mode & S_IFMT;
        if (type == S_IFIFO) return access != FileAccess.ReadWrite;
        return truncates && type == S_IFREG && status.Blocks * 512 >= ReleaseBytes;
    }

    /// <summary>Whether the delete frees blocks worth releasing the baton for: a regular file's last link (unlink never
    /// follows a symlink), with <see cref="ReleaseBytes"/> or more allocated.</summary>
    internal static bool DeleteMayWait(string fullPath) =>
        TryStat(fullPath, follow: false, out var status) && (status.Mode & S_IFMT) == S_IFREG && status.LinkCount == 1
        && status.Blocks * 512 >= ReleaseBytes;

    /// <summary>The original on the greenlet's own thread with the baton released (see the class remarks). Where the baton
    /// cannot be released at once, <see cref="Green.RunBlocking{T}(Func{T})"/>'s way: at the carrier cap, a parked
    /// greenlet's thread runs the hub meanwhile or the greenlet waits for a carrier, and a kill or timeout ends that wait
    /// (a call that is no cancellation point with one already pending waits for no carrier: see the class remarks); on a
    /// stackless greenlet, shielded, so that the result still reaches the caller.</summary>
    private static TResult Released<TState, TResult>(Func<TState, TResult> call, TState state, bool cancellationPoint)
    {
        if (cancellationPoint) Parking.YieldPoint();
        else Parking.GiveWay();
        if (Parking.CanReleaseBaton) return Parking.RunReleased(call, state, WaitReason.File, cancellationPoint: false);
        // RunBlocking on a stackful greenlet raises a kill or timeout only before the call starts (where nothing is opened,
        // truncated or deleted yet) and keeps what the call returned, the kill then pending: no handle is lost, so its wait
        // for a carrier needs no shield. A shield there made that wait, possibly for good (every carrier in a released
        // call), one that no kill or timeout could end. Still shielded: a stackless greenlet, whose RunBlocking is a
        // Task.Run that a kill stops waiting for and whose handle it drops.
        bool stackless = Green.Current.IsStackless;
        if (!stackless && (cancellationPoint || !Parking.CancellationPending))
            return Green.RunBlocking(() => call(state));
        if (!stackless)
        {
            // A truncation or delete with a kill or timeout already pending, which RunBlocking would raise before the file
            // changed (see the class remarks): with a parked greenlet's thread to stand in, released; with none, inline,
            // as a file write runs at the cap. It ends by itself, where a shielded wait for a carrier held the pending
            // kill until one came back, for good if none did.
            return Parking.CanReleaseBatonToStandIn
                ? Parking.RunReleased(call, state, WaitReason.File, cancellationPoint: false, standIn: true)
                : call(state);
        }
        using (Green.Shield())
            return Green.RunBlocking(() => call(state));
    }

    private static readonly Func<OpenCall, SafeFileHandle> s_open = static c => OpenSlot.Call(c.FullPath, c.Mode, c.Access, c.Share,
        c.Options, c.PreallocationSize, c.OpenPermissions, out c.FileLength, out c.FilePermissions, c.FailForSymlink, out c.WasSymlink, c.CreateOpenException);

    private static readonly Func<string, bool> s_delete = static fullPath =>
    {
        DeleteFileSlot.Call(fullPath);
        return true;
    };

    /// <summary>An open's arguments and out values, for the released call.</summary>
    private sealed class OpenCall(string fullPath, FileMode mode, FileAccess access, FileShare share, FileOptions options,
        long preallocationSize, UnixFileMode openPermissions, bool failForSymlink, object? createOpenException)
    {
        public readonly string FullPath = fullPath;
        public readonly FileMode Mode = mode;
        public readonly FileAccess Access = access;
        public readonly FileShare Share = share;
        public readonly FileOptions Options = options;
        public readonly long PreallocationSize = preallocationSize;
        public readonly UnixFileMode OpenPermissions = openPermissions;
        public readonly bool FailForSymlink = failForSymlink;
        public readonly object? CreateOpenException = createOpenException;
        public long FileLength;
        public UnixFileMode FilePermissions;
        public bool WasSymlink;
    }

    // The original before any detour: a calli, since a delegate cannot bind the Func over internal types to object.
    private static SafeFileHandle OpenDirect(string fullPath, FileMode mode, FileAccess access, FileShare share, FileOptions options,
        long preallocationSize, UnixFileMode openPermissions, out long fileLength, out UnixFileMode filePermissions,
        bool failForSymlink, out bool wasSymlink, object? createOpenException) =>
        ((delegate* managed<string, FileMode, FileAccess, FileShare, FileOptions, long, UnixFileMode, out long, out UnixFileMode, bool, out bool, object?, SafeFileHandle>)
            OpenMethod!.MethodHandle.GetFunctionPointer())(
            fullPath, mode, access, share, options, preallocationSize, openPermissions, out fileLength, out filePermissions, failForSymlink, out wasSymlink, createOpenException);

    private static SafeFileHandle OpenMissing(string fullPath, FileMode mode, FileAccess access, FileShare share, FileOptions options,
        long preallocationSize, UnixFileMode openPermissions, out long fileLength, out UnixFileMode filePermissions,
        bool failForSymlink, out bool wasSymlink, object? createOpenException) =>
        throw Missing("Microsoft.Win32.SafeHandles.SafeFileHandle.Open (the 12-parameter funnel)");

    private static MissingMethodException Missing(string name) =>
        new($"This runtime has no internal method {name}; the Files patch set refuses it here.");

    private const uint S_IFMT = 0xF000, S_IFIFO = 0x1000, S_IFREG = 0x8000;
    private const int AT_FDCWD = -100, AT_SYMLINK_NOFOLLOW = 0x100, SYS_newfstatat = 262;

    /// <summary>The kernel's <c>struct stat</c> on x64 (the only architecture the detour engine runs on).</summary>
    [StructLayout(LayoutKind.Explicit, Size = 144)]
    internal struct KernelStat
    {
        [FieldOffset(16)] public ulong LinkCount;
        [FieldOffset(24)] public uint Mode;
        [FieldOffset(64)] public long Blocks;
    }

    internal static bool TryStat(string path, bool follow, out KernelStat status)
    {
        status = default;
        fixed (KernelStat* p = &status)
            return NewFStatAt(SYS_newfstatat, AT_FDCWD, path, p, follow ? 0 : AT_SYMLINK_NOFOLLOW) == 0;
    }

    // newfstatat through syscall(2): glibc exports stat() and fstatat() only from 2.33 on, and .NET 10 runs on older ones.
    [LibraryImport("libc", EntryPoint = "syscall", StringMarshalling = StringMarshalling.Utf8)]
    private static partial nint NewFStatAt(nint number, int directory, string path, KernelStat* status, int flags);
}
