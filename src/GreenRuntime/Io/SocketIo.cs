// Socket calls made directly with MSG_DONTWAIT that park on the hub's reactor when the kernel says EAGAIN.
//
// Design: a blocking receive or send on a greenlet is the non-blocking system call, retried after the
// reactor reports readiness. The socket's own blocking mode is left alone (MSG_DONTWAIT is per call), so the
// same socket keeps its ordinary behaviour off the hub. The file descriptor is read from the Socket's handle
// field rather than Socket.Handle/SafeHandle, whose getters mark the handle "exposed" and change how .NET
// closes it; a reference is held on the handle around each system call (never across a park), so a close
// from another thread cannot hand the number to a new socket in the middle of a call.
//
// What the original methods do and these do not: SocketsTelemetry byte counters. Errors are reported as the
// same SocketError codes, and the Socket's connected state is updated as the original does, through its
// internal UpdateStatusAfterSocketError (best effort: if a future runtime renames it, Connected stays stale).
//
// Each call is one Attempt (the non-blocking system call and its error mapping) in a loop: parked on the reactor
// here for a greenlet that may park, or, for a stackless greenlet's async call, waiting on the reactor without
// parking (AsyncSocketOperation.cs), so both kinds of greenlet share the same system-call code.
//
// A send is one message: once part of it went out, a kill or timeout no longer ends it. The blocking original never
// returns part-way, and legacy code frames its writes on that promise: a message cut short makes the peer read the next
// one as its rest, which breaks the connection for every user of it (an SSH session shared by greenlets lost its MAC
// check this way). From the first byte sent on, the send parks under a CancellationShield: a kill or expired timeout
// stays pending and is raised at the greenlet's next blocking point. Not as the send returns: the caller's bookkeeping
// after a send that succeeded must run (SSH.NET counts the packet sent after Send returns; skipping that broke the
// next packet's MAC just the same). A peer that never reads holds such a send as it holds the original (the socket's
// SendTimeout, closing the socket, or the peer's going away end it). Before anything went out, a kill or timeout is
// held back too (see below); even then, a send never raises one when its message fits whole in the socket's free
// buffer: a library may have committed to the message before the call, as SSH.NET encrypts its packet under a
// counter-mode cipher before it sends it, and a packet dropped at the start of a send that would have gone out at once
// broke the session's cipher for every greenlet on it (a thread's interrupt never lands in a send). A writer streaming
// to a slow reader finds its buffer full and ends at such a start (12 MB, 5.7 s streamed after a kill when nothing
// there raised it); one whose reader keeps up never waits, and streams on until its next other blocking point, as a
// thread would.
//
// A message is not always one send, and a send's bytes are not always one message. A writer behind a BufferedStream
// sends a full buffer (a header and the start of a payload), then the rest of the payload straight from the caller's
// array, and keeps a buffer whose send failed to send it later ahead of the next message (NATS.Client publishes so,
// under the connection's lock): a kill raised at the start of any of those sends, or while one waited for room with
// nothing sent, left part of a message on the connection, and the server read the next message as its rest (3 runs in 4
// of thirty greenlets requesting under 15 ms timeouts broke the connection shared by all of them). So a send holds a kill
// or timeout back, shielded while it waits, and the greenlet's next blocking point that is no send raises it; only one
// held back for a second already (HeldBackLongEnough: a writer streaming on after it, or a peer that takes nothing) is
// raised at the start of a send that must wait, or in such a wait once nothing of the send went out.
//
// On Unix .NET wraps a pipe in a Socket too (how PipeStream writes: a Process's redirected stdin, anonymous and named
// pipes' sync writes). Its sends are the same loop, with pwritev2(RWF_NOWAIT) for send(), which a pipe refuses
// (ENOTSOCK): it writes what fits and never waits. So a message to a pipe gets the same promise as one to a socket;
// through SendAsync a kill cancelled the operation and lost how much of it had gone out. A kernel that refuses
// RWF_NOWAIT for pipes (EOPNOTSUPP) is remembered, and such sends take the caller's other path.
//
// Every entry point returns false ("not handled") when it cannot do the call this way — no reactor, flags it
// does not pass through, a closed or invalid handle, an fd epoll refuses — and the caller then runs its
// other path, so the exception a user sees for a disposed socket is the original's. Receive and send take
// stream sockets only: for datagrams the original reports truncation (MessageSize) and partial sends in ways
// a bare recv/send does not, so datagram sockets only wait for readability here (WaitReadableOnce, after their
// own non-blocking call found nothing) and keep the original call.

using System.Net.Sockets;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace GreenRuntime.Io;

/// <summary>Cooperative socket calls on the hub's reactor. Hub-only (called by a greenlet that may park).</summary>
internal static unsafe class SocketIo
{
    // Socket flags that mean the same bits to recv/send on Linux: OutOfBand = MSG_OOB, Peek = MSG_PEEK, DontRoute = MSG_DONTROUTE.
    private const SocketFlags PassThroughFlags = SocketFlags.OutOfBand | SocketFlags.Peek | SocketFlags.DontRoute;

