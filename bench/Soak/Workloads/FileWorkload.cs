namespace GreenRuntime.Soak.Workloads;

/// <summary>
/// Patched file writes and reads of known content (File.WriteAllBytes/ReadAllBytes and chunked FileStream I/O),
/// some killed midway. Invariants: what a surviving greenlet reads back is what it wrote; when quiet, no scratch
/// file is left and no descriptor is open.
/// </summary>
internal sealed class FileWorkload(SoakContext context) : Workload(context, "file")
{
    private long _verifiedBytes, _files;

    /// <summary>The content of the big file at <paramref name="offset"/>: a function of the position only.</summary>
    public static void FillAt(Span<byte> buffer, long offset)
    {
        for (int i = 0; i < buffer.Length; i++)
        {
            ulong x = (ulong)(offset + i) * 0x9E3779B97F4A7C15UL;
            buffer[i] = (byte)(x >> 56);
        }
    }

    /// <summary>Writes the 4 MiB file that greenlets of other workloads read while being killed.</summary>
    public static string WriteBigFile(string folder)
    {
        var path = Path.Combine(folder, "big.bin");
        var content = new byte[4 * 1024 * 1024];
        FillAt(content, 0);
        File.WriteAllBytes(path, content);
        return path;
    }

    protected override IReadOnlyList<Greenlet> Round()
    {
        var batch = new List<Greenlet>();
        int count = Random.Next(2, 6);
        for (int i = 0; i < count; i++)
        {
            var content = Payload.Message(Random.Next(1, 1024 * 1024), (uint)Random.Next());
            var path = Path.Combine(Context.Scratch, $"f{Random.Next():x8}-{i}.bin");
            bool chunked = Random.Next(2) == 0;
            int chunk = Random.Next(1, 128 * 1024);
            var g = Ledger.Spawn($"file.{(chunked ? "stream" : "whole")}", () => ReadWrite(path, content, chunked, chunk));
            batch.Add(g);
            if (Random.Next(100) < 25) batch.Add(KillLater(g, 20));
        }
        return batch;
    }

    private void ReadWrite(string path, byte[] content, bool chunked, int chunk)
    {
        try
        {
            byte[] read;
            if (!chunked)
            {
                File.WriteAllBytes(path, content);
                read = File.ReadAllBytes(path);
            }
            else
            {
                using (var output = new FileStream(path, FileMode.CreateNew, FileAccess.Write, FileShare.None, 4096))
                    for (int at = 0; at < content.Length; at += chunk)
                        output.Write(content, at, Math.Min(chunk, content.Length - at));
                read = new byte[content.Length];
                using var input = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 4096);
                int total = 0, n;
                while ((n = input.Read(read, total, Math.Min(chunk, read.Length - total))) > 0) total += n;
                if (total != read.Length) Ledger.Violate($"file: read {total} of {read.Length} bytes back.");
            }
            if (Payload.Verify(read) is { } problem) { Ledger.Violate($"file: {problem}."); return; }
            _verifiedBytes += read.Length;
            _files++;
        }
        finally
        {
            File.Delete(path);
        }
    }

    public override void CheckQuiet()
    {
        var left = Directory.GetFiles(Context.Scratch).Where(f => Path.GetFileName(f) != "big.bin").ToList();
        if (left.Count > 0) Ledger.Violate($"file: {left.Count} scratch file(s) left behind: {string.Join(", ", left.Take(3))}.");
    }

    public override string Progress() => $"file {_files} files/{_verifiedBytes / 1048576.0:0.0} MiB ok";
}
