using Microsoft.Win32.SafeHandles;

namespace GreenRuntime.Cooperative;

/// <summary>
/// A file handle's descriptor, kept from being closed and reused while a raw system call uses it: a reference on the
/// <see cref="System.Runtime.InteropServices.SafeHandle"/> taken for the lease's lifetime (<c>using</c>), as the runtime's own file calls do.
/// </summary>
internal readonly ref struct FdLease
{
    private readonly SafeFileHandle _handle;
    private readonly bool _added;

    public FdLease(SafeFileHandle handle)
    {
        _handle = handle;
        bool added = false;
        handle.DangerousAddRef(ref added); // throws ObjectDisposedException for a closed handle, as the original call would
        _added = added;
    }

    /// <summary>The descriptor, valid until <see cref="Dispose"/>.</summary>
    public int Fd => (int)_handle.DangerousGetHandle();

    public void Dispose()
    {
        if (_added) _handle.DangerousRelease();
    }
}
