using System.Buffers.Text;
using GreenRuntime.LowLevel;

namespace GreenRuntime.Servers;

/// <summary>A growable byte buffer rented from the I/O buffer pool (IoBuffers), for formatting response heads and chunks.</summary>
internal sealed class OutputBuffer
{
    private const int InitialSize = 1024;

    /// <summary>Empty until the first append: an idle connection holds no array.</summary>
    private byte[] _array = [];

    public int Length { get; private set; }

    public ReadOnlyMemory<byte> Memory => _array.AsMemory(0, Length);

    public void Clear() => Length = 0;

    public void Append(ReadOnlySpan<byte> bytes)
    {
        Ensure(bytes.Length);
        bytes.CopyTo(_array.AsSpan(Length));
        Length += bytes.Length;
    }

    /// <summary>Appends a string of Latin-1 characters (validated by the caller) as single bytes.</summary>
    public void AppendLatin1(string s)
    {
        Ensure(s.Length);
        var span = _array.AsSpan(Length, s.Length);
        for (int i = 0; i < s.Length; i++) span[i] = (byte)s[i];
        Length += s.Length;
    }

    public void AppendDecimal(long value)
    {
        Ensure(20);
        Utf8Formatter.TryFormat(value, _array.AsSpan(Length), out int written);
        Length += written;
    }

    public void AppendHex(int value)
    {
        Ensure(8);
        value.TryFormat(_array.AsSpan(Length), out int written, "X", System.Globalization.CultureInfo.InvariantCulture);
        Length += written;
    }

    public void AppendCrlf()
    {
        Ensure(2);
        _array[Length++] = (byte)'\r';
        _array[Length++] = (byte)'\n';
    }

    private void Ensure(int more)
    {
        if (Length + more <= _array.Length) return;
        var bigger = IoBuffers.Pool.Rent(Math.Max(Math.Max(_array.Length * 2, InitialSize), Length + more));
        _array.AsSpan(0, Length).CopyTo(bigger);
        if (_array.Length > 0) IoBuffers.Pool.Return(_array);
        _array = bigger;
    }

    /// <summary>Returns the array to the pool (no send outlives its call, so nothing reads it any more).</summary>
    public void Release()
    {
        if (_array.Length > 0) IoBuffers.Pool.Return(_array);
        _array = [];
        Length = 0;
    }
}