    private static bool s_handleFieldMissing = !Epoll.IsSupported;
    private static bool s_statusUpdateMissing;

    [UnsafeAccessor(UnsafeAccessorKind.Field, Name = "_handle")]
    private static extern ref SafeSocketHandle HandleField(Socket socket);

    [UnsafeAccessor(UnsafeAccessorKind.Method, Name = "UpdateStatusAfterSocketError")]
    private static extern void UpdateStatusAfterSocketError(Socket socket, SocketError error, bool disconnectOnFailure);

    /// <summary>Whether calls on <paramref name="hub"/> can go through its reactor at all.</summary>
    public static bool IsAvailable(Hub hub) => !s_handleFieldMissing && hub.Reactor != null;

    /// <summary>
    /// Receives at most <paramref name="buffer"/>.Length bytes, parking while nothing is there. Returns false
    /// when not handled. <paramref name="received"/> is 0 at end of stream or on an error.
    /// </summary>
    public static bool TryReceive(Hub hub, Socket s, Span<byte> buffer, SocketFlags flags, TimeSpan? timeout, out int received, out SocketError error)
    {
        received = 0;
        error = SocketError.Success;
        return PassesThrough(flags, send: false) && s.SocketType == SocketType.Stream
            && ReceiveParked(hub, s, buffer, flags, timeout, out received, out error);
    }

    /// <summary>
    /// <see cref="TryReceive"/> for a message socket (a datagram, a record): one recv with MSG_DONTWAIT per attempt takes
    /// one message whole, as the original's recv does, and reports no sender or truncation, as the original's
    /// <c>Receive</c> does not either. Not for an empty buffer: .NET's receive into one peeks and takes nothing, a recv of
    /// 0 bytes would take the datagram. A socket whose receive side is shut down returns 0, as a thread's receive does.
    /// </summary>
    public static bool TryReceiveMessage(Hub hub, Socket s, Span<byte> buffer, SocketFlags flags, TimeSpan? timeout, out int received, out SocketError error)
    {
        received = 0;
        error = SocketError.Success;
        return !buffer.IsEmpty && PassesThrough(flags, send: false)
            && ReceiveParked(hub, s, buffer, flags, timeout, out received, out error, readableIfShutDown: true);
    }

    /// <summary>
    /// A message socket's receive that reports the sender: one recvfrom with MSG_DONTWAIT per attempt, the sender's
    /// address written into <paramref name="address"/> as the kernel gives it (the layout of <see cref="System.Net.SocketAddress"/>
    /// on Linux) and its size into <paramref name="addressLength"/>. The socket's mode is left alone, so a thread blocked
    /// on the same socket never sees EAGAIN because of it. Not for an empty buffer (as <see cref="TryReceiveMessage"/>),
    /// nor a pipe. A socket whose receive side is shut down returns 0 with no address, as a thread's receive does.
    /// </summary>
    public static bool TryReceiveFrom(Hub hub, Socket s, Span<byte> buffer, SocketFlags flags, Span<byte> address, TimeSpan? timeout, out int received, out int addressLength, out SocketError error)
    {
        received = 0;
        addressLength = 0;
        error = SocketError.Success;
        if (buffer.IsEmpty || !PassesThrough(flags, send: false) || !TryGetHandle(hub, s, out var reactor, out var handle, out int fd) || !IsSocket(handle))
            return false;
        hub.RaiseUnraised(); // giving way comes after the first attempt (see ReceiveParked)
        long deadline = Deadline(hub, timeout);
        bool waited = false;
        while (true)
        {
            if (!TryCallFrom(handle, fd, buffer, (int)flags, address, out nint n, out int length, out int errno))
                return ClosedWhileWaiting(s, waited, out error);
            if (n >= 0)
            {
                (received, addressLength) = ((int)n, length);
                if (!waited) hub.GiveWay();
                return true;
            }
            if (errno != Epoll.EAGAIN)
            {
                error = Fail(s, errno);
                return true;
            }
            if (IsReceiveShutDown(handle, fd)) return true;
            switch (reactor.Wait(handle, fd, write: false, Remaining(hub, deadline)))
            {
                case null: return ClosedWhileWaiting(s, waited, out error);
                case Readiness.TimedOut: error = SocketError.TimedOut; return true;
                case Readiness.Closed: error = ClosedUnderCall(s); return true;
            }
            waited = true;
        }
    }

