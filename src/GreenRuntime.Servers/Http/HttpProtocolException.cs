namespace GreenRuntime.Servers;

/// <summary>
/// The client broke HTTP/1.1 (or a limit) while the server was reading from it. Carries the status the server
/// answers with when the response has not started; the connection is always closed after it.
/// </summary>
internal sealed class HttpProtocolException(int status, string message) : IOException(message)
{
    public int Status { get; } = status;

    /// <summary>The Allow header of a 405 answer (RFC 9110 §15.5.6 requires one): the methods the target accepts.</summary>
    public string? Allow { get; init; }
}
