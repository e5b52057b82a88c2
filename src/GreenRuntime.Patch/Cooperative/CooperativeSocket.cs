using System.Collections;
using System.Net;
using System.Net.Sockets;
using GreenRuntime.Io;
using GreenRuntime.Scheduling;

namespace GreenRuntime.Cooperative;

/// <summary>
/// Synchronous <see cref="Socket"/> operations on a greenlet. Only blocking-mode sockets are affected; a
/// non-blocking socket, and every call off a parking hub, runs the original.
/// </summary>
/// <remarks>
/// <para>On Linux x64 the hub's epoll reactor carries the common calls (GreenRuntime's Io/SocketIo.cs):
/// Receive and Send (array, span, list) on stream sockets are the non-blocking system call, parked on the reactor while the
/// kernel says EAGAIN; Connect is .NET's own non-blocking connect waited on the reactor; the other receives
/// wait for readability there with a non-blocking 1-byte peek. What follows describes the path used elsewhere,
/// and for every call the reactor declines (flags it does not pass through, a handle it cannot watch).</para>
/// <para>Receives (array, span, list, ReceiveFrom, ReceiveMessageFrom) first wait until the socket is readable
/// with an asynchronous 1-byte <see cref="SocketFlags.Peek"/> receive, then call the original, which now
/// returns at once. The peek consumes nothing, so a kill or a <see cref="Socket.ReceiveTimeout"/> cancels it
/// without any data being lost or written into the caller's buffer after the call returned.</para>
/// <para>Sends start <see cref="Socket.SendAsync(ReadOnlyMemory{byte}, SocketFlags, CancellationToken)"/>,
/// which completes inline when the kernel buffer has room. A kill or <see cref="Socket.SendTimeout"/>
/// cancels it; what was already sent stays sent (as with the original on a timeout).</para>
/// <para>SendTo (the three funnels: array, span + EndPoint, span + SocketAddress), SendFile (the span funnel)
/// and Disconnect park on SendToAsync / SendFileAsync / DisconnectAsync; spans are copied so that a kill can
/// abandon the operation. Every case in which the original throws before doing I/O (bad arguments, not
/// connected, a file it cannot open, a disposed socket) runs the original, so the exception is its own.
/// SendTimeout applies to the whole SendTo/SendFile (SocketException TimedOut).</para>
/// <para>Accept and Connect use AcceptAsync/ConnectAsync. Poll and Select with a non-zero timeout poll the
/// original with a zero timeout, parking 1–20 ms between tries: .NET has no readiness notification for them.</para>
/// <para>The first cooperative operation puts the socket's file descriptor in non-blocking mode (as any
/// .NET async socket operation does); <see cref="Socket.Blocking"/> stays true and later synchronous calls
/// off the hub keep their blocking behaviour and timeouts.</para>
/// </remarks>
internal static class CooperativeSocket
{
    internal delegate int ArrayIo(Socket s, byte[] buffer, int offset, int size, SocketFlags flags, out SocketError error);
    internal delegate int SpanReceive(Socket s, Span<byte> buffer, SocketFlags flags, out SocketError error);
    internal delegate int SpanSend(Socket s, ReadOnlySpan<byte> buffer, SocketFlags flags, out SocketError error);
    internal delegate int ListIo(Socket s, IList<ArraySegment<byte>> buffers, SocketFlags flags, out SocketError error);
    internal delegate int ArrayReceiveFrom(Socket s, byte[] buffer, int offset, int size, SocketFlags flags, ref EndPoint remote);
    internal delegate int SpanReceiveFrom(Socket s, Span<byte> buffer, SocketFlags flags, ref EndPoint remote);
    internal delegate int SpanReceiveFromAddress(Socket s, Span<byte> buffer, SocketFlags flags, SocketAddress address);
    internal delegate int ArrayReceiveMessageFrom(Socket s, byte[] buffer, int offset, int size, ref SocketFlags flags, ref EndPoint remote, out IPPacketInformation info);
    internal delegate int SpanReceiveMessageFrom(Socket s, Span<byte> buffer, ref SocketFlags flags, ref EndPoint remote, out IPPacketInformation info);
    internal delegate void SelectFn(IList? checkRead, IList? checkWrite, IList? checkError, int microSeconds);
    internal delegate int ArraySendTo(Socket s, byte[] buffer, int offset, int size, SocketFlags flags, EndPoint remote);
    internal delegate int SpanSendTo(Socket s, ReadOnlySpan<byte> buffer, SocketFlags flags, EndPoint remote);
    internal delegate int SpanSendToAddress(Socket s, ReadOnlySpan<byte> buffer, SocketFlags flags, SocketAddress address);
    internal delegate void SendFileFn(Socket s, string? fileName, ReadOnlySpan<byte> preBuffer, ReadOnlySpan<byte> postBuffer, TransmitFileOptions flags);

