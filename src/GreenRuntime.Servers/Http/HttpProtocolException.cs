namespace GreenRuntime.Servers;

/// <summary>
/// The client broke HTTP/1.1 (or a limit) while the server was reading from it. Carries the status the server
/// answers with when the response has not started; the connection is always closed after it.
/// </summary>
internal sealed class HttpProtocolException(int status, string message) : IOException(message)
{
    public int Status { get; } = status;
}
