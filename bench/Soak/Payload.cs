using System.Buffers.Binary;

namespace GreenRuntime.Soak;

/// <summary>
/// Self-describing test messages: a 16-byte header (length, seed, FNV-1a checksum of the payload) followed by
/// <c>length</c> bytes generated from the seed, so any receiver can check that every byte arrived intact and in order.
/// </summary>
internal static class Payload
{
    public const int HeaderSize = 16;

    /// <summary>Fills <paramref name="payload"/> with the bytes of <paramref name="seed"/> (xorshift32).</summary>
    public static void Fill(Span<byte> payload, uint seed)
    {
        uint x = seed | 1;
        for (int i = 0; i < payload.Length; i++)
        {
            x ^= x << 13; x ^= x >> 17; x ^= x << 5;
            payload[i] = (byte)x;
        }
    }

    public static ulong Checksum(ReadOnlySpan<byte> data)
    {
        ulong h = 14695981039346656037UL;
        foreach (var b in data) { h ^= b; h *= 1099511628211UL; }
        return h;
    }

    /// <summary>A whole message (header + payload) of <paramref name="length"/> payload bytes.</summary>
    public static byte[] Message(int length, uint seed)
    {
        var message = new byte[HeaderSize + length];
        var payload = message.AsSpan(HeaderSize);
        Fill(payload, seed);
        BinaryPrimitives.WriteInt32LittleEndian(message, length);
        BinaryPrimitives.WriteUInt32LittleEndian(message.AsSpan(4), seed);
        BinaryPrimitives.WriteUInt64LittleEndian(message.AsSpan(8), Checksum(payload));
        return message;
    }

    /// <summary>Null when <paramref name="message"/> is intact, else what is wrong with it.</summary>
    public static string? Verify(ReadOnlySpan<byte> message)
    {
        if (message.Length < HeaderSize) return $"message of {message.Length} bytes is shorter than its header";
        int length = BinaryPrimitives.ReadInt32LittleEndian(message);
        if (length != message.Length - HeaderSize) return $"header says {length} payload bytes, {message.Length - HeaderSize} arrived";
        var payload = message[HeaderSize..];
        ulong expected = BinaryPrimitives.ReadUInt64LittleEndian(message[8..]);
        if (Checksum(payload) != expected) return $"checksum mismatch over {length} bytes";
        Span<byte> regenerated = length <= 4096 ? stackalloc byte[length] : new byte[length];
        Fill(regenerated, BinaryPrimitives.ReadUInt32LittleEndian(message[4..]));
        if (!payload.SequenceEqual(regenerated)) return $"payload of {length} bytes differs from its seed's bytes";
        return null;
    }

    /// <summary>A random payload size from 1 B to 256 KiB, skewed towards small ones (most messages are small).</summary>
    public static int RandomSize(Random random) => random.Next(4) switch
    {
        0 => random.Next(1, 64),
        1 => random.Next(64, 4096),
        2 => random.Next(4096, 65536),
        _ => random.Next(65536, 256 * 1024 + 1),
    };
}
