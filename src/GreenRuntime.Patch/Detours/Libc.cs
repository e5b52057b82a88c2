using System.Runtime.InteropServices;

namespace GreenRuntime.Detours;

/// <summary>The few libc calls the engine needs to map and protect code memory.</summary>
internal static class Libc
{
    public const int ProtRead = 1;
    public const int ProtWrite = 2;
    public const int ProtExec = 4;

    public const int MapPrivate = 0x02;
    public const int MapAnonymous = 0x20;

    /// <summary>Linux 4.17+: fail with EEXIST instead of replacing or relocating an existing mapping.</summary>
    public const int MapFixedNoReplace = 0x100000;

    public const int EPerm = 1;
    public const int EAccess = 13;

    public static readonly nint MapFailed = -1;

    [DllImport("libc", SetLastError = true, EntryPoint = "mprotect")]
    public static extern int MProtect(nint address, nuint length, int protection);

    [DllImport("libc", SetLastError = true, EntryPoint = "mmap")]
    public static extern nint MMap(nint address, nuint length, int protection, int flags, int fd, nint offset);

    [DllImport("libc", SetLastError = true, EntryPoint = "open")]
    public static extern int Open([MarshalAs(UnmanagedType.LPUTF8Str)] string path, int flags);

    [DllImport("libc", SetLastError = true, EntryPoint = "read")]
    public static extern unsafe nint Read(int fd, byte* buffer, nint count);

    [DllImport("libc", EntryPoint = "nanosleep")]
    public static extern unsafe int NanoSleep(long* request, long* remaining);

    [DllImport("libc", EntryPoint = "close")]
    public static extern int Close(int fd);

    [DllImport("libc", SetLastError = true, EntryPoint = "munmap")]
    public static extern int MUnmap(nint address, nuint length);
}