    /// <summary>One recvfrom with MSG_DONTWAIT, EINTR retried, under a reference on the handle. False when the handle was
    /// closed meanwhile.</summary>
    private static bool TryCallFrom(SafeSocketHandle handle, int fd, Span<byte> buffer, int flags, Span<byte> address, out nint result, out int addressLength, out int errno)
    {
        bool added = false;
        try
        {
            handle.DangerousAddRef(ref added);
        }
        catch (ObjectDisposedException)
        {
            (result, addressLength, errno) = (-1, 0, 0);
            return false;
        }
        try
        {
            fixed (byte* p = buffer)
            fixed (byte* a = address)
            {
                uint length;
                do
                {
                    length = (uint)address.Length;
                    result = Epoll.ReceiveFrom(fd, p, buffer.Length, flags | Epoll.MsgDontWait, a, &length);
                    errno = result < 0 ? Marshal.GetLastPInvokeError() : 0;
                }
                while (result < 0 && errno == Epoll.EINTR);
                addressLength = result < 0 ? 0 : (int)Math.Min(length, (uint)address.Length);
            }
            return true;
        }
        finally
        {
            if (added) handle.DangerousRelease();
        }
    }

    // The listener's handle in .NET's own non-blocking-descriptor state (what its first asynchronous operation puts it in
    // for good): the descriptor is O_NONBLOCK and .NET waits on its engine for a blocking call that finds nothing, so a
    // thread's Accept never reports WouldBlock, however the descriptor is used meanwhile. Internal: a runtime without
    // these members (s_acceptMembersMissing) makes the accept the old way.
    [UnsafeAccessor(UnsafeAccessorKind.Method, Name = "get_AsyncContext")]
    [return: UnsafeAccessorType("System.Net.Sockets.SocketAsyncContext, System.Net.Sockets")]
    private static extern object AsyncContext(SafeSocketHandle handle);

    [UnsafeAccessor(UnsafeAccessorKind.Method, Name = "SetHandleNonBlocking")]
    private static extern void SetHandleNonBlocking([UnsafeAccessorType("System.Net.Sockets.SocketAsyncContext, System.Net.Sockets")] object context);

    private static bool s_acceptMembersMissing;

    /// <summary>
    /// One accept on a TCP listener that never waits and never switches <see cref="Socket.Blocking"/>: accept4 on the
    /// listener's descriptor, which is first put in .NET's non-blocking-descriptor state (see above; Linux has no per-call
    /// non-blocking accept). The accepted descriptor is blocking and close-on-exec, as .NET's own accept makes it, and
    /// wrapped in a <see cref="Socket"/> that reads its family, type, endpoints and connected state from the kernel.
    /// </summary>
    /// <returns><see cref="Outcome.Done"/> with the socket; <see cref="Outcome.WouldBlock"/> when no connection is queued
    /// (or the one queued was reset before it was taken); <see cref="Outcome.NotHandled"/>, having taken nothing, when the
    /// listener is not an IP stream socket, is closed, the runtime lacks the members, or accept4 failed otherwise (the
    /// caller's other path then reports the listener's state or the error as .NET does).</returns>
    public static Outcome TryAccept(Socket listener, out Socket? accepted)
    {
        accepted = null;
        if (s_acceptMembersMissing || !Epoll.IsSupported || listener.SocketType != SocketType.Stream
            || listener.AddressFamily is not (AddressFamily.InterNetwork or AddressFamily.InterNetworkV6)
            || ReadHandle(listener) is not { IsInvalid: false, IsClosed: false } handle)
            return Outcome.NotHandled;
        bool added = false;
        try
        {
            handle.DangerousAddRef(ref added);
            SetHandleNonBlocking(AsyncContext(handle));
            int fd;
            int errno;
            do
            {
                fd = Epoll.Accept((int)handle.DangerousGetHandle(), null, null, Epoll.CloseOnExec);
                errno = fd < 0 ? Marshal.GetLastPInvokeError() : 0;
            }
            while (fd < 0 && errno == Epoll.EINTR);
            if (fd < 0) return errno is Epoll.EAGAIN or Errno.ECONNABORTED ? Outcome.WouldBlock : Outcome.NotHandled;
            var owned = new SafeSocketHandle(fd, ownsHandle: true);
            try
            {
                accepted = new Socket(owned);
            }
            catch
            {
                owned.Dispose();
                throw;
            }
            return Outcome.Done;
        }
        catch (ObjectDisposedException)
        {
            return Outcome.NotHandled;
        }
        catch (Exception e) when (e is MissingMethodException or MissingMemberException or TypeLoadException)
        {
            s_acceptMembersMissing = true;
            return Outcome.NotHandled;
        }
        finally
        {
            if (added) handle.DangerousRelease();
        }
    }