    internal static readonly OriginalSlot<ArrayIo> ReceiveArray = new(static (Socket s, byte[] b, int o, int n, SocketFlags f, out SocketError e) => s.Receive(b, o, n, f, out e));
    internal static readonly OriginalSlot<SpanReceive> ReceiveSpan = new(static (Socket s, Span<byte> b, SocketFlags f, out SocketError e) => s.Receive(b, f, out e));
    internal static readonly OriginalSlot<ListIo> ReceiveList = new(static (Socket s, IList<ArraySegment<byte>> b, SocketFlags f, out SocketError e) => s.Receive(b, f, out e));
    internal static readonly OriginalSlot<ArrayIo> SendArray = new(static (Socket s, byte[] b, int o, int n, SocketFlags f, out SocketError e) => s.Send(b, o, n, f, out e));
    internal static readonly OriginalSlot<SpanSend> SendSpan = new(static (Socket s, ReadOnlySpan<byte> b, SocketFlags f, out SocketError e) => s.Send(b, f, out e));
    internal static readonly OriginalSlot<ListIo> SendList = new(static (Socket s, IList<ArraySegment<byte>> b, SocketFlags f, out SocketError e) => s.Send(b, f, out e));
    internal static readonly OriginalSlot<ArrayReceiveFrom> ReceiveFromArray = new(static (Socket s, byte[] b, int o, int n, SocketFlags f, ref EndPoint r) => s.ReceiveFrom(b, o, n, f, ref r));
    internal static readonly OriginalSlot<SpanReceiveFrom> ReceiveFromSpan = new(static (Socket s, Span<byte> b, SocketFlags f, ref EndPoint r) => s.ReceiveFrom(b, f, ref r));
    internal static readonly OriginalSlot<SpanReceiveFromAddress> ReceiveFromAddress = new(static (Socket s, Span<byte> b, SocketFlags f, SocketAddress a) => s.ReceiveFrom(b, f, a));
    internal static readonly OriginalSlot<ArrayReceiveMessageFrom> ReceiveMessageFromArray = new(static (Socket s, byte[] b, int o, int n, ref SocketFlags f, ref EndPoint r, out IPPacketInformation i) => s.ReceiveMessageFrom(b, o, n, ref f, ref r, out i));
    internal static readonly OriginalSlot<SpanReceiveMessageFrom> ReceiveMessageFromSpan = new(static (Socket s, Span<byte> b, ref SocketFlags f, ref EndPoint r, out IPPacketInformation i) => s.ReceiveMessageFrom(b, ref f, ref r, out i));
    internal static readonly OriginalSlot<Func<Socket, Socket>> AcceptSlot = new(static s => s.Accept());
    internal static readonly OriginalSlot<Action<Socket, EndPoint>> ConnectSlot = new(static (s, ep) => s.Connect(ep));
    internal static readonly OriginalSlot<Func<Socket, int, SelectMode, bool>> PollSlot = new(static (s, us, m) => s.Poll(us, m));
    internal static readonly OriginalSlot<SelectFn> SelectSlot = new(static (r, w, e, us) => Socket.Select(r, w, e, us));
    internal static readonly OriginalSlot<ArraySendTo> SendToArray = new(static (s, b, o, n, f, r) => s.SendTo(b, o, n, f, r));
    internal static readonly OriginalSlot<SpanSendTo> SendToSpan = new(static (s, b, f, r) => s.SendTo(b, f, r));
    internal static readonly OriginalSlot<SpanSendToAddress> SendToAddress = new(static (s, b, f, a) => s.SendTo(b, f, a));
    internal static readonly OriginalSlot<Action<Socket, bool>> DisconnectSlot = new(static (s, reuse) => s.Disconnect(reuse));
    internal static readonly OriginalSlot<SendFileFn> SendFileSlot = new(static (s, n, pre, post, f) => s.SendFile(n, pre, post, f));

