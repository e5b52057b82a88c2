using System.Runtime.ExceptionServices;

namespace GreenRuntime;

public static partial class Green
{
    /// <summary>
    /// Runs <paramref name="body"/> under a <see cref="GreenTimeout"/> and returns its result, or
    /// <paramref name="timeoutValue"/> if the timeout interrupted it (gevent's <c>with_timeout(..., timeout_value=...)</c>).
    /// </summary>
    /// <remarks>The body is interrupted only at a blocking point (see <see cref="GreenTimeout"/>). Only this call's own
    /// timeout is turned into <paramref name="timeoutValue"/>; an enclosing timeout still propagates. The timeout is
    /// recognised also when code between the blocking point and here wrapped its exception (a patched socket read
    /// inside <c>NetworkStream.Read</c> surfaces as an <see cref="System.IO.IOException"/>; database drivers wrap
    /// that again).</remarks>
    public static T WithTimeout<T>(TimeSpan timeout, Func<T> body, T timeoutValue)
    {
        ArgumentNullException.ThrowIfNull(body);
        var t = GreenTimeout.Start(timeout);
        try
        {
            return body();
        }
        catch (Exception e) when (GreenTimeoutException.RaisedBy(e, t) != null)
        {
            // Also when library code wrapped it (see GreenTimeoutException.RaisedBy).
            return timeoutValue;
        }
        finally
        {
            t.Cancel();
        }
    }

    /// <summary>Runs <paramref name="body"/> under a <see cref="GreenTimeout"/> and returns its result.</summary>
    /// <exception cref="GreenTimeoutException">The timeout interrupted the body (also when code in between wrapped
    /// the timeout's exception, e.g. in an <see cref="System.IO.IOException"/>: the wrapper is dropped).</exception>
    public static T WithTimeout<T>(TimeSpan timeout, Func<T> body)
    {
        ArgumentNullException.ThrowIfNull(body);
        using var t = GreenTimeout.Start(timeout);
        try
        {
            return body();
        }
        catch (Exception e) when (e is not GreenTimeoutException && GreenTimeoutException.RaisedBy(e, t) is { } own)
        {
            // Library code wrapped this timeout (see GreenTimeoutException.RaisedBy): surface it as documented.
            ExceptionDispatchInfo.Throw(own);
            throw;
        }
    }

    /// <summary>Runs <paramref name="body"/> under a <see cref="GreenTimeout"/>.</summary>
    /// <exception cref="GreenTimeoutException">The timeout interrupted the body (also when code in between wrapped
    /// the timeout's exception, e.g. in an <see cref="System.IO.IOException"/>: the wrapper is dropped).</exception>
    public static void WithTimeout(TimeSpan timeout, Action body)
    {
        ArgumentNullException.ThrowIfNull(body);
        WithTimeout(timeout, () => { body(); return true; });
    }

    /// <summary>The async form of <see cref="WithTimeout{T}(TimeSpan, Func{T}, T)"/>, for stackless greenlets.</summary>
    /// <remarks>As there, the timeout is recognised also when code in between wrapped its exception (an async client
    /// library that reports a failed connect as its own exception around the socket's).</remarks>
    public static async Task<T> WithTimeoutAsync<T>(TimeSpan timeout, Func<Task<T>> body, T timeoutValue)
    {
        ArgumentNullException.ThrowIfNull(body);
        var t = GreenTimeout.Start(timeout);
        try
        {
            return await body();
        }
        catch (Exception e) when (GreenTimeoutException.RaisedBy(e, t) != null)
        {
            return timeoutValue;
        }
        finally
        {
            t.Cancel();
        }
    }
}
