// The HTTP/1.1 request-head parser: bytes in, a checked HttpRequestHead (or an HttpProtocolException with the status
// to answer) out. Pure: no socket, no clock, no state between calls, so it is tested by feeding bytes.
//
// Framing (RFC 9112 §2.2): empty lines before a request line are ignored; a head ends at the first CRLF CRLF; a head
// longer than MaxRequestHeadersTotalSize is refused with 414 when its request line alone is too long, else 431.
// Checks (RFC 9110/9112), in order: request line = token SP target SP HTTP/1.x (505 for another digit version, 400
// otherwise); the target's form (ParseTarget: origin, absolute, "*" for OPTIONS, host:port for CONNECT; 405 for
// another method); field lines = token ":" OWS value OWS, no obs-fold, no controls; at most MaxRequestHeaderCount
// fields (431); exactly one Host in HTTP/1.1 (at most one in HTTP/1.0), equal to the authority of an absolute-form or
// authority-form target; Content-Length a number, repeated values equal; Transfer-Encoding only "chunked" (501 for
// other codings, 400 together with Content-Length); a Content-Length over MaxRequestBodySize is 413; Expect only
// 100-continue (417). Chunked bodies: ParseChunkSize and CheckTrailerField check the lines RequestBodyStream reads.
//
// Rejected: a regex or a string split of the head (allocations on garbage input, and lenient where the RFC is
// strict: bare LF, whitespace before the colon, folded lines, which request smuggling relies on).

using System.Text;

namespace GreenRuntime.Servers;

/// <summary>Parses and checks request heads and chunk lines; see the header comment for the rules.</summary>
internal static class HttpHeadParser
{
    /// <summary>The number of bytes of empty lines (CRLF) at the start of <paramref name="pending"/>, to be skipped
    /// before a request line.</summary>
    public static int LeadingEmptyLines(ReadOnlySpan<byte> pending)
    {
        int skip = 0;
        while (pending.Length - skip >= 2 && pending[skip] == '\r' && pending[skip + 1] == '\n') skip += 2;
        return skip;
    }

    /// <summary>
    /// The length of the head at the start of <paramref name="pending"/> (final CRLF CRLF included), or -1 when it is
    /// not complete yet. <paramref name="scanned"/> is how many bytes an earlier call already searched (0 at first):
    /// the search resumes just before them, so a byte stream fed piecewise is scanned once.
    /// </summary>
    /// <exception cref="HttpProtocolException">414 or 431: the head is, or can only become, longer than <paramref name="limit"/>.</exception>
    public static int FindHeadEnd(ReadOnlySpan<byte> pending, int scanned, int limit)
    {
        int from = Math.Clamp(scanned - 3, 0, pending.Length);
        int found = pending[from..].IndexOf("\r\n\r\n"u8);
        if (found >= 0)
        {
            int length = from + found + 4;
            if (length > limit) throw HeadTooLarge(pending, limit);
            return length;
        }
        if (pending.Length >= limit) throw HeadTooLarge(pending, limit);
        RejectBareLineBreaks(pending, from, "request head");
        return -1;
    }

    /// <summary>
    /// A bare LF, or a CR followed by anything but LF, can never end a line (lines end with CRLF): refused with 400 as soon
    /// as it arrives, rather than after the client's time is up (a head or chunk line ended by LF alone would otherwise
    /// wait for its timeout and get 408). <paramref name="from"/>: where the bytes not yet looked at begin (a CR at the
    /// very end may still be followed by its LF).
    /// </summary>
    /// <exception cref="HttpProtocolException">400.</exception>
    public static void RejectBareLineBreaks(ReadOnlySpan<byte> pending, int from, string what)
    {
        for (int i = from; i < pending.Length; i++)
        {
            int next = pending[i..].IndexOfAny((byte)'\r', (byte)'\n');
            if (next < 0) return;
            i += next;
            if (pending[i] == '\n' && (i == 0 || pending[i - 1] != '\r'))
                throw Bad($"The {what} contains a bare LF (lines end with CRLF).");
            if (pending[i] == '\r' && i + 1 < pending.Length && pending[i + 1] != '\n')
                throw Bad($"The {what} contains a bare CR.");
        }
    }

    private static HttpProtocolException HeadTooLarge(ReadOnlySpan<byte> pending, int limit)
    {
        int lineEnd = pending.IndexOf("\r\n"u8);
        return lineEnd < 0 || lineEnd >= limit
            ? new HttpProtocolException(414, $"The request line is longer than the {limit}-byte limit for the request head.")
            : new HttpProtocolException(431, $"The request head is larger than {limit} bytes.");
    }