    // The peek target. Concurrent peeks may write it at the same time; nobody ever reads it.
    private static readonly byte[] s_peekByte = new byte[1];

    // ---- receives: wait until readable, then the original ----

    public static int Receive(Socket s, byte[] buffer, int offset, int size, SocketFlags socketFlags, out SocketError errorCode)
    {
        var hub = Cooperative.ParkingHub();
        if (hub is null || !MayPark(s) || buffer is null || size == 0)
            return ReceiveArray.Call(s, buffer!, offset, size, socketFlags, out errorCode);
        if ((uint)offset <= (uint)buffer.Length && (uint)size <= (uint)(buffer.Length - offset)
            && SocketIo.TryReceive(hub, s, buffer.AsSpan(offset, size), socketFlags, Cooperative.SocketTimeout(s.ReceiveTimeout), out int received, out errorCode))
            return received;
        var ready = WaitReadable(hub, s);
        if (ready != SocketError.Success)
        {
            errorCode = ready;
            return 0;
        }
        return ReceiveArray.Call(s, buffer, offset, size, socketFlags, out errorCode);
    }

    public static int Receive(Socket s, Span<byte> buffer, SocketFlags socketFlags, out SocketError errorCode)
    {
        var hub = Cooperative.ParkingHub();
        if (hub is null || !MayPark(s) || buffer.IsEmpty)
            return ReceiveSpan.Call(s, buffer, socketFlags, out errorCode);
        if (SocketIo.TryReceive(hub, s, buffer, socketFlags, Cooperative.SocketTimeout(s.ReceiveTimeout), out int received, out errorCode))
            return received;
        var ready = WaitReadable(hub, s);
        if (ready != SocketError.Success)
        {
            errorCode = ready;
            return 0;
        }
        return ReceiveSpan.Call(s, buffer, socketFlags, out errorCode);
    }

    public static int Receive(Socket s, IList<ArraySegment<byte>> buffers, SocketFlags socketFlags, out SocketError errorCode)
    {
        var hub = Cooperative.ParkingHub();
        if (hub is null || !MayPark(s) || buffers is null || buffers.Count == 0)
            return ReceiveList.Call(s, buffers!, socketFlags, out errorCode);
        var ready = WaitReadable(hub, s);
        if (ready != SocketError.Success)
        {
            errorCode = ready;
            return 0;
        }
        return ReceiveList.Call(s, buffers, socketFlags, out errorCode);
    }

    public static int ReceiveFrom(Socket s, byte[] buffer, int offset, int size, SocketFlags socketFlags, ref EndPoint remoteEP)
    {
        var hub = Cooperative.ParkingHub();
        if (hub is not null && MayPark(s) && buffer is not null && remoteEP is not null)
            ThrowUnlessReadable(hub, s);
        return ReceiveFromArray.Call(s, buffer!, offset, size, socketFlags, ref remoteEP!);
    }

    public static int ReceiveFrom(Socket s, Span<byte> buffer, SocketFlags socketFlags, ref EndPoint remoteEP)
    {
        var hub = Cooperative.ParkingHub();
        if (hub is not null && MayPark(s) && remoteEP is not null)
            ThrowUnlessReadable(hub, s);
        return ReceiveFromSpan.Call(s, buffer, socketFlags, ref remoteEP!);
    }

    public static int ReceiveFrom(Socket s, Span<byte> buffer, SocketFlags socketFlags, SocketAddress receivedAddress)
    {
        var hub = Cooperative.ParkingHub();
        if (hub is not null && MayPark(s) && receivedAddress is not null)
            ThrowUnlessReadable(hub, s);
        return ReceiveFromAddress.Call(s, buffer, socketFlags, receivedAddress!);
    }

