namespace GreenRuntime.Servers;

/// <summary>A parsed and checked request head (request line and header fields): what <see cref="HttpHeadParser.Parse"/> returns.</summary>
internal sealed class HttpRequestHead
{
    /// <summary>The method as sent; the common ones are shared string instances.</summary>
    public string Method = "";

    /// <summary>The request-target as sent.</summary>
    public string Target = "";

    /// <summary>The target's path, still percent-encoded: of an absolute-form target too; empty for "*" and authority-form.</summary>
    public string Path = "";

    /// <summary>The target's query, without its '?'; empty when there is none.</summary>
    public string QueryString = "";

    /// <summary>HTTP/1.0 (otherwise HTTP/1.1).</summary>
    public bool Http10;

    /// <summary>The header fields in the order received; common names are shared string instances.</summary>
    public readonly List<KeyValuePair<string, string>> Headers = new();

    /// <summary>The body's length when framed by Content-Length; null when chunked or absent.</summary>
    public long? ContentLength;

    /// <summary>The body is framed by the chunked transfer coding.</summary>
    public bool Chunked;

    /// <summary>The client waits for "100 Continue" before sending its body.</summary>
    public bool ExpectContinue;

    /// <summary>The connection must close after this exchange (Connection: close, or chunked over HTTP/1.0).</summary>
    public bool Close;

    /// <summary>The client allows another request on this connection.</summary>
    public bool KeepAlive;
}
