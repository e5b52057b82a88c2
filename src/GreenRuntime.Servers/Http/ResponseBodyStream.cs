namespace GreenRuntime.Servers;

/// <summary>The write-only <see cref="HttpResponse.Body"/>: every call goes to the response.</summary>
internal sealed class ResponseBodyStream(HttpResponse response) : Stream
{
    public override bool CanRead => false;
    public override bool CanSeek => false;
    public override bool CanWrite => !response.Completed;
    public override long Length => throw new NotSupportedException("The response body is write-only and has no length.");
    public override long Position
    {
        get => response.BytesWritten;
        set => throw new NotSupportedException("The response body cannot seek.");
    }

    public override void Write(byte[] buffer, int offset, int count)
    {
        ValidateBufferArguments(buffer, offset, count);
        response.Write(buffer.AsSpan(offset, count));
    }

    public override void Write(ReadOnlySpan<byte> buffer) => response.Write(buffer);

    public override void WriteByte(byte value) => response.Write([value]);

    public override Task WriteAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken)
    {
        Write(buffer, offset, count);
        return Task.CompletedTask;
    }

    public override ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default)
    {
        response.Write(buffer.Span);
        return ValueTask.CompletedTask;
    }

    public override void Flush() => response.Flush();
    public override Task FlushAsync(CancellationToken cancellationToken)
    {
        response.Flush();
        return Task.CompletedTask;
    }

    public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException("The response body is write-only; read the request through HttpRequest.Body.");
    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException("The response body cannot seek.");
    public override void SetLength(long value) => throw new NotSupportedException("Set HttpResponse.ContentLength to declare the body length.");
}
