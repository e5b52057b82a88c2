using System.Net;

namespace GreenRuntime.Servers;

/// <summary>One request/response exchange on an <see cref="HttpServer"/> connection, handed to the handler.</summary>
public sealed class HttpContext
{
    internal HttpContext(HttpRequest request, HttpResponse response, EndPoint remote, EndPoint local)
    {
        Request = request;
        Response = response;
        RemoteEndPoint = remote;
        LocalEndPoint = local;
    }

    /// <summary>What the client sent.</summary>
    public HttpRequest Request { get; }

    /// <summary>What the handler sends back.</summary>
    public HttpResponse Response { get; }

    /// <summary>The client's address.</summary>
    public EndPoint RemoteEndPoint { get; }

    /// <summary>The server address the client connected to.</summary>
    public EndPoint LocalEndPoint { get; }
}