    public static int ReceiveMessageFrom(Socket s, byte[] buffer, int offset, int size, ref SocketFlags socketFlags, ref EndPoint remoteEP, out IPPacketInformation ipPacketInformation)
    {
        var hub = Cooperative.ParkingHub();
        if (hub is not null && MayPark(s) && buffer is not null && remoteEP is not null)
            ThrowUnlessReadable(hub, s);
        return ReceiveMessageFromArray.Call(s, buffer!, offset, size, ref socketFlags, ref remoteEP!, out ipPacketInformation);
    }

    public static int ReceiveMessageFrom(Socket s, Span<byte> buffer, ref SocketFlags socketFlags, ref EndPoint remoteEP, out IPPacketInformation ipPacketInformation)
    {
        var hub = Cooperative.ParkingHub();
        if (hub is not null && MayPark(s) && remoteEP is not null)
            ThrowUnlessReadable(hub, s);
        return ReceiveMessageFromSpan.Call(s, buffer, ref socketFlags, ref remoteEP!, out ipPacketInformation);
    }

    // ---- sends: SendAsync, parked ----

    public static int Send(Socket s, byte[] buffer, int offset, int size, SocketFlags socketFlags, out SocketError errorCode)
    {
        var hub = Cooperative.ParkingHub();
        if (hub is null || !MayPark(s) || buffer is null || size == 0 || (uint)offset > (uint)buffer.Length || (uint)size > (uint)(buffer.Length - offset))
            return SendArray.Call(s, buffer!, offset, size, socketFlags, out errorCode);
        if (SocketIo.TrySend(hub, s, buffer.AsSpan(offset, size), socketFlags, Cooperative.SocketTimeout(s.SendTimeout), out int sent, out errorCode))
            return sent;
        return SendParked(hub, s, buffer.AsMemory(offset, size), socketFlags, out errorCode);
    }

    public static int Send(Socket s, ReadOnlySpan<byte> buffer, SocketFlags socketFlags, out SocketError errorCode)
    {
        var hub = Cooperative.ParkingHub();
        if (hub is null || !MayPark(s) || buffer.IsEmpty)
            return SendSpan.Call(s, buffer, socketFlags, out errorCode);
        if (SocketIo.TrySend(hub, s, buffer, socketFlags, Cooperative.SocketTimeout(s.SendTimeout), out int sent, out errorCode))
            return sent;
        // A span cannot outlive this frame: send a pooled copy (drained before it is returned to the pool).
        var copy = IoBuffers.Pool.Rent(buffer.Length);
        buffer.CopyTo(copy);
        try
        {
            return SendParked(hub, s, copy.AsMemory(0, buffer.Length), socketFlags, out errorCode);
        }
        finally
        {
            IoBuffers.Pool.Return(copy);
        }
    }

    public static int Send(Socket s, IList<ArraySegment<byte>> buffers, SocketFlags socketFlags, out SocketError errorCode)
    {
        var hub = Cooperative.ParkingHub();
        if (hub is null || !MayPark(s) || buffers is null || buffers.Count == 0)
            return SendList.Call(s, buffers!, socketFlags, out errorCode);
        // SendAsync(IList) takes no CancellationToken, so a kill could not stop it: gather into one buffer.
        int total = 0;
        foreach (var segment in buffers)
        {
            if (segment.Array is null) return SendList.Call(s, buffers, socketFlags, out errorCode); // the original's ArgumentException
            total += segment.Count;
        }
        var copy = IoBuffers.Pool.Rent(Math.Max(1, total));
        int at = 0;
        foreach (var segment in buffers)
        {
            segment.AsSpan().CopyTo(copy.AsSpan(at));
            at += segment.Count;
        }
        try
        {
            if (total == 0) return SendList.Call(s, buffers, socketFlags, out errorCode);
            if (SocketIo.TrySend(hub, s, copy.AsSpan(0, total), socketFlags, Cooperative.SocketTimeout(s.SendTimeout), out int sent, out errorCode))
                return sent;
            return SendParked(hub, s, copy.AsMemory(0, total), socketFlags, out errorCode);
        }
        finally
        {
            IoBuffers.Pool.Return(copy);
        }
    }

    // ---- datagram sends: SendToAsync, parked ----

