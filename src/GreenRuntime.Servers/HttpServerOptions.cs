namespace GreenRuntime.Servers;

/// <summary>Limits and timeouts of an <see cref="HttpServer"/>. Every property has a documented default and range.</summary>
public sealed class HttpServerOptions
{
    /// <summary>Connections open at once, across all hubs of <see cref="Hubs"/>; 0 (default) is the process's file-descriptor
    /// limit minus a tenth (at least 64), since an idle keep-alive connection holds no carrier thread (requests in progress
    /// wait for carriers in FIFO order). When full, the server stops accepting until a connection ends.</summary>
    public int MaxConnections { get; init; }

    /// <summary>A pool whose members the connections become (gevent's <c>spawn=pool</c>); when set, its size is the connection
    /// limit and <see cref="MaxConnections"/> must be 0. A pool belongs to one hub, so it excludes <see cref="Hubs"/>. Default null.</summary>
    public GreenPool? Pool { get; init; }

    /// <summary>Serve on every hub of this group: each hub accepts on a listener of its own, bound with <c>SO_REUSEPORT</c>
    /// to the same port (Linux), and serves the connections it accepted for their whole life; the server may then be
    /// started and stopped from any thread. Default null: the server runs on the hub that starts it.</summary>
    public HubGroup? Hubs { get; init; }

    /// <summary>The listen backlog (default 511, 1–65535).</summary>
    public int Backlog { get; init; } = 511;

    /// <summary>Largest request head (request line plus headers, including line ends) in bytes; more is answered with
    /// 431 (or 414 when the request line alone is too long). Default 16 KiB, range 1 KiB–1 MiB.</summary>
    public int MaxRequestHeadersTotalSize { get; init; } = 16 * 1024;

    /// <summary>Most header fields in a request; more is answered with 431. Default 100, range 1–10,000.</summary>
    public int MaxRequestHeaderCount { get; init; } = 100;

    /// <summary>Largest request body in bytes; a larger Content-Length is answered with 413 before the handler runs, and a
    /// chunked body that grows past it fails the handler's read (413 if the response has not started). Default 30 MiB;
    /// null means no limit.</summary>
    public long? MaxRequestBodySize { get; init; } = 30 * 1024 * 1024;

