using GreenRuntime.Cooperative;

namespace GreenRuntime.PatchSets;

/// <summary>
/// Synchronous file I/O at the Unix funnels in <c>System.IO.RandomAccess</c> that FileStream, File.* and
/// RandomAccess.Read/Write all reach, the fsync behind FileStream.Flush(true) and RandomAccess.FlushToDisk, the native
/// whole-file copy behind File.Copy, the open every FileStream and File.* call starts with and File.Delete (a FIFO's
/// open, a large file's truncation or deletion), the close of a file handle a greenlet wrote much through (ext4 flushes
/// a rewritten file there), and the console streams' writes (a pipe whose reader stopped reading).
/// </summary>
internal sealed class FilesPatchSet : PatchSet
{
    public static readonly FilesPatchSet Instance = new();

    public override string Name => "Files";

    public override IReadOnlyList<PatchPoint> Points { get; } =
    [
        new("System.IO.RandomAccess.ReadAtOffset(SafeFileHandle, Span`1, Int64)", CooperativeFile.ReadAtOffsetMethod, Replacement(nameof(CooperativeFile.ReadAtOffset)), CooperativeFile.ReadAt),
        new("System.IO.RandomAccess.WriteAtOffset(SafeFileHandle, ReadOnlySpan`1, Int64)", CooperativeFile.WriteAtOffsetMethod, Replacement(nameof(CooperativeFile.WriteAtOffset)), CooperativeFile.WriteAt),
        new("System.IO.RandomAccess.ReadScatterAtOffset(SafeFileHandle, IReadOnlyList`1, Int64)", CooperativeFile.ReadScatterAtOffsetMethod, Replacement(nameof(CooperativeFile.ReadScatterAtOffset)), CooperativeFile.ReadScatter),
        new("System.IO.RandomAccess.WriteGatherAtOffset(SafeFileHandle, IReadOnlyList`1, Int64)", CooperativeFile.WriteGatherAtOffsetMethod, Replacement(nameof(CooperativeFile.WriteGatherAtOffset)), CooperativeFile.WriteGather),
        new("System.IO.Strategies.FileStreamHelpers.FlushToDisk(SafeFileHandle) (FileStream.Flush(true), RandomAccess.FlushToDisk)", CooperativeFile.FlushToDiskMethod, Replacement(nameof(CooperativeFile.FlushToDisk)), CooperativeFile.FlushToDiskSlot),
        new("System.ConsolePal.WriteFromConsoleStream(SafeFileHandle, ReadOnlySpan`1) (Console.Out, Console.Error, Console.OpenStandardOutput/Error)", CooperativeConsoleOutput.WriteFromConsoleStreamMethod, typeof(CooperativeConsoleOutput).GetMethod(nameof(CooperativeConsoleOutput.WriteFromConsoleStream))!, CooperativeConsoleOutput.WriteFromConsoleStreamSlot),
        new("System.IO.FileSystem.CopyFile(String, String, Boolean) (File.Copy, FileInfo.CopyTo, File.Move across file systems)", CooperativeFileCopy.CopyFileMethod, typeof(CooperativeFileCopy).GetMethod(nameof(CooperativeFileCopy.CopyFile))!, CooperativeFileCopy.CopyFileSlot),
        new("Microsoft.Win32.SafeHandles.SafeFileHandle.Open(String, FileMode, FileAccess, FileShare, FileOptions, Int64, UnixFileMode, Int64&, UnixFileMode&, Boolean, Boolean&, Func`4) (every open: FileStream, File.OpenHandle, File.ReadAll*/WriteAll*)", CooperativeFileOpen.OpenMethod, typeof(CooperativeFileOpen).GetMethod(nameof(CooperativeFileOpen.Open))!, CooperativeFileOpen.OpenSlot),
        new("System.IO.FileSystem.DeleteFile(String) (File.Delete, FileInfo.Delete)", CooperativeFileOpen.DeleteFileMethod, typeof(CooperativeFileOpen).GetMethod(nameof(CooperativeFileOpen.DeleteFile))!, CooperativeFileOpen.DeleteFileSlot),
        new("Microsoft.Win32.SafeHandles.SafeFileHandle.ReleaseHandle() (every close of a file handle: FileStream.Dispose, SafeFileHandle.Dispose, File.WriteAll*)", CooperativeFileClose.ReleaseHandleMethod, typeof(CooperativeFileClose).GetMethod(nameof(CooperativeFileClose.ReleaseHandle))!, CooperativeFileClose.ReleaseHandleSlot),
    ];

    private static System.Reflection.MethodInfo Replacement(string name) => typeof(CooperativeFile).GetMethod(name)!;
}