    public static int SendTo(Socket s, byte[] buffer, int offset, int size, SocketFlags socketFlags, EndPoint remoteEP)
    {
        var hub = Cooperative.ParkingHub();
        if (hub is null || !MayPark(s) || buffer is null || remoteEP is null || (uint)offset > (uint)buffer.Length || (uint)size > (uint)(buffer.Length - offset))
            return SendToArray.Call(s, buffer!, offset, size, socketFlags, remoteEP!);
        return SendToParked(hub, s, buffer.AsMemory(offset, size), socketFlags, remoteEP, null)
            ?? SendToArray.Call(s, buffer, offset, size, socketFlags, remoteEP);
    }

    public static int SendTo(Socket s, ReadOnlySpan<byte> buffer, SocketFlags socketFlags, EndPoint remoteEP)
    {
        var hub = Cooperative.ParkingHub();
        if (hub is null || !MayPark(s) || remoteEP is null)
            return SendToSpan.Call(s, buffer, socketFlags, remoteEP!);
        return SendToCopy(hub, s, buffer, socketFlags, remoteEP, null) ?? SendToSpan.Call(s, buffer, socketFlags, remoteEP);
    }

    public static int SendTo(Socket s, ReadOnlySpan<byte> buffer, SocketFlags socketFlags, SocketAddress socketAddress)
    {
        var hub = Cooperative.ParkingHub();
        if (hub is null || !MayPark(s) || socketAddress is null)
            return SendToAddress.Call(s, buffer, socketFlags, socketAddress!);
        return SendToCopy(hub, s, buffer, socketFlags, null, socketAddress) ?? SendToAddress.Call(s, buffer, socketFlags, socketAddress);
    }

    /// <summary><see cref="SendToParked"/> of a pooled copy: a span cannot outlive this frame, the copy is drained before it goes back.</summary>
    private static int? SendToCopy(Hub hub, Socket s, ReadOnlySpan<byte> buffer, SocketFlags flags, EndPoint? remote, SocketAddress? address)
    {
        var copy = IoBuffers.Pool.Rent(Math.Max(1, buffer.Length));
        buffer.CopyTo(copy);
        try
        {
            return SendToParked(hub, s, copy.AsMemory(0, buffer.Length), flags, remote, address);
        }
        finally
        {
            IoBuffers.Pool.Return(copy);
        }
    }

    /// <summary>
    /// SendToAsync parked, with SendTimeout. Null when the async path refused the arguments before starting
    /// (the caller then runs the original, which throws its own exception).
    /// </summary>
    private static int? SendToParked(Hub hub, Socket s, ReadOnlyMemory<byte> data, SocketFlags flags, EndPoint? remote, SocketAddress? address)
    {
        using var cancel = new CancellationTokenSource();
        Task<int> send;
        try
        {
            send = (remote is not null ? s.SendToAsync(data, flags, remote, cancel.Token) : s.SendToAsync(data, flags, address!, cancel.Token)).AsTask();
        }
        catch (Exception e) when (e is ObjectDisposedException or InvalidOperationException or NotSupportedException or ArgumentException or SocketException)
        {
            return null;
        }
        if (send.IsFaulted && send.Exception!.InnerException is not SocketException) return null; // a validation failure: the original's exception
        if (!Cooperative.Park(hub, send, Cooperative.SocketTimeout(s.SendTimeout), WaitReason.Socket, cancel, drain: true))
        {
            Cooperative.CancelQuietly(cancel);
            Cooperative.WaitBlocking(send);
            if (!send.IsCompletedSuccessfully) throw new SocketException((int)SocketError.TimedOut);
        }
        return send.GetAwaiter().GetResult(); // a SocketException as the original throws it
    }

    // ---- disconnect, send file ----

