namespace GreenRuntime.AspNetCore.Requests;

/// <summary>A continuation posted to a request's synchronization context, on its way to the request's hub.</summary>
internal sealed class PostedCallback(RequestGreenlet request, SendOrPostCallback callback, object? state)
{
    public readonly SendOrPostCallback Callback = callback;
    public readonly object? State = state;

    /// <summary>Runs as a hub callback: hands the continuation to the request (<see cref="RequestGreenlet.Dispatch"/>).</summary>
    public void Dispatch() => request.Dispatch(this);
}