    /// <summary>The receive loop: the non-blocking recv, parked on the reactor between EAGAINs.</summary>
    /// <remarks>A kill or timeout not raised yet is raised before the first attempt (a read is a cancellation point), but
    /// the way the blocking monitor asks for is given only after it, once the data is taken: code that polls a socket
    /// and then reads what the poll saw (a connection pool's liveness check: <c>Poll(0, SelectRead)</c>, then a peek)
    /// reads within microseconds on a thread, and giving way in between let the library's own reader thread take the
    /// data first, so the peek waited for data that never came (ARSoft.Tools.Net's TCP client: every other query waited
    /// 5 s for the connection's idle close, in 3 of 12 runs).</remarks>
    private static bool ReceiveParked(Hub hub, Socket s, Span<byte> buffer, SocketFlags flags, TimeSpan? timeout, out int received, out SocketError error, bool readableIfShutDown = false)
    {
        received = 0;
        error = SocketError.Success;
        if (!TryGetHandle(hub, s, out var reactor, out var handle, out int fd))
            return false;
        hub.RaiseUnraised();
        long deadline = Deadline(hub, timeout);
        bool waited = false;
        while (true)
        {
            switch (Attempt(s, handle, fd, send: false, buffer, flags, out received, out error))
            {
                case Outcome.NotHandled: return ClosedWhileWaiting(s, waited, out error);
                case Outcome.Done:
                    if (!waited) hub.GiveWay(); // found at once: the others' turn comes now, if the monitor asked
                    return true;
            }
            if (readableIfShutDown && IsReceiveShutDown(handle, fd))
                return true; // a receive returns at once (see IsReceiveShutDown), though the non-blocking peek says EAGAIN
            switch (reactor.Wait(handle, fd, write: false, Remaining(hub, deadline)))
            {
                case null: return ClosedWhileWaiting(s, waited, out error);
                case Readiness.TimedOut: error = SocketError.TimedOut; return true;
                case Readiness.Closed: error = ClosedUnderCall(s); return true;
            }
            waited = true;
        }
    }

    /// <summary>
    /// For a loop whose handle turned out closed (or no longer watched): before it waited, not handled, so that the caller's
    /// original reports the socket's state as it does for a call made on a closed socket; once it waited, the socket was
    /// closed under the call, as a thread blocked in the system call sees it (<see cref="ClosedUnderCall"/>). A socket
    /// closed between the wake that said "readable" and the next attempt is not reported by the reactor, and the original
    /// then threw ObjectDisposedException where a thread's receive ends with ConnectionAborted (HttpClient's cancellation
    /// closes the connection's socket from the token's callback: 2–3 in 90 cancelled requests).
    /// </summary>
    private static bool ClosedWhileWaiting(Socket s, bool waited, out SocketError error)
    {
        error = waited ? ClosedUnderCall(s) : SocketError.Success;
        return waited;
    }

    /// <summary>
    /// Sends all of <paramref name="data"/>, parking while the kernel's buffer is full. Returns false when not
    /// handled before anything was sent. <paramref name="sent"/> is what went out before an error or timeout. A kill
    /// or timeout of the greenlet ends the send only while nothing of it went out (see the header).
    /// </summary>
    public static bool TrySend(Hub hub, Socket s, ReadOnlySpan<byte> data, SocketFlags flags, TimeSpan? timeout, out int sent, out SocketError error)
    {
        sent = 0;
        error = SocketError.Success;
        if (!PassesThrough(flags, send: true) || !IsByteStream(s) || !TryGetHandle(hub, s, out var reactor, out var handle, out int fd))
            return false;
        var g = hub.CurrentGreenlet;
        if (HeldBackLongEnough(g) && !FitsWhole(handle, fd, data.Length))
            hub.YieldPoint(); // would wait for room with nothing of it sent: raised, cutting nothing of this send (see the header)
        else
            hub.GiveWay();
        long deadline = Deadline(hub, timeout);
        bool waited = false;
        while (sent < data.Length)
        {
            var rest = MemoryMarshal.CreateSpan(ref MemoryMarshal.GetReference(data[sent..]), data.Length - sent);
            switch (Attempt(s, handle, fd, send: true, rest, flags, out int n, out error))
            {
                case Outcome.NotHandled when sent == 0: return ClosedWhileWaiting(s, waited, out error);
                case Outcome.NotHandled: error = ClosedUnderCall(s); return true; // closed under us halfway
                case Outcome.Done when error != SocketError.Success: return true;
                case Outcome.Done: sent += n; continue;
            }
            // Shielded (see the header); with nothing of it sent, woken every second to see whether a kill or timeout has
            // been held back long enough to end it.
            Readiness? readiness;
            var left = Remaining(hub, deadline);
            bool slice = sent == 0 && (left is null || left > s_holdBack);
            using (new CancellationShield(g))
                readiness = reactor.Wait(handle, fd, write: true, slice ? s_holdBack : left);
            switch (readiness)
            {
                case null when sent == 0: return ClosedWhileWaiting(s, waited, out error);
                case null: error = SocketError.SocketError; return true;
                case Readiness.TimedOut when slice:
                    if (HeldBackLongEnough(g)) hub.YieldPoint();
                    break;
                case Readiness.TimedOut: error = SocketError.TimedOut; return true;
                case Readiness.Closed: error = ClosedUnderCall(s); return true;
            }
            waited = true;
        }
        return true;
    }

    /// <summary>How long sends hold back a kill or timeout (see the header).</summary>
    private static readonly TimeSpan s_holdBack = TimeSpan.FromSeconds(1);