    /// <summary>Parses and checks a complete head as <see cref="FindHeadEnd"/> delimited it (final CRLF CRLF included).</summary>
    /// <exception cref="HttpProtocolException">The head is malformed or refused; its status is the answer (400, 413, 417, 431, 501, 505).</exception>
    public static HttpRequestHead Parse(ReadOnlySpan<byte> head, HttpServerOptions options)
    {
        if (!head.EndsWith("\r\n\r\n"u8))
            throw new ArgumentException("A head ends with CRLF CRLF (as FindHeadEnd delimits it).", nameof(head));
        head = head[..^2]; // request-line CRLF *(field-line CRLF)
        int lineEnd = head.IndexOf("\r\n"u8);
        var requestLine = head[..lineEnd];
        var rest = head[(lineEnd + 2)..];
        if (requestLine.IndexOfAny((byte)'\r', (byte)'\n') >= 0) throw Bad("The request line contains a bare CR or LF.");

        int sp1 = requestLine.IndexOf((byte)' ');
        if (sp1 <= 0) throw Bad("The request line is not \"method target version\".");
        var method = requestLine[..sp1];
        var afterMethod = requestLine[(sp1 + 1)..];
        int sp2 = afterMethod.IndexOf((byte)' ');
        if (sp2 <= 0) throw Bad("The request line is not \"method target version\".");
        var target = afterMethod[..sp2];
        var version = afterMethod[(sp2 + 1)..];
        if (!HttpSyntax.IsToken(method)) throw Bad("The method is not a valid token.");
        foreach (var b in target)
            if (!HttpSyntax.IsTargetByte(b)) throw Bad("The request target contains a space, a control character or a non-ASCII byte.");
        bool http10;
        if (version.SequenceEqual("HTTP/1.1"u8)) http10 = false;
        else if (version.SequenceEqual("HTTP/1.0"u8)) http10 = true;
        else if (version.Length == 8 && version.StartsWith("HTTP/"u8) && char.IsAsciiDigit((char)version[5]) && version[6] == '.' && char.IsAsciiDigit((char)version[7]))
            throw new HttpProtocolException(505, "Only HTTP/1.0 and HTTP/1.1 are supported.");
        else throw Bad("The protocol version is not HTTP/1.x.");

        var parsed = new HttpRequestHead { Method = MethodString(method), Target = Encoding.ASCII.GetString(target), Http10 = http10 };
        string? authority = ParseTarget(parsed, out var absolute);
        string? host = null;
        int hosts = 0;
        bool hasTransferEncoding = false;
        string? transferEncoding = null, connection = null, expect = null;
        while (!rest.IsEmpty)
        {
            lineEnd = rest.IndexOf("\r\n"u8);
            var line = rest[..lineEnd];
            rest = rest[(lineEnd + 2)..];
            if (parsed.Headers.Count >= options.MaxRequestHeaderCount)
                throw new HttpProtocolException(431, $"The request has more than {options.MaxRequestHeaderCount} header fields.");
            int colon = line.IndexOf((byte)':');
            if (colon <= 0) throw Bad("A header line has no name or no colon (folded lines are not accepted).");
            var name = line[..colon];
            if (!HttpSyntax.IsToken(name)) throw Bad("A header name is not a valid token (whitespace before the colon?).");
            var value = HttpSyntax.Trim(line[(colon + 1)..]);
            foreach (var b in value)
                if (!HttpSyntax.IsFieldValueByte(b)) throw Bad("A header value contains a control character.");
            string nameText = HeaderName(name);
            string valueText = Encoding.Latin1.GetString(value);
            parsed.Headers.Add(new(nameText, valueText));
            if (nameText.Equals("Host", StringComparison.OrdinalIgnoreCase))
            {
                hosts++;
                host = valueText;
            }
            else if (nameText.Equals("Content-Length", StringComparison.OrdinalIgnoreCase)) parsed.ContentLength = MergeContentLength(parsed.ContentLength, value);
            else if (nameText.Equals("Transfer-Encoding", StringComparison.OrdinalIgnoreCase))
            {
                hasTransferEncoding = true;
                transferEncoding = transferEncoding == null ? valueText : transferEncoding + "," + valueText;
            }
            else if (nameText.Equals("Connection", StringComparison.OrdinalIgnoreCase)) connection = connection == null ? valueText : connection + "," + valueText;
            else if (nameText.Equals("Expect", StringComparison.OrdinalIgnoreCase)) expect = expect == null ? valueText : expect + "," + valueText;
        }

        if (hosts > 1 || (hosts == 0 && !http10)) throw Bad(hosts == 0 ? "HTTP/1.1 requests must have a Host header." : "The request has more than one Host header.");
        if (host != null && authority != null && !NamesAuthority(host, authority, absolute))
            throw Bad("The Host header does not name the authority of the request target.");
        if (hasTransferEncoding)
        {
            if (parsed.ContentLength != null) throw Bad("The request has both Content-Length and Transfer-Encoding.");
            var codings = transferEncoding!.Split(',', StringSplitOptions.TrimEntries);
            if (codings.Any(c => c.Length == 0)) throw Bad("The Transfer-Encoding header has an empty element.");
            if (codings.Length != 1 || !codings[0].Equals("chunked", StringComparison.OrdinalIgnoreCase))
                throw new HttpProtocolException(501, $"Transfer-Encoding \"{transferEncoding}\" is not supported; only chunked is.");
            parsed.Chunked = true;
            if (http10) parsed.Close = true; // RFC 9112 §6.1: chunked over HTTP/1.0 means the framing cannot be trusted afterwards
        }
        if (parsed.ContentLength is { } length && options.MaxRequestBodySize is { } max && length > max)
            throw new HttpProtocolException(413, $"The request body ({length} bytes) is larger than the limit of {max} bytes.");
        if (expect != null)
        {
            if (!expect.Trim().Equals("100-continue", StringComparison.OrdinalIgnoreCase))
                throw new HttpProtocolException(417, $"Expect: {expect} is not supported; only 100-continue is.");
            parsed.ExpectContinue = !http10 && (parsed.Chunked || parsed.ContentLength > 0);
        }
        parsed.Close |= HttpSyntax.ListContains(connection, "close");
        parsed.KeepAlive = !parsed.Close && (!http10 || HttpSyntax.ListContains(connection, "keep-alive"));
        return parsed;
    }