    public static void Disconnect(Socket s, bool reuseSocket)
    {
        var hub = Cooperative.ParkingHub();
        if (hub is null || !MayPark(s) || !s.Connected)
        {
            DisconnectSlot.Call(s, reuseSocket);
            return;
        }
        using var cancel = new CancellationTokenSource();
        Task task;
        try
        {
            task = s.DisconnectAsync(reuseSocket, cancel.Token).AsTask();
        }
        catch (Exception e) when (e is ObjectDisposedException or InvalidOperationException or NotSupportedException or PlatformNotSupportedException)
        {
            DisconnectSlot.Call(s, reuseSocket);
            return;
        }
        if (task.IsFaulted && task.Exception!.InnerException is not SocketException)
        {
            DisconnectSlot.Call(s, reuseSocket); // e.g. PlatformNotSupportedException for reuseSocket: the original's own
            return;
        }
        Cooperative.Park(hub, task, null, WaitReason.Socket, cancel, drain: true);
        task.GetAwaiter().GetResult();
    }

    public static void SendFile(Socket s, string? fileName, ReadOnlySpan<byte> preBuffer, ReadOnlySpan<byte> postBuffer, TransmitFileOptions flags)
    {
        var hub = Cooperative.ParkingHub();
        if (hub is null || !MayPark(s) || !s.Connected || !CanOpen(fileName))
        {
            // Off the hub, and every case in which the original throws before sending (not connected, a file it
            // cannot open): the original, with its own exception.
            SendFileSlot.Call(s, fileName, preBuffer, postBuffer, flags);
            return;
        }
        // The spans cannot outlive this frame: SendFileAsync gets copies (they are ours, so a kill may abandon them).
        byte[] pre = preBuffer.ToArray(), post = postBuffer.ToArray();
        using var cancel = new CancellationTokenSource();
        Task task;
        try
        {
            task = s.SendFileAsync(fileName, pre, post, flags, cancel.Token).AsTask();
        }
        catch (Exception e) when (e is ObjectDisposedException or InvalidOperationException or NotSupportedException or ArgumentException)
        {
            SendFileSlot.Call(s, fileName, preBuffer, postBuffer, flags);
            return;
        }
        // drain: the file stays open until the operation is over, as with the original.
        if (!Cooperative.Park(hub, task, Cooperative.SocketTimeout(s.SendTimeout), WaitReason.Socket, cancel, drain: true))
        {
            Cooperative.CancelQuietly(cancel);
            Cooperative.WaitBlocking(task);
            if (!task.IsCompletedSuccessfully) throw new SocketException((int)SocketError.TimedOut);
        }
        task.GetAwaiter().GetResult();
    }

    private static bool CanOpen(string? fileName)
    {
        if (fileName is null) return true;
        try
        {
            using (Cooperative.Bypass())
                new FileStream(fileName, FileMode.Open, FileAccess.Read, FileShare.Read, 1, FileOptions.None).Dispose();
            return true;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or ArgumentException or NotSupportedException)
        {
            return false;
        }
    }

    // ---- accept, connect ----

    public static Socket Accept(Socket s)
    {
        var hub = Cooperative.ParkingHub();
        if (hub is null || !MayPark(s)) return AcceptSlot.Call(s);
        using var cancel = new CancellationTokenSource();
        Task<Socket> task;
        try
        {
            task = s.AcceptAsync(cancel.Token).AsTask();
        }
        catch (Exception e) when (e is InvalidOperationException or NotSupportedException)
        {
            return AcceptSlot.Call(s); // not listening, wrong socket type...: the original's own exception
        }
        try
        {
            Cooperative.Park(hub, task, null, WaitReason.Socket, cancel, drain: true);
        }
        catch
        {
            // Killed: a connection accepted in the race has nobody to serve it.
            if (task.IsCompletedSuccessfully) task.Result.Dispose();
            throw;
        }
        return task.GetAwaiter().GetResult();
    }

    public static void Connect(Socket s, EndPoint remoteEP)
    {
        var hub = Cooperative.ParkingHub();
        // A DnsEndPoint goes through Dns and Connect(IPAddress[]), which come back here per address.
        if (hub is null || !MayPark(s) || remoteEP is null or DnsEndPoint || s.Connected)
        {
            ConnectSlot.Call(s, remoteEP!);
            return;
        }
        if (s.SocketType == SocketType.Stream && SocketIo.IsAvailable(hub) && ConnectOnReactor(hub, s, remoteEP))
            return;
        using var cancel = new CancellationTokenSource();
        Task task;
        try
        {
            task = s.ConnectAsync(remoteEP, cancel.Token).AsTask();
        }
        catch (Exception e) when (e is InvalidOperationException or NotSupportedException or ArgumentException)
        {
            ConnectSlot.Call(s, remoteEP); // the original's own validation exception
            return;
        }
        Cooperative.Park(hub, task, null, WaitReason.Socket, cancel, drain: true);
        task.GetAwaiter().GetResult();
    }

