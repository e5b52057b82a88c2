using System.Net.Sockets;
using GreenRuntime.LowLevel;

namespace GreenRuntime.Servers.Tests;

/// <summary>
/// A test helper: a <see cref="Stream"/> over a connected socket whose synchronous Read and Write park only the calling
/// greenlet (the core's <see cref="CooperativeSocket"/>), so handlers written with blocking stream code yield without
/// Patch.All(). Greenlets only. Disposing it closes the socket only when it owns it.
/// </summary>
/// <remarks>A read or write that times out is abandoned (nothing is left running on the caller's buffer) and throws <see cref="IOException"/> wrapping a
/// <see cref="TimeoutException"/>, like <see cref="NetworkStream"/>.</remarks>
internal sealed class GreenNetworkStream : Stream
{
    private readonly Socket _socket;
    private readonly bool _ownsSocket;
    private bool _disposed;

    public GreenNetworkStream(Socket socket, bool ownsSocket = false)
    {
        ArgumentNullException.ThrowIfNull(socket);
        if (!socket.Connected)
            throw new ArgumentException("The socket must be connected; accept or connect it first.", nameof(socket));
        _socket = socket;
        _ownsSocket = ownsSocket;
    }

    public Socket Socket => _socket;

    public override bool CanRead => !_disposed;
    public override bool CanWrite => !_disposed;
    public override bool CanSeek => false;
    public override bool CanTimeout => true;

    /// <summary>Milliseconds a read may wait; <see cref="Timeout.Infinite"/> (the default) waits as long as it takes.</summary>
    public override int ReadTimeout { get; set; } = Timeout.Infinite;

    /// <summary>Milliseconds a write may wait; <see cref="Timeout.Infinite"/> (the default) waits as long as it takes.</summary>
    public override int WriteTimeout { get; set; } = Timeout.Infinite;

    public override long Length => throw new NotSupportedException("A network stream has no length.");
    public override long Position
    {
        get => throw new NotSupportedException("A network stream cannot seek.");
        set => throw new NotSupportedException("A network stream cannot seek.");
    }

    public override int Read(byte[] buffer, int offset, int count)
    {
        ValidateBufferArguments(buffer, offset, count);
        return Read(buffer.AsSpan(offset, count));
    }

    public override int Read(Span<byte> buffer)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (buffer.IsEmpty) return 0;
        try
        {
            int n = CooperativeSocket.Receive(_socket, buffer, SocketFlags.None, TimeoutOf(ReadTimeout), out var error);
            return error switch
            {
                SocketError.Success => n,
                SocketError.TimedOut => throw new TimeoutException($"Nothing arrived within {ReadTimeout} ms."),
                _ => throw new SocketException((int)error),
            };
        }
        catch (Exception e) when (e is SocketException or TimeoutException)
        {
            throw AsIOException(e);
        }
    }

    public override void Write(byte[] buffer, int offset, int count)
    {
        ValidateBufferArguments(buffer, offset, count);
        ObjectDisposedException.ThrowIf(_disposed, this);
        Send(buffer.AsSpan(offset, count));
    }

    public override void Write(ReadOnlySpan<byte> buffer)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        Send(buffer);
    }

    public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
        Socket.ReceiveAsync(buffer.AsMemory(offset, count), SocketFlags.None, cancellationToken).AsTask();

    public override ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default) =>
        Socket.ReceiveAsync(buffer, SocketFlags.None, cancellationToken);

    public override async ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default)
    {
        while (!buffer.IsEmpty) buffer = buffer[await Socket.SendAsync(buffer, SocketFlags.None, cancellationToken).ConfigureAwait(false)..];
    }

    public override Task WriteAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
        WriteAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

    public override void Flush() { }
    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException("A network stream cannot seek.");
    public override void SetLength(long value) => throw new NotSupportedException("A network stream has no length.");

    protected override void Dispose(bool disposing)
    {
        if (!_disposed && disposing)
        {
            _disposed = true;
            if (_ownsSocket) Socket.Dispose();
        }
        base.Dispose(disposing);
    }

    private static TimeSpan? TimeoutOf(int milliseconds) =>
        milliseconds == Timeout.Infinite ? null : TimeSpan.FromMilliseconds(milliseconds);

    private void Send(ReadOnlySpan<byte> data)
    {
        try
        {
            CooperativeSocket.Send(_socket, data, SocketFlags.None, TimeoutOf(WriteTimeout), out var error);
            if (error == SocketError.TimedOut) throw new TimeoutException($"The peer did not take the data within {WriteTimeout} ms.");
            if (error != SocketError.Success) throw new SocketException((int)error);
        }
        catch (Exception e) when (e is SocketException or TimeoutException)
        {
            throw AsIOException(e);
        }
    }

    private static IOException AsIOException(Exception e) =>
        e is TimeoutException ? new IOException(e.Message, e) : new IOException($"Unable to transfer data on the transport connection: {e.Message}.", e);
}