    /// <summary>
    /// Sets the head's path and query from its target, by the target's form (RFC 9112 §3.2), as Kestrel tells the forms
    /// apart: origin-form ("/a?x=1"); "*", for OPTIONS only (else 405); absolute-form, "http://" or "https://" then a
    /// URI; anything else is authority-form ("host:port"), for CONNECT only (else 405). Returns the authority the Host
    /// header must then equal (null for origin-form and "*"), and the parsed URI of an absolute-form target.
    /// </summary>
    /// <remarks>RFC 9112 §3.2.2 has an origin server take the host of an absolute-form target and ignore the Host
    /// header; Kestrel instead refuses a Host header that differs from the target's authority (the RFC has the client
    /// send them equal), so a handler reading Host sees the target's host either way, and a Host the client made up
    /// cannot disagree with the URI it asked for.</remarks>
    /// <exception cref="HttpProtocolException">400 for a malformed target, 405 (with Allow) for a form the method does not take.</exception>
    private static string? ParseTarget(HttpRequestHead head, out Uri? absolute)
    {
        absolute = null;
        string target = head.Target;
        if (target[0] == '/')
        {
            SplitQuery(target, out head.Path, out head.QueryString);
            return null;
        }
        if (target == "*")
        {
            if (head.Method != "OPTIONS")
                throw new HttpProtocolException(405, "The request target \"*\" is for OPTIONS only.") { Allow = "OPTIONS" };
            return null; // no path, as Kestrel reports it
        }
        if (target.StartsWith("http://", StringComparison.Ordinal) || target.StartsWith("https://", StringComparison.Ordinal))
        {
            // A backslash is in no URI, but System.Uri reads it as '/': refused, so the path taken below is the one Uri saw.
            if (target.Contains('\\') || !Uri.TryCreate(target, UriKind.Absolute, out absolute) || absolute.Authority.Length == 0)
                throw Bad("The absolute-form request target is not a valid http or https URI.");
            int authorityStart = target.IndexOf("//", StringComparison.Ordinal) + 2;
            int pathStart = target.AsSpan(authorityStart).IndexOfAny('/', '?', '#');
            var pathAndQuery = pathStart < 0 ? "" : target[(authorityStart + pathStart)..];
            int fragment = pathAndQuery.IndexOf('#');
            if (fragment >= 0) pathAndQuery = pathAndQuery[..fragment];
            SplitQuery(pathAndQuery, out head.Path, out head.QueryString);
            if (head.Path.Length == 0) head.Path = "/";
            return absolute.Authority;
        }
        foreach (char c in target)
            if (!(char.IsAsciiLetterOrDigit(c) || c is ':' or '.' or '-' or '[' or ']' or '@'))
                throw Bad("The request target is neither a path, an absolute URI, \"*\" nor host:port.");
        if (head.Method != "CONNECT")
            throw new HttpProtocolException(405, "A host:port request target is for CONNECT only.") { Allow = "CONNECT" };
        return target;
    }

    /// <summary>Whether a Host header names the target's authority: host names are case-insensitive (RFC 3986 §3.2.2),
    /// and for an absolute-form target with the scheme's default port the port may be given or left out, as Kestrel allows.</summary>
    private static bool NamesAuthority(string host, string authority, Uri? absolute) =>
        host.Equals(authority, StringComparison.OrdinalIgnoreCase)
        || (absolute is { IsDefaultPort: true }
            && host.Equals(authority + ":" + absolute.Port.ToString(System.Globalization.CultureInfo.InvariantCulture), StringComparison.OrdinalIgnoreCase));