    /// <summary>Whether the kill or timeout pending for <paramref name="g"/>, not raised yet, has been held back by its sends
    /// for <see cref="s_holdBack"/> or more (its time starts when a send first sees it).</summary>
    private static bool HeldBackLongEnough(Greenlet g)
    {
        if (g.ShieldDepth != 0 || !g.UnraisedCancellation || (g.PendingException ?? g.StickyException()) is not { } pending)
            return false;
        return System.Diagnostics.Stopwatch.GetElapsedTime(g.SendsHeldBackSince(pending)) >= s_holdBack;
    }

    /// <summary>Whether a stream socket's send buffer has room for <paramref name="length"/> more bytes now (its size less
    /// what is queued), so that a send of them goes out whole without waiting. False when the kernel does not say (a pipe).
    /// The kernel's own accounting differs a little, so a message that is said to fit may still wait for part of its
    /// room: it is then sent whole as any other, shielded.</summary>
    private static bool FitsWhole(SafeHandle handle, int fd, int length)
    {
        int queued, size;
        uint sizeLength = sizeof(int);
        bool added = false;
        try
        {
            handle.DangerousAddRef(ref added);
            if (Epoll.IoctlInt(fd, Epoll.SiocOutQ, &queued) != 0) return false;
            if (Epoll.GetSockOpt(fd, Epoll.SolSocket, Epoll.SoSndBuf, &size, &sizeLength) != 0) return false;
        }
        finally
        {
            if (added) handle.DangerousRelease();
        }
        // Linux reports twice the size set, the half it keeps for its own overhead included: the data's share is the half.
        return (long)size / 2 - queued >= length;
    }

    /// <summary>What a thread blocked in a receive or send on <paramref name="s"/> sees when another thread closes the socket:
    /// .NET then unblocks the system call by disconnecting a stream socket (ConnectionAborted) and shutting down any
    /// other (Interrupted), and so the greenlet parked in its place reports the same.</summary>
    internal static SocketError ClosedUnderCall(Socket s) =>
        s.SocketType is SocketType.Stream or SocketType.Unknown ? SocketError.ConnectionAborted : SocketError.Interrupted;

    /// <summary>Ends at once the waits of greenlets parked on <paramref name="s"/>, which has just been closed (see
    /// <see cref="Reactor.EndWaitsOnClosed"/>). Safe from any thread.</summary>
    public static void NotifyClosed(Socket s)
    {
        if (ReadHandle(s) is { } handle) Reactor.EndWaitsOnClosed(handle);
    }

    /// <summary>The socket's handle, read without marking it exposed (unlike <see cref="Socket.SafeHandle"/>); null when
    /// there is none, or on a runtime whose Socket is laid out differently (noted once: the callers' other path).</summary>
    private static SafeSocketHandle? ReadHandle(Socket s)
    {
        if (s_handleFieldMissing) return null;
        try
        {
            return HandleField(s);
        }
        catch (MissingFieldException)
        {
            s_handleFieldMissing = true;
            return null;
        }
    }

    /// <summary>Whether sends on <paramref name="s"/> may go through <see cref="TrySend"/>: a stream socket, or a pipe
    /// (whose Socket's type is Unknown) while the kernel takes RWF_NOWAIT for pipes.</summary>
    private static bool IsByteStream(Socket s) => s.SocketType switch
    {
        SocketType.Stream => true,
        SocketType.Unknown => !s_pipeWritesRefused && !IsSocket(s),
        _ => false,
    };

    private static bool s_pipeWritesRefused;

    /// <summary>
    /// Parks until a receive on <paramref name="s"/> would not block (data, end of stream or an error is
    /// there). Returns false when not handled.
    /// </summary>
    public static bool TryWaitReadable(Hub hub, Socket s, TimeSpan? timeout, out SocketError error)
    {
        // A 1-byte peek consumes no data (for any socket type); it does consume a pending error, reported here. On a
        // Socket that wraps a pipe the peek is a poll() instead (TryCall).
        Span<byte> probe = stackalloc byte[1];
        return ReceiveParked(hub, s, probe, SocketFlags.Peek, timeout, out _, out error, readableIfShutDown: s.SocketType != SocketType.Stream);
    }

    /// <summary>
    /// Parks once until <paramref name="s"/> may be readable (or reports an error, or is closed): for a caller that has
    /// just made its own non-blocking receive and found nothing. Null when not handled (the caller waits another way).
    /// </summary>
    public static Readiness? WaitReadableOnce(Hub hub, Socket s, TimeSpan? timeout)
    {
        if (!TryGetHandle(hub, s, out var reactor, out var handle, out int fd)) return null;
        return reactor.Wait(handle, fd, write: false, timeout);
    }

    /// <summary>
    /// Whether the receive side of <paramref name="s"/> is shut down (poll() reports POLLRDHUP). On a datagram socket a
    /// blocking receive then returns 0 at once (the kernel stops waiting), while a non-blocking one, and so the peek, still
    /// fails with EAGAIN: parked on that, a greenlet slept through the <c>Shutdown</c> that wakes a thread. False where it
    /// cannot tell (no poll() binding, a closed handle).
    /// </summary>
    public static bool IsReceiveShutDown(Socket s)
    {
        if (!Epoll.IsSupported) return false;
        return ReadHandle(s) is { IsInvalid: false, IsClosed: false } handle && IsReceiveShutDown(handle, (int)handle.DangerousGetHandle());
    }

