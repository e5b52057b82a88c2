using System.Text;

namespace GreenRuntime.Servers;

/// <summary>Character classes, reason phrases and the Date header of HTTP/1.1 (RFC 9110/9112), without regex.</summary>
internal static class HttpSyntax
{
    // tchar = "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" / "-" / "." / "^" / "_" / "`" / "|" / "~" / DIGIT / ALPHA
    private static readonly bool[] s_token = BuildTokenTable();

    private static bool[] BuildTokenTable()
    {
        var t = new bool[256];
        for (int c = '0'; c <= '9'; c++) t[c] = true;
        for (int c = 'a'; c <= 'z'; c++) t[c] = true;
        for (int c = 'A'; c <= 'Z'; c++) t[c] = true;
        foreach (char c in "!#$%&'*+-.^_`|~") t[c] = true;
        return t;
    }

    public static bool IsToken(ReadOnlySpan<byte> s)
    {
        if (s.IsEmpty) return false;
        foreach (var b in s) if (!s_token[b]) return false;
        return true;
    }

    public static bool IsToken(string s)
    {
        if (s.Length == 0) return false;
        foreach (var c in s) if (c > 255 || !s_token[c]) return false;
        return true;
    }

    /// <summary>field-value characters: VCHAR, SP, HTAB, obs-text; no CR, LF, NUL or other controls.</summary>
    public static bool IsFieldValueByte(byte b) => b >= 0x20 ? b != 0x7F : b == (byte)'\t';

    public static bool IsValidHeaderValue(string s)
    {
        foreach (var c in s) if (c > 255 || !IsFieldValueByte((byte)c)) return false;
        return true;
    }

    /// <summary>request-target characters accepted here: visible ASCII (no spaces, controls or raw non-ASCII).</summary>
    public static bool IsTargetByte(byte b) => b is > 0x20 and < 0x7F;

    public static ReadOnlySpan<byte> Trim(ReadOnlySpan<byte> s)
    {
        int a = 0, z = s.Length;
        while (a < z && (s[a] == ' ' || s[a] == '\t')) a++;
        while (z > a && (s[z - 1] == ' ' || s[z - 1] == '\t')) z--;
        return s[a..z];
    }

    /// <summary>Whether the comma-separated list <paramref name="list"/> contains <paramref name="token"/> (case-insensitive).</summary>
    public static bool ListContains(string? list, string token)
    {
        if (list == null) return false;
        foreach (var range in list.AsSpan().Split(','))
            if (list.AsSpan()[range].Trim(" \t").Equals(token, StringComparison.OrdinalIgnoreCase)) return true;
        return false;
    }

    public static string ReasonPhrase(int status) => status switch
    {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        417 => "Expectation Failed",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => status switch { < 300 => "Success", < 400 => "Redirection", < 500 => "Client Error", _ => "Server Error" },
    };

    /// <summary>The Date header's value, formatted once per second. Safe from any thread: the second and its text are one
    /// immutable pair behind one reference, so a reader never pairs a second with another second's text.</summary>
    public sealed class DateCache(TimeProvider time)
    {
        private sealed record Stamp(long Second, byte[] Value);

        private Stamp _stamp = new(long.MinValue, []);

        public byte[] Current
        {
            get
            {
                var now = time.GetUtcNow();
                long second = now.ToUnixTimeSeconds();
                var stamp = Volatile.Read(ref _stamp);
                if (stamp.Second != second)
                {
                    stamp = new Stamp(second, Encoding.ASCII.GetBytes(now.ToString("R", System.Globalization.CultureInfo.InvariantCulture)));
                    Volatile.Write(ref _stamp, stamp);
                }
                return stamp.Value;
            }
        }
    }
}
