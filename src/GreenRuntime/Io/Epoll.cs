using System.Runtime.InteropServices;

namespace GreenRuntime.Io;

/// <summary>The Linux system calls the reactor is built on (epoll, eventfd, non-blocking send/recv, and pwritev2 for pipes).</summary>
/// <remarks>
/// Bound for linux-x64 only: there <c>struct epoll_event</c> is packed (12 bytes); other architectures lay
/// it out differently, and the reactor is then not used (<see cref="IsSupported"/>), so sockets fall back to
/// the Task bridge.
/// </remarks>
internal static unsafe partial class Epoll
{
    public static readonly bool IsSupported = OperatingSystem.IsLinux() && RuntimeInformation.ProcessArchitecture == Architecture.X64;

    public const uint In = 0x001, Out = 0x004, Err = 0x008, Hup = 0x010, RdHup = 0x2000, EdgeTriggered = 1u << 31;
    public const int CtlAdd = 1, CtlDel = 2, CtlMod = 3;
    public const int CloseOnExec = 0x80000, NonBlock = 0x800;
    public const int MsgDontWait = 0x40, MsgNoSignal = 0x4000;

    // The errno values the epoll code checks (named once, in Errno).
    public const int EINTR = Errno.EINTR, EAGAIN = Errno.EAGAIN, EEXIST = Errno.EEXIST, ENOENT = Errno.ENOENT, ENOSYS = Errno.ENOSYS;

    [StructLayout(LayoutKind.Sequential, Pack = 4)]
    public struct Event
    {
        public uint Events;
        public ulong Data;
    }

    [StructLayout(LayoutKind.Sequential)]
    public struct Timespec
    {
        public long Seconds;
        public long Nanoseconds;
    }

    [LibraryImport("libc", EntryPoint = "epoll_create1", SetLastError = true)]
    public static partial int Create(int flags);

    [LibraryImport("libc", EntryPoint = "epoll_ctl", SetLastError = true)]
    public static partial int Control(int epfd, int op, int fd, Event* ev);

    /// <summary>epoll_wait with a nanosecond timeout (Linux 5.11+); ENOSYS on older kernels.</summary>
    [LibraryImport("libc", EntryPoint = "epoll_pwait2", SetLastError = true)]
    public static partial int WaitPrecise(int epfd, Event* events, int maxEvents, Timespec* timeout, void* sigmask);

    [LibraryImport("libc", EntryPoint = "epoll_wait", SetLastError = true)]
    public static partial int Wait(int epfd, Event* events, int maxEvents, int timeoutMs);

    [LibraryImport("libc", EntryPoint = "eventfd", SetLastError = true)]
    public static partial int EventFd(uint initial, int flags);

    [LibraryImport("libc", EntryPoint = "read", SetLastError = true)]
    public static partial nint Read(int fd, void* buffer, nint count);

    [LibraryImport("libc", EntryPoint = "write", SetLastError = true)]
    public static partial nint Write(int fd, void* buffer, nint count);

    public const int FGetFl = 3, FSetFl = 4;

    /// <summary>fcntl(fd, F_GETFL or F_SETFL, flags). Variadic in C; its int argument goes in the same register on x64.</summary>
    [LibraryImport("libc", EntryPoint = "fcntl", SetLastError = true)]
    public static partial int Fcntl(int fd, int command, int argument);

    [LibraryImport("libc", EntryPoint = "close")]
    public static partial int Close(int fd);

    /// <summary>One entry of poll(2).</summary>
    [StructLayout(LayoutKind.Sequential)]
    public struct PollFd
    {
        public int Fd;
        public short Events;
        public short ReturnedEvents;
    }

    public const short PollIn = 0x001, PollRdHup = 0x2000;

    [LibraryImport("libc", EntryPoint = "poll", SetLastError = true)]
    public static partial int Poll(PollFd* fds, nuint count, int timeoutMs);

    [LibraryImport("libc", EntryPoint = "recv", SetLastError = true)]
    public static partial nint Receive(int fd, byte* buffer, nint length, int flags);

    /// <summary>recvfrom(2): <paramref name="addressLength"/> is the address buffer's size in, the sender's address's size out.</summary>
    [LibraryImport("libc", EntryPoint = "recvfrom", SetLastError = true)]
    public static partial nint ReceiveFrom(int fd, byte* buffer, nint length, int flags, byte* address, uint* addressLength);

    /// <summary>accept4(2) without the peer's address (the accepted socket asks the kernel for it).</summary>
    [LibraryImport("libc", EntryPoint = "accept4", SetLastError = true)]
    public static partial int Accept(int fd, byte* address, uint* addressLength, int flags);

    /// <summary>ioctl(fd, SIOCOUTQ, &amp;bytes): the bytes of a stream socket's send queue not yet acknowledged by the peer.</summary>
    [LibraryImport("libc", EntryPoint = "ioctl", SetLastError = true)]
    public static partial int IoctlInt(int fd, nuint request, int* value);

    public const nuint SiocOutQ = 0x5411;

    [LibraryImport("libc", EntryPoint = "getsockopt", SetLastError = true)]
    public static partial int GetSockOpt(int fd, int level, int name, int* value, uint* length);

    public const int SolSocket = 1, SoSndBuf = 7;

    [LibraryImport("libc", EntryPoint = "send", SetLastError = true)]
    public static partial nint Send(int fd, byte* buffer, nint length, int flags);

    /// <summary>pwritev2's flag that makes a write to a pipe write what fits and fail with EAGAIN rather than wait.</summary>
    public const int RwfNoWait = 0x8;

    /// <summary>pwritev2 of one buffer at the descriptor's own position (offset -1): the iovec is built here, a pointer
    /// and a length.</summary>
    public static nint WriteNoWait(int fd, byte* buffer, nint length)
    {
        nint* vector = stackalloc nint[2];
        vector[0] = (nint)buffer;
        vector[1] = length;
        return WriteVector(fd, vector, 1, -1, RwfNoWait);
    }

    [LibraryImport("libc", EntryPoint = "pwritev2", SetLastError = true)]
    private static partial nint WriteVector(int fd, nint* vectors, int count, long offset, int flags);
}