    /// <summary>
    /// Clears O_NONBLOCK on the file descriptor of <paramref name="s"/> until the scope ends, behind .NET's back: for the
    /// one receive on a socket whose receive side is shut down, which then returns at once, as a thread's on a blocking
    /// descriptor does (once .NET made the descriptor non-blocking it emulates a blocking receive on its own engine, which
    /// never returns then). A scope that did nothing when the descriptor cannot be read.
    /// </summary>
    public static BlockingDescriptor MakeDescriptorBlocking(Socket s)
    {
        if (!Epoll.IsSupported || ReadHandle(s) is not { IsInvalid: false, IsClosed: false } handle) return default;
        bool added = false;
        try
        {
            handle.DangerousAddRef(ref added);
        }
        catch (ObjectDisposedException)
        {
            return default;
        }
        int fd = (int)handle.DangerousGetHandle();
        int flags = Epoll.Fcntl(fd, Epoll.FGetFl, 0);
        if (flags < 0 || (flags & Epoll.NonBlock) == 0 || Epoll.Fcntl(fd, Epoll.FSetFl, flags & ~Epoll.NonBlock) < 0)
        {
            handle.DangerousRelease();
            return default;
        }
        return new BlockingDescriptor(handle, fd, flags);
    }

    /// <summary>The scope of <see cref="MakeDescriptorBlocking"/>: puts the descriptor's flags back.</summary>
    public readonly struct BlockingDescriptor(SafeSocketHandle? handle, int fd, int flags) : IDisposable
    {
        public void Dispose()
        {
            if (handle is null) return;
            Epoll.Fcntl(fd, Epoll.FSetFl, flags);
            handle.DangerousRelease();
        }
    }

    private static bool IsReceiveShutDown(SafeSocketHandle handle, int fd)
    {
        bool added = false;
        try
        {
            handle.DangerousAddRef(ref added);
            var entry = new Epoll.PollFd { Fd = fd, Events = Epoll.PollIn | Epoll.PollRdHup };
            int n;
            do n = Epoll.Poll(&entry, 1, 0);
            while (n < 0 && Marshal.GetLastPInvokeError() == Epoll.EINTR);
            return n > 0 && (entry.ReturnedEvents & Epoll.PollRdHup) != 0;
        }
        catch (ObjectDisposedException)
        {
            return false;
        }
        finally
        {
            if (added) handle.DangerousRelease();
        }
    }

    /// <summary>Whether <paramref name="s"/> stands for a real socket. On Unix .NET also wraps a pipe in a Socket (how
    /// <c>PipeStream</c> reads and writes, and so a Process's redirected streams): its handle says it is no socket, and
    /// .NET then reads and writes it with read()/write(), since recv/send fail there with ENOTSOCK.</summary>
    public static bool IsSocket(Socket s)
    {
        if (s_isSocketMissing || s_handleFieldMissing) return true;
        try
        {
            return HandleField(s) is not { } handle || IsSocket(handle);
        }
        catch (MissingFieldException)
        {
            return true; // TryGetHandle notes the missing field for its callers
        }
    }

    private static bool IsSocket(SafeSocketHandle handle)
    {
        if (s_isSocketMissing) return true;
        try
        {
            return IsSocketHandle(handle);
        }
        catch (MissingMethodException)
        {
            s_isSocketMissing = true; // a runtime without the flag (Windows): every Socket is a socket
            return true;
        }
    }

    private static bool s_isSocketMissing;

    [UnsafeAccessor(UnsafeAccessorKind.Method, Name = "get_IsSocket")]
    private static extern bool IsSocketHandle(SafeSocketHandle handle);

    /// <summary>
    /// Parks once until <paramref name="s"/> reports writability (or an error, or its closing): for a
    /// non-blocking connect the caller has just started. Null when not handled (the connect is then still
    /// in progress; the caller must wait another way).
    /// </summary>
    public static Readiness? WaitWritableOnce(Hub hub, Socket s, TimeSpan? timeout)
    {
        if (!TryGetHandle(hub, s, out var reactor, out var handle, out int fd)) return null;
        return reactor.Wait(handle, fd, write: true, timeout);
    }