    /// <summary>How long a client may take to send a complete request head once its first byte arrived (or, for the
    /// first request, once the connection was accepted); past it the server answers 408 and closes (slowloris
    /// defence). Default 10 s.</summary>
    public TimeSpan RequestHeadersTimeout { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>How long an idle keep-alive connection waits for the next request before it is closed silently. Default 2 min.</summary>
    public TimeSpan KeepAliveTimeout { get; init; } = TimeSpan.FromMinutes(2);

    /// <summary>How long one read of the request body or one write of the response may wait for the client; past it the
    /// operation throws <see cref="IOException"/> and the connection is closed. Default 30 s; null waits as long as it takes.</summary>
    public TimeSpan? IoTimeout { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>The slowest a request body may arrive, in bytes per second, measured over the whole body once
    /// <see cref="MinRequestBodyDataRateGracePeriod"/> has passed (slow-POST defence: <see cref="IoTimeout"/> alone lets a
    /// client that sends a byte now and then hold the request for ever). Only the time the handler spends waiting for body
    /// bytes counts, not its own work between reads, and the unread rest of a body drained after the handler counts too.
    /// A body that falls behind fails the handler's read with <see cref="IOException"/> (408 if the response has not
    /// started) and the connection is closed. Default 240 bytes/s, as Kestrel; null sets no minimum.</summary>
    public double? MinRequestBodyDataRate { get; init; } = 240;

    /// <summary>How long a request body may take before <see cref="MinRequestBodyDataRate"/> applies: the body may wait this
    /// long plus one second per <see cref="MinRequestBodyDataRate"/> bytes received. Default 5 s, as Kestrel.</summary>
    public TimeSpan MinRequestBodyDataRateGracePeriod { get; init; } = TimeSpan.FromSeconds(5);

    /// <summary>Response bytes buffered before the headers are sent. A response the handler finishes within this size
    /// gets an automatic Content-Length; a longer one is sent chunked (close-delimited to HTTP/1.0 clients).
    /// Default 16 KiB, range 0–1 MiB.</summary>
    public int ResponseBufferSize { get; init; } = 16 * 1024;

    /// <summary>The <c>Server</c> header sent with every response; null sends none. Default "GreenRuntime".</summary>
    public string? ServerHeader { get; init; } = "GreenRuntime";

    internal void Validate()
    {
        if (MaxConnections < 0)
            throw new ArgumentOutOfRangeException(nameof(MaxConnections), MaxConnections, "MaxConnections must be positive, or 0 for the default.");
        if (Pool != null && MaxConnections != 0)
            throw new ArgumentException("Set either Pool or MaxConnections: with a pool, the pool's size is the connection limit.", nameof(MaxConnections));
        if (Pool != null && Hubs != null)
            throw new ArgumentException("A GreenPool belongs to one hub, so it cannot limit a server on a HubGroup; set MaxConnections instead.", nameof(Pool));
        if (Backlog is < 1 or > 65535)
            throw new ArgumentOutOfRangeException(nameof(Backlog), Backlog, "Backlog must be between 1 and 65535.");
        if (MaxRequestHeadersTotalSize is < 1024 or > 1024 * 1024)
            throw new ArgumentOutOfRangeException(nameof(MaxRequestHeadersTotalSize), MaxRequestHeadersTotalSize, "MaxRequestHeadersTotalSize must be between 1 KiB and 1 MiB.");
        if (MaxRequestHeaderCount is < 1 or > 10_000)
            throw new ArgumentOutOfRangeException(nameof(MaxRequestHeaderCount), MaxRequestHeaderCount, "MaxRequestHeaderCount must be between 1 and 10,000.");
        if (MaxRequestBodySize is < 0)
            throw new ArgumentOutOfRangeException(nameof(MaxRequestBodySize), MaxRequestBodySize, "MaxRequestBodySize must not be negative (null means no limit).");
        if (RequestHeadersTimeout <= TimeSpan.Zero)
            throw new ArgumentOutOfRangeException(nameof(RequestHeadersTimeout), RequestHeadersTimeout, "RequestHeadersTimeout must be positive.");
        if (KeepAliveTimeout <= TimeSpan.Zero)
            throw new ArgumentOutOfRangeException(nameof(KeepAliveTimeout), KeepAliveTimeout, "KeepAliveTimeout must be positive.");
        if (IoTimeout is { } io && io <= TimeSpan.Zero)
            throw new ArgumentOutOfRangeException(nameof(IoTimeout), io, "IoTimeout must be positive, or null to wait as long as it takes.");
        if (MinRequestBodyDataRate is { } rate && !(rate > 0 && double.IsFinite(rate)))
            throw new ArgumentOutOfRangeException(nameof(MinRequestBodyDataRate), rate, "MinRequestBodyDataRate must be a positive number of bytes per second, or null for no minimum.");
        if (MinRequestBodyDataRateGracePeriod <= TimeSpan.Zero)
            throw new ArgumentOutOfRangeException(nameof(MinRequestBodyDataRateGracePeriod), MinRequestBodyDataRateGracePeriod, "MinRequestBodyDataRateGracePeriod must be positive.");
        if (ResponseBufferSize is < 0 or > 1024 * 1024)
            throw new ArgumentOutOfRangeException(nameof(ResponseBufferSize), ResponseBufferSize, "ResponseBufferSize must be between 0 and 1 MiB.");
        if (ServerHeader != null && !HttpSyntax.IsValidHeaderValue(ServerHeader))
            throw new ArgumentException("ServerHeader must not contain control characters such as CR or LF.", nameof(ServerHeader));
    }
}
