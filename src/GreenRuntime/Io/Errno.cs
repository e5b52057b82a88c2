namespace GreenRuntime.Io;

/// <summary>
/// The Linux errno values the reactor and the direct socket calls look at, by name (asm-generic/errno*.h; the same
/// numbers on x64 and arm64, which is all the reactor runs on).
/// </summary>
internal static class Errno
{
    public const int ENOENT = 2;
    public const int EINTR = 4;
    public const int EBADF = 9;
    public const int EAGAIN = 11;
    public const int ENOMEM = 12;
    public const int EACCES = 13;
    public const int EEXIST = 17;
    public const int EINVAL = 22;
    public const int EPIPE = 32;
    public const int ENOSYS = 38;
    public const int ENOTSOCK = 88;
    public const int EMSGSIZE = 90;
    public const int EOPNOTSUPP = 95;
    public const int ENETDOWN = 100;
    public const int ENETUNREACH = 101;
    public const int ENETRESET = 102;
    public const int ECONNABORTED = 103;
    public const int ECONNRESET = 104;
    public const int ENOBUFS = 105;
    public const int ENOTCONN = 107;
    public const int ESHUTDOWN = 108;
    public const int ETIMEDOUT = 110;
    public const int ECONNREFUSED = 111;
    public const int EHOSTDOWN = 112;
    public const int EHOSTUNREACH = 113;
}