    /// <summary>
    /// Parks until <paramref name="ready"/> says yes, asking it each time the reactor reports that one of
    /// <paramref name="sockets"/> may be ready for its direction (what Socket.Poll and Socket.Select wait for; the caller
    /// has just asked once and got no). Returns its last answer: false when the timeout passed first. Null, before any
    /// wait, when the reactor cannot watch one of the sockets: the caller must wait another way.
    /// </summary>
    public static bool? WaitUntilReady(Hub hub, ReadOnlySpan<(Socket Socket, bool Write)> sockets, TimeSpan? timeout, Func<bool> ready)
    {
        Reactor? reactor = null;
        var targets = new (System.Runtime.InteropServices.SafeHandle Handle, int Fd, bool Write)[sockets.Length];
        for (int i = 0; i < sockets.Length; i++)
        {
            if (!TryGetHandle(hub, sockets[i].Socket, out var r, out var handle, out int fd)) return null;
            reactor = r;
            targets[i] = (handle, fd, sockets[i].Write);
        }
        if (reactor is null) return null;
        long deadline = Deadline(hub, timeout);
        bool waited = false;
        while (true)
        {
            var readiness = reactor.WaitAny(targets, Remaining(hub, deadline));
            if (readiness is null)
            {
                if (!waited) return null;
                return ready(); // a socket was closed and its number reused meanwhile: the caller's check reports it
            }
            waited = true;
            if (ready()) return true;
            if (readiness != Readiness.Ready) return false; // timed out, or a socket was closed (asked again above)
        }
    }

    /// <summary>
    /// Waits without parking — for a stackless greenlet, or code that holds no carrier — until a receive on
    /// <paramref name="s"/> would not block. Null when not handled (no reactor, a closed handle).
    /// </summary>
    public static Task<SocketError>? WaitReadableAsync(Hub hub, Socket s, TimeSpan? timeout, CancellationToken cancel)
    {
        if (!TryGetHandle(hub, s, out var reactor, out var handle, out int fd)) return null;
        return reactor.WaitAsync(handle, fd, write: false, timeout, cancel);
    }

    /// <summary>One receive that never waits: the bytes received (0 at end of stream), or -1 when nothing is there
    /// yet. Null when not handled.</summary>
    public static int? TryReceiveNow(Hub hub, Socket s, Span<byte> buffer, out SocketError error)
    {
        error = SocketError.Success;
        if (s.SocketType != SocketType.Stream || !TryGetHandle(hub, s, out _, out var handle, out int fd)) return null;
        return Attempt(s, handle, fd, send: false, buffer, SocketFlags.None, out int n, out error) switch
        {
            Outcome.Done => n,
            Outcome.WouldBlock => -1,
            _ => null,
        };
    }

    /// <summary>What one non-blocking system call came to.</summary>
    internal enum Outcome
    {
        /// <summary>It ran: bytes moved (0 at the end of the stream), or the error is in the out parameter.</summary>
        Done,

        /// <summary>EAGAIN: wait on the reactor and try again.</summary>
        WouldBlock,

        /// <summary>The handle was closed meanwhile: the caller's other path reports the socket's state.</summary>
        NotHandled,
    }

    /// <summary>
    /// The one attempt every reactor path (parked, stackless, single-shot) is built on: a non-blocking recv or send of
    /// <paramref name="buffer"/>, EINTR retried, an error mapped to the SocketError .NET reports (and the socket's
    /// connected state updated as the original does).
    /// </summary>
    internal static Outcome Attempt(Socket s, SafeSocketHandle handle, int fd, bool send, Span<byte> buffer, SocketFlags flags, out int transferred, out SocketError error)
    {
        transferred = 0;
        error = SocketError.Success;
        if (!TryCall(handle, fd, send, buffer, (int)flags, out nint n, out int errno)) return Outcome.NotHandled;
        if (n >= 0)
        {
            transferred = (int)n;
            return Outcome.Done;
        }
        if (errno == Epoll.EAGAIN) return Outcome.WouldBlock;
        error = Fail(s, errno);
        return Outcome.Done;
    }

    /// <summary>Whether <paramref name="flags"/> can be passed to recv (<paramref name="send"/> false) or send as they are.</summary>
    internal static bool PassesThrough(SocketFlags flags, bool send) =>
        (flags & ~PassThroughFlags) == 0 && !(send && (flags & SocketFlags.Peek) != 0);

    internal static bool TryGetHandle(Hub hub, Socket s, out Reactor reactor, out SafeSocketHandle handle, out int fd)
    {
        reactor = null!;
        handle = null!;
        fd = -1;
        if (ReadHandle(s) is not { IsInvalid: false, IsClosed: false } read) return false;
        handle = read;
        var r = hub.Reactor;
        if (r == null) return false;
        reactor = r;
        fd = (int)handle.DangerousGetHandle();
        return true;
    }

    /// <summary>One non-blocking recv or send, EINTR retried. False when the handle was closed meanwhile.</summary>
    private static bool TryCall(SafeSocketHandle handle, int fd, bool send, Span<byte> buffer, int flags, out nint result, out int errno)
    {
        bool added = false;
        try
        {
            handle.DangerousAddRef(ref added);
        }
        catch (ObjectDisposedException)
        {
            result = -1;
            errno = 0;
            return false;
        }
        try
        {
            if (!send && (flags & (int)SocketFlags.Peek) != 0 && !IsSocket(handle))
            {
                result = PollReadable(fd, out errno);
                return true;
            }
            fixed (byte* p = buffer)
            {
                if (send && !IsSocket(handle))
                    return TryWritePipe(fd, p, buffer.Length, out result, out errno);
                do
                {
                    result = send
                        ? Epoll.Send(fd, p, buffer.Length, flags | Epoll.MsgDontWait | Epoll.MsgNoSignal)
                        : Epoll.Receive(fd, p, buffer.Length, flags | Epoll.MsgDontWait);
                    errno = result < 0 ? Marshal.GetLastPInvokeError() : 0;
                }
                while (result < 0 && errno == Epoll.EINTR);
            }
            return true;
        }
        finally
        {
            if (added) handle.DangerousRelease();
        }
    }