    /// <summary>
    /// The non-blocking connect .NET itself supports (Blocking = false, Connect throws WouldBlock, the
    /// Connected getter completes the bookkeeping once the socket is writable), waiting on the reactor. Unlike
    /// ConnectAsync it leaves the socket out of .NET's own epoll thread, which would otherwise wake for every
    /// packet the socket receives afterwards. Returns false, having done nothing, if the socket cannot be
    /// switched to non-blocking mode.
    /// </summary>
    private static bool ConnectOnReactor(Hub hub, Socket s, EndPoint remoteEP)
    {
        if (!CanForgetPendingConnect(s)) return false;
        try
        {
            s.Blocking = false;
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException)
        {
            return false; // the original reports the socket's state
        }
        try
        {
            ConnectSlot.Call(s, remoteEP);
            return true; // connected at once (loopback often is), or the original's own exception
        }
        catch (SocketException e) when (e.SocketErrorCode is SocketError.WouldBlock or SocketError.InProgress)
        {
        }
        finally
        {
            s.Blocking = true;
        }
        while (true)
        {
            var readiness = SocketIo.WaitWritableOnce(hub, s, null);
            if (readiness is null or Readiness.Closed) throw new SocketException((int)SocketError.OperationAborted);
            // SO_ERROR is how a non-blocking connect reports its outcome (.NET returns it as a SocketError).
            var error = (SocketError)(int)s.GetSocketOption(SocketOptionLevel.Socket, SocketOptionName.Error)!;
            if (error != SocketError.Success)
            {
                // Otherwise the Connected getter would poll the failed socket, see it "writable" and report true.
                PendingConnect(s) = false;
                throw new SocketException((int)error);
            }
            if (s.Connected) return true; // the getter records the connection (endpoints, state)
        }
    }

    [System.Runtime.CompilerServices.UnsafeAccessor(System.Runtime.CompilerServices.UnsafeAccessorKind.Field, Name = "_nonBlockingConnectInProgress")]
    private static extern ref bool PendingConnect(Socket s);

    private static int s_pendingConnectField; // 0 unknown, 1 present, -1 missing (then connects use ConnectAsync)

    private static bool CanForgetPendingConnect(Socket s)
    {
        if (s_pendingConnectField == 0)
        {
            try
            {
                _ = PendingConnect(s);
                s_pendingConnectField = 1;
            }
            catch (MissingFieldException)
            {
                s_pendingConnectField = -1;
            }
        }
        return s_pendingConnectField > 0;
    }

    // ---- poll, select: no readiness notification exists; poll with zero timeouts ----

    public static bool Poll(Socket s, int microSeconds, SelectMode mode)
    {
        var hub = Cooperative.ParkingHub();
        if (hub is null || microSeconds == 0) return PollSlot.Call(s, microSeconds, mode);
        if (PollSlot.Call(s, 0, mode)) return true;
        return Cooperative.PollUntil(hub, () => PollSlot.Call(s, 0, mode), microSeconds < 0 ? null : TimeSpan.FromMicroseconds(microSeconds));
    }

    public static void Select(IList? checkRead, IList? checkWrite, IList? checkError, int microSeconds)
    {
        var hub = Cooperative.ParkingHub();
        if (hub is null || microSeconds == 0)
        {
            SelectSlot.Call(checkRead, checkWrite, checkError, microSeconds);
            return;
        }
        var read = Snapshot(checkRead);
        var write = Snapshot(checkWrite);
        var error = Snapshot(checkError);
        bool Ready()
        {
            Restore(checkRead, read);
            Restore(checkWrite, write);
            Restore(checkError, error);
            SelectSlot.Call(checkRead, checkWrite, checkError, 0);
            return checkRead?.Count > 0 || checkWrite?.Count > 0 || checkError?.Count > 0;
        }
        // Ready() leaves the lists filtered by the last zero-timeout select: empty on a timeout, as the original.
        Cooperative.PollUntil(hub, Ready, microSeconds < 0 ? null : TimeSpan.FromMicroseconds(microSeconds));
    }

