using System.Net.Http;

namespace GreenRuntime.Cooperative;

/// <summary>
/// <see cref="HttpClient.Send(HttpRequestMessage, HttpCompletionOption, CancellationToken)"/> on a greenlet: the request
/// gets a token that the greenlet's kill and its open timeouts cancel as well (<see cref="Parking.LinkCancellation"/>).
/// </summary>
/// <remarks>
/// The sync path waits for a pooled connection on a task that only its token can withdraw from the pool's queue. A kill
/// interrupts the wait but not the queue entry: the pool later handed a freed connection to the dead caller, and with
/// <c>MaxConnectionsPerServer</c> reached every later request waited for ever. With the token cancelled the request ends
/// as a cancelled request does on a thread, and the kill or timeout, not the cancellation, is what the caller sees.
/// Every synchronous <see cref="HttpClient"/> call, <c>HttpWebRequest</c> and <c>WebClient</c> end here.
/// <para>The asynchronous calls a stackful greenlet starts get the same token: <c>SendAsync(request, option, token)</c>,
/// which <c>GetAsync</c>, <c>PostAsync</c>, <c>PutAsync</c>, <c>DeleteAsync</c>, every <c>SendAsync</c> and WCF's synchronous
/// calls end in, and the private cores of <c>GetStringAsync</c>, <c>GetByteArrayAsync</c> and <c>GetStreamAsync</c>
/// (their common base, <c>HttpMessageInvoker.SendAsync</c>, is refused by the detour engine: no compiled code after
/// PrepareMethod). Legacy code waits for them with <c>.Result</c>; a kill or timeout ended that wait but left
/// the request in the pool's queue, then on a connection until the server answered: with
/// <c>MaxConnectionsPerServer = 2</c>, ten timed-out calls held the next four calls up for 10.5 s (0.45 s on threads,
/// whose timed-out calls were cancelled by their tokens).</para>
/// <para>Requests that reach a <see cref="SocketsHttpHandler"/> without an <see cref="HttpClient"/> call, through an
/// <see cref="HttpMessageInvoker"/> (Grpc.Net.Client's channel, YARP) or a <see cref="DelegatingHandler"/> chain, get it
/// at the handler's <c>Send</c> and <c>SendAsync</c>: a gRPC call killed or timed out on a greenlet kept its HTTP/2
/// stream until the server ended it, and with the server's <c>MaxStreamsPerConnection</c> used up every later call
/// failed with DeadlineExceeded. The <see cref="HttpClient"/> points stay: their token also covers the body
/// <see cref="HttpClient"/> reads, and theirs is the task other greenlets wait for.</para>
/// </remarks>
internal static class CooperativeHttpClient
{
    internal static readonly OriginalSlot<Func<HttpClient, HttpRequestMessage, HttpCompletionOption, CancellationToken, HttpResponseMessage>> SendSlot =
        new(static (client, request, option, token) => client.Send(request, option, token));

    internal static readonly OriginalSlot<Func<HttpClient, HttpRequestMessage, HttpCompletionOption, CancellationToken, Task<HttpResponseMessage>>> SendAsyncSlot =
        new(static (client, request, option, token) => client.SendAsync(request, option, token));

    internal delegate Task<T> CoreFn<T>(HttpClient client, HttpRequestMessage request, CancellationToken token);

    internal static readonly OriginalSlot<CoreFn<string>> GetStringSlot = new(static (_, _, _) => throw Unbound("GetStringAsyncCore"));
    internal static readonly OriginalSlot<CoreFn<byte[]>> GetByteArraySlot = new(static (_, _, _) => throw Unbound("GetByteArrayAsyncCore"));
    internal static readonly OriginalSlot<CoreFn<Stream>> GetStreamSlot = new(static (_, _, _) => throw Unbound("GetStreamAsyncCore"));

    // The cores are private: their replacements run only once a detour bound their originals.
    private static InvalidOperationException Unbound(string core) => new($"Internal error: HttpClient.{core} was called through its replacement without its original.");

    internal static readonly OriginalSlot<Func<SocketsHttpHandler, HttpRequestMessage, CancellationToken, HttpResponseMessage>> HandlerSendSlot =
        new(static (handler, request, token) => new HttpMessageInvoker(handler, disposeHandler: false).Send(request, token));

    internal static readonly OriginalSlot<Func<SocketsHttpHandler, HttpRequestMessage, CancellationToken, Task<HttpResponseMessage>>> HandlerSendAsyncSlot =
        new(static (handler, request, token) => new HttpMessageInvoker(handler, disposeHandler: false).SendAsync(request, token));

    // The request an HttpClient replacement is passing on with a linked token, while its original runs on this thread:
    // HttpClient reaches the handler before its first await, and a second link there would be tied to the handler's
    // task, which nobody else waits for, so the starter's kill would cancel a request other greenlets share.
    [ThreadStatic] private static HttpRequestMessage? t_linkedRequest;