    private static void SplitQuery(string pathAndQuery, out string path, out string query)
    {
        int q = pathAndQuery.IndexOf('?');
        path = q < 0 ? pathAndQuery : pathAndQuery[..q];
        query = q < 0 ? "" : pathAndQuery[(q + 1)..];
    }

    /// <summary>The size on a chunk-size line (RFC 9112 §7.1: hex digits, optional whitespace and extensions after ';').</summary>
    /// <remarks>The grammar is 1*HEXDIG, so leading zeros are allowed in any number; what is bounded is the value, checked
    /// before each digit so that it never wraps (RFC 9112 §7.1 asks recipients to guard against overflow).</remarks>
    /// <exception cref="HttpProtocolException">400: not a size, a value over <see cref="long.MaxValue"/>, or a malformed rest.</exception>
    public static long ParseChunkSize(ReadOnlySpan<byte> line)
    {
        long size = 0;
        int i = 0;
        for (; i < line.Length; i++)
        {
            int digit = HexValue(line[i]);
            if (digit < 0) break;
            if (size > long.MaxValue >> 4) throw Bad("The chunk size is too large.");
            size = (size << 4) | (long)digit;
        }
        if (i == 0) throw Bad("A chunk size line does not start with a hexadecimal size.");
        var rest = line[i..];
        int j = 0;
        while (j < rest.Length && (rest[j] == ' ' || rest[j] == '\t')) j++;
        if (j < rest.Length && rest[j] != ';') throw Bad("A chunk size is followed by something other than a chunk extension.");
        if (j == rest.Length && j > 0) throw Bad("A chunk size line ends with whitespace.");
        foreach (var b in rest)
            if (!HttpSyntax.IsFieldValueByte(b)) throw Bad("A chunk extension contains a control character.");
        return size;
    }

    /// <summary>Checks one field line of a chunked body's trailer section (name ":" value, as a header field).</summary>
    /// <exception cref="HttpProtocolException">400: malformed.</exception>
    public static void CheckTrailerField(ReadOnlySpan<byte> line)
    {
        int colon = line.IndexOf((byte)':');
        if (colon <= 0 || !HttpSyntax.IsToken(line[..colon]))
            throw Bad("A trailer field is malformed.");
        foreach (var b in line[(colon + 1)..])
            if (!HttpSyntax.IsFieldValueByte(b)) throw Bad("A trailer field contains a control character.");
    }

    private static long? MergeContentLength(long? previous, ReadOnlySpan<byte> value)
    {
        long? result = previous;
        foreach (var range in value.Split((byte)','))
        {
            var item = HttpSyntax.Trim(value[range]);
            if (item.IsEmpty || item.Length > 18) throw Bad("The Content-Length is not a number of bytes.");
            long n = 0;
            foreach (var b in item)
            {
                if (b is < (byte)'0' or > (byte)'9') throw Bad("The Content-Length is not a number of bytes.");
                n = n * 10 + (b - '0');
            }
            if (result is { } r && r != n) throw Bad("The request has conflicting Content-Length values.");
            result = n;
        }
        return result;
    }

    private static HttpProtocolException Bad(string message) => new(400, message);

    private static int HexValue(byte b) => b switch
    {
        >= (byte)'0' and <= (byte)'9' => b - '0',
        >= (byte)'a' and <= (byte)'f' => b - 'a' + 10,
        >= (byte)'A' and <= (byte)'F' => b - 'A' + 10,
        _ => -1,
    };

    private static string MethodString(ReadOnlySpan<byte> m) => m switch
    {
        _ when m.SequenceEqual("GET"u8) => "GET",
        _ when m.SequenceEqual("POST"u8) => "POST",
        _ when m.SequenceEqual("HEAD"u8) => "HEAD",
        _ when m.SequenceEqual("PUT"u8) => "PUT",
        _ when m.SequenceEqual("DELETE"u8) => "DELETE",
        _ => Encoding.ASCII.GetString(m),
    };

    private static readonly string[] s_commonHeaders =
        ["Host", "Content-Length", "Transfer-Encoding", "Connection", "Accept", "User-Agent", "Content-Type", "Expect", "Accept-Encoding"];

    private static string HeaderName(ReadOnlySpan<byte> name)
    {
        foreach (var common in s_commonHeaders)
        {
            if (common.Length != name.Length) continue;
            bool same = true;
            for (int i = 0; i < name.Length && same; i++) same = common[i] == name[i];
            if (same) return common;
        }
        return Encoding.ASCII.GetString(name);
    }
}