    /// <summary>The send of a pipe: one pwritev2(RWF_NOWAIT) at the pipe's position, EINTR retried. False, with the
    /// refusal remembered, where the kernel or libc does not offer it for pipes.</summary>
    private static bool TryWritePipe(int fd, byte* buffer, int length, out nint result, out int errno)
    {
        try
        {
            do
            {
                result = Epoll.WriteNoWait(fd, buffer, length);
                errno = result < 0 ? Marshal.GetLastPInvokeError() : 0;
            }
            while (result < 0 && errno == Epoll.EINTR);
        }
        catch (EntryPointNotFoundException)
        {
            (result, errno) = (-1, Errno.ENOSYS);
        }
        if (result < 0 && errno is Errno.EOPNOTSUPP or Errno.ENOSYS)
        {
            s_pipeWritesRefused = true;
            return false;
        }
        return true;
    }

    /// <summary>The peek of a pipe (which recv cannot peek at): 0 when a read would not block (data, the writer gone, an
    /// error; poll() itself failing too: the read then reports what is wrong), or -1 with EAGAIN.</summary>
    private static nint PollReadable(int fd, out int errno)
    {
        var entry = new Epoll.PollFd { Fd = fd, Events = Epoll.PollIn };
        int n;
        do n = Epoll.Poll(&entry, 1, 0);
        while (n < 0 && Marshal.GetLastPInvokeError() == Epoll.EINTR);
        errno = n == 0 ? Epoll.EAGAIN : 0;
        return n == 0 ? -1 : 0;
    }

    private static SocketError Fail(Socket s, int errno)
    {
        var error = ToSocketError(errno);
        if (!s_statusUpdateMissing)
        {
            try
            {
                UpdateStatusAfterSocketError(s, error, true); // Connected becomes false, as after the original's failure
            }
            catch (MissingMethodException)
            {
                s_statusUpdateMissing = true;
            }
        }
        return error;
    }

    /// <summary>The SocketError .NET reports for a Linux errno of recv/send.</summary>
    internal static SocketError ToSocketError(int errno) => errno switch
    {
        Errno.EBADF => SocketError.OperationAborted, // closed under us
        Errno.ENOMEM or Errno.ENOBUFS => SocketError.NoBufferSpaceAvailable,
        Errno.EACCES => SocketError.AccessDenied,
        Errno.EINVAL => SocketError.InvalidArgument,
        Errno.EPIPE => SocketError.Shutdown,
        Errno.ENOTSOCK => SocketError.NotSocket,
        Errno.EMSGSIZE => SocketError.MessageSize,
        Errno.EOPNOTSUPP => SocketError.OperationNotSupported,
        Errno.ENETDOWN => SocketError.NetworkDown,
        Errno.ENETUNREACH => SocketError.NetworkUnreachable,
        Errno.ENETRESET => SocketError.NetworkReset,
        Errno.ECONNABORTED => SocketError.ConnectionAborted,
        Errno.ECONNRESET => SocketError.ConnectionReset,
        Errno.ENOTCONN => SocketError.NotConnected,
        Errno.ESHUTDOWN => SocketError.Shutdown,
        Errno.ETIMEDOUT => SocketError.TimedOut,
        Errno.ECONNREFUSED => SocketError.ConnectionRefused,
        Errno.EHOSTDOWN => SocketError.HostDown,
        Errno.EHOSTUNREACH => SocketError.HostUnreachable,
        _ => SocketError.SocketError,
    };

    /// <summary>The deadline of a call, on the hub's clock (<see cref="HubOptions.TimeProvider"/>, which every
    /// timeout of the runtime reads); long.MaxValue for none.</summary>
    internal static long Deadline(Hub hub, TimeSpan? timeout)
    {
        if (timeout is not { } t || t == Timeout.InfiniteTimeSpan || t < TimeSpan.Zero) return long.MaxValue;
        var time = hub.Options.TimeProvider;
        return time.GetTimestamp() + (long)(t.TotalSeconds * time.TimestampFrequency);
    }

    internal static TimeSpan? Remaining(Hub hub, long deadline)
    {
        if (deadline == long.MaxValue) return null;
        var left = hub.Options.TimeProvider.GetElapsedTime(hub.Options.TimeProvider.GetTimestamp(), deadline);
        return left < TimeSpan.Zero ? TimeSpan.Zero : left;
    }
}