    // ---- helpers ----

    // Not Socket.Handle: reading it marks the handle as exposed, which changes how .NET treats the socket.
    private static bool MayPark(Socket s) => s.Blocking;

    private static object[]? Snapshot(IList? list)
    {
        if (list is null) return null;
        var copy = new object[list.Count];
        list.CopyTo(copy, 0);
        return copy;
    }

    private static void Restore(IList? list, object[]? items)
    {
        if (list is null || items is null) return;
        list.Clear();
        foreach (var item in items) list.Add(item);
    }

    /// <summary>Parks until <paramref name="s"/> has data, EOF or an error, or its ReceiveTimeout elapses.</summary>
    /// <returns>Success when the original can now receive without blocking; otherwise the error to report.</returns>
    internal static SocketError WaitReadable(Hub hub, Socket s)
    {
        if (SocketIo.TryWaitReadable(hub, s, Cooperative.SocketTimeout(s.ReceiveTimeout), out var readable))
            return readable;
        using var cancel = new CancellationTokenSource();
        Task<int> peek;
        try
        {
            peek = s.ReceiveAsync(s_peekByte, SocketFlags.Peek, cancel.Token).AsTask();
        }
        catch (Exception e) when (e is ObjectDisposedException or InvalidOperationException or NotSupportedException)
        {
            return SocketError.Success; // let the original report the socket's state exactly
        }
        if (!peek.IsCompleted && !Cooperative.Park(hub, peek, Cooperative.SocketTimeout(s.ReceiveTimeout), WaitReason.Socket, cancel))
        {
            Cooperative.CancelQuietly(cancel);
            Cooperative.WaitBlocking(peek);
            if (!peek.IsCompletedSuccessfully) return SocketError.TimedOut;
        }
        if (peek.IsFaulted && peek.Exception!.InnerException is SocketException se && se.SocketErrorCode != SocketError.OperationAborted)
            return se.SocketErrorCode; // the peek consumed a pending error (e.g. a reset): report it rather than lose it
        return SocketError.Success;
    }

    private static void ThrowUnlessReadable(Hub hub, Socket s)
    {
        var ready = WaitReadable(hub, s);
        if (ready != SocketError.Success) throw new SocketException((int)ready);
    }

    private static int SendParked(Hub hub, Socket s, ReadOnlyMemory<byte> data, SocketFlags flags, out SocketError errorCode)
    {
        using var cancel = new CancellationTokenSource();
        Task<int> send;
        try
        {
            send = s.SendAsync(data, flags, cancel.Token).AsTask();
        }
        catch (Exception e) when (e is ObjectDisposedException or InvalidOperationException or NotSupportedException)
        {
            return SendArrayOrSpan(s, data, flags, out errorCode);
        }
        // drain: the operation reads the caller's memory; it must be over before the caller regains it.
        if (!Cooperative.Park(hub, send, Cooperative.SocketTimeout(s.SendTimeout), WaitReason.Socket, cancel, drain: true))
        {
            Cooperative.CancelQuietly(cancel);
            Cooperative.WaitBlocking(send);
            if (!send.IsCompletedSuccessfully)
            {
                errorCode = SocketError.TimedOut;
                return 0;
            }
        }
        if (send.IsCompletedSuccessfully)
        {
            errorCode = SocketError.Success;
            return send.Result;
        }
        var error = send.Exception?.InnerException;
        errorCode = error switch
        {
            SocketException se => se.SocketErrorCode,
            OperationCanceledException => SocketError.OperationAborted,
            ObjectDisposedException => SocketError.OperationAborted,
            _ => SocketError.SocketError,
        };
        if (error is not (SocketException or OperationCanceledException or ObjectDisposedException))
            System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(error!);
        return 0;
    }

    private static int SendArrayOrSpan(Socket s, ReadOnlyMemory<byte> data, SocketFlags flags, out SocketError errorCode) =>
        SendSpan.Call(s, data.Span, flags, out errorCode);
}
