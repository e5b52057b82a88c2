namespace GreenRuntime.Servers;

/// <summary>
/// The request an <see cref="HttpServer"/> handler serves: request line, headers and a body stream that reads
/// from the connection as the handler asks for it (blocking only the handler's greenlet).
/// </summary>
/// <remarks>Header values are decoded as Latin-1 (RFC 9110 leaves non-ASCII bytes opaque). The target is kept
/// as sent (percent-encoding included); <see cref="Path"/> and <see cref="QueryString"/> are its path and query, also of
/// an absolute-form target ("http://host/a?x=1", whose authority the Host header must then name, as Kestrel requires).</remarks>
public sealed class HttpRequest
{
    private readonly List<KeyValuePair<string, string>> _headers;

    internal HttpRequest(string method, string target, string path, string queryString, string protocol, List<KeyValuePair<string, string>> headers, long? contentLength, bool chunked, Stream body)
    {
        Method = method;
        Target = target;
        Protocol = protocol;
        _headers = headers;
        ContentLength = contentLength;
        IsChunked = chunked;
        Body = body;
        Path = path;
        QueryString = queryString;
    }

    /// <summary>The method as sent, e.g. "GET" (methods are case-sensitive).</summary>
    public string Method { get; }

    /// <summary>The request-target as sent: usually a path with an optional query ("/a/b?x=1"); also an absolute URI
    /// ("http://host/a/b?x=1"), "*" (OPTIONS only) or "host:port" (CONNECT only).</summary>
    public string Target { get; }

    /// <summary>The target's path, still percent-encoded: the part of <see cref="Target"/> before the first '?', without the
    /// scheme and authority of an absolute-form target ("/" when it has no path). Empty for "*" and for CONNECT's "host:port".</summary>
    public string Path { get; }

    /// <summary>The target's query: the part after the first '?', without it (nor a fragment); empty when there is none.</summary>
    public string QueryString { get; }

    /// <summary>"HTTP/1.1" or "HTTP/1.0".</summary>
    public string Protocol { get; }

    /// <summary>The header fields in the order received, names as sent.</summary>
    public IReadOnlyList<KeyValuePair<string, string>> Headers => _headers;

    /// <summary>The Content-Length of the body, or null when it is chunked or absent (no body).</summary>
    public long? ContentLength { get; }

    /// <summary>Whether the body is sent with chunked transfer coding.</summary>
    public bool IsChunked { get; }

    /// <summary>The request body; empty when there is none. Reading it sends "100 Continue" first when the client asked for it.</summary>
    /// <remarks>A read fails with <see cref="IOException"/> when the client sends a malformed or oversized chunked body,
    /// closes early, or is slower than <see cref="HttpServerOptions.IoTimeout"/>. Whatever the handler leaves unread is
    /// discarded after the response (or the connection is closed when that is cheaper).</remarks>
    public Stream Body { get; }

    /// <summary>The value of the header <paramref name="name"/> (case-insensitive); several fields are joined with ", ". Null when absent.</summary>
    public string? GetHeader(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        string? value = null;
        foreach (var h in _headers)
        {
            if (!h.Key.Equals(name, StringComparison.OrdinalIgnoreCase)) continue;
            value = value == null ? h.Value : value + ", " + h.Value;
        }
        return value;
    }

    /// <summary>Reads the rest of the body as UTF-8 text.</summary>
    public string ReadBodyAsString()
    {
        using var reader = new StreamReader(Body, System.Text.Encoding.UTF8, detectEncodingFromByteOrderMarks: false, leaveOpen: true);
        return reader.ReadToEnd();
    }

    /// <summary>"METHOD target protocol", for logs.</summary>
    public override string ToString() => $"{Method} {Target} {Protocol}";
}
