// The HTTP/1.1 request-head parser: bytes in, a checked HttpRequestHead (or an HttpProtocolException with the status
// to answer) out. Pure: no socket, no clock, no state between calls, so it is tested by feeding bytes.
//
// Framing (RFC 9112 §2.2): empty lines before a request line are ignored; a head ends at the first CRLF CRLF; a head
// longer than MaxRequestHeadersTotalSize is refused with 414 when its request line alone is too long, else 431.
// Checks (RFC 9110/9112), in order: request line = token SP target SP HTTP/1.x (505 for another digit version, 400
// otherwise); field lines = token ":" OWS value OWS, no obs-fold, no controls; at most MaxRequestHeaderCount fields
// (431); exactly one Host in HTTP/1.1 (at most one in HTTP/1.0); Content-Length a number, repeated values equal;
// Transfer-Encoding only "chunked" (501 for other codings, 400 together with Content-Length); a Content-Length over
// MaxRequestBodySize is 413; Expect only 100-continue (417). Chunked bodies: ParseChunkSize and CheckTrailerField
// check the lines RequestBodyStream reads.
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
            if (nameText.Equals("Host", StringComparison.OrdinalIgnoreCase)) hosts++;
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

    /// <summary>The size on a chunk-size line (RFC 9112 §7.1: hex digits, optional whitespace and extensions after ';').</summary>
    /// <exception cref="HttpProtocolException">400: not a size, too large (15 hex digits at most), or a malformed rest.</exception>
    public static long ParseChunkSize(ReadOnlySpan<byte> line)
    {
        long size = 0;
        int i = 0;
        for (; i < line.Length; i++)
        {
            int digit = HexValue(line[i]);
            if (digit < 0) break;
            if (i >= 15) throw Bad("The chunk size is too large.");
            size = size * 16 + digit;
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
