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
/// </remarks>
internal static class CooperativeHttpClient
{
    internal static readonly OriginalSlot<Func<HttpClient, HttpRequestMessage, HttpCompletionOption, CancellationToken, HttpResponseMessage>> SendSlot =
        new(static (client, request, option, token) => client.Send(request, option, token));

    /// <summary>Replaces <see cref="HttpClient.Send(HttpRequestMessage, HttpCompletionOption, CancellationToken)"/>.</summary>
    public static HttpResponseMessage Send(HttpClient client, HttpRequestMessage request, HttpCompletionOption completionOption, CancellationToken cancellationToken)
    {
        if (Cooperative.ParkingHub() is null)
            return SendSlot.Call(client, request, completionOption, cancellationToken);
        return Cooperative.WithKillToken((client, request, completionOption), cancellationToken,
            static (s, token) => SendSlot.Call(s.client, s.request, s.completionOption, token));
    }
}