    /// <summary>Marks <see cref="t_linkedRequest"/> while an HttpClient replacement's original runs.</summary>
    private readonly struct PassingLinked : IDisposable
    {
        private readonly HttpRequestMessage? _outer;

        public PassingLinked(HttpRequestMessage request)
        {
            _outer = t_linkedRequest;
            t_linkedRequest = request;
        }

        public void Dispose() => t_linkedRequest = _outer;
    }

    /// <summary>Replaces <see cref="HttpClient.SendAsync(HttpRequestMessage, HttpCompletionOption, CancellationToken)"/>.</summary>
    public static Task<HttpResponseMessage> SendAsync(HttpClient client, HttpRequestMessage request, HttpCompletionOption completionOption, CancellationToken cancellationToken)
    {
        if (!Cooperative.LinkOnStackful(cancellationToken, out var token, out var linked))
            return SendAsyncSlot.Call(client, request, completionOption, cancellationToken);
        using (new PassingLinked(request))
            return Cooperative.DisposeAfter(SendAsyncSlot.Call(client, request, completionOption, token), linked);
    }

    /// <summary>Replaces <c>SocketsHttpHandler.SendAsync(HttpRequestMessage, CancellationToken)</c>, which every asynchronous
    /// request of the handler goes through, whatever sends it: an <see cref="HttpMessageInvoker"/> (gRPC's channel, YARP),
    /// a <see cref="DelegatingHandler"/> chain or an <see cref="HttpClient"/>.</summary>
    public static Task<HttpResponseMessage> HandlerSendAsync(SocketsHttpHandler handler, HttpRequestMessage request, CancellationToken cancellationToken) =>
        !ReferenceEquals(request, t_linkedRequest) && Cooperative.LinkOnStackful(cancellationToken, out var token, out var linked)
            ? Cooperative.DisposeAfter(HandlerSendAsyncSlot.Call(handler, request, token), linked)
            : HandlerSendAsyncSlot.Call(handler, request, cancellationToken);

    /// <summary>Replaces <c>SocketsHttpHandler.Send(HttpRequestMessage, CancellationToken)</c>, the synchronous counterpart.</summary>
    public static HttpResponseMessage HandlerSend(SocketsHttpHandler handler, HttpRequestMessage request, CancellationToken cancellationToken)
    {
        if (ReferenceEquals(request, t_linkedRequest) || Cooperative.ParkingHub() is null)
            return HandlerSendSlot.Call(handler, request, cancellationToken);
        return Cooperative.WithKillToken((handler, request), cancellationToken,
            static (s, token) => HandlerSendSlot.Call(s.handler, s.request, token));
    }

    /// <summary>Replaces the private <c>HttpClient.GetStringAsyncCore(HttpRequestMessage, CancellationToken)</c>.</summary>
    public static Task<string> GetStringAsyncCore(HttpClient client, HttpRequestMessage request, CancellationToken cancellationToken) =>
        Linked(GetStringSlot, client, request, cancellationToken);

    /// <summary>Replaces the private <c>HttpClient.GetByteArrayAsyncCore(HttpRequestMessage, CancellationToken)</c>.</summary>
    public static Task<byte[]> GetByteArrayAsyncCore(HttpClient client, HttpRequestMessage request, CancellationToken cancellationToken) =>
        Linked(GetByteArraySlot, client, request, cancellationToken);

    /// <summary>Replaces the private <c>HttpClient.GetStreamAsyncCore(HttpRequestMessage, CancellationToken)</c>.</summary>
    public static Task<Stream> GetStreamAsyncCore(HttpClient client, HttpRequestMessage request, CancellationToken cancellationToken) =>
        Linked(GetStreamSlot, client, request, cancellationToken);

    private static Task<T> Linked<T>(OriginalSlot<CoreFn<T>> core, HttpClient client, HttpRequestMessage request, CancellationToken cancellationToken)
    {
        if (!Cooperative.LinkOnStackful(cancellationToken, out var token, out var linked))
            return core.Call(client, request, cancellationToken);
        using (new PassingLinked(request))
            return Cooperative.DisposeAfter(core.Call(client, request, token), linked);
    }

    /// <summary>Replaces <see cref="HttpClient.Send(HttpRequestMessage, HttpCompletionOption, CancellationToken)"/>.</summary>
    public static HttpResponseMessage Send(HttpClient client, HttpRequestMessage request, HttpCompletionOption completionOption, CancellationToken cancellationToken)
    {
        if (Cooperative.ParkingHub() is null)
            return SendSlot.Call(client, request, completionOption, cancellationToken);
        using (new PassingLinked(request))
            return Cooperative.WithKillToken((client, request, completionOption), cancellationToken,
                static (s, token) => SendSlot.Call(s.client, s.request, s.completionOption, token));
    }
}
