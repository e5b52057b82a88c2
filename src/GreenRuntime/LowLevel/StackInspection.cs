using System.Diagnostics;
using System.Reflection;

namespace GreenRuntime.LowLevel;

/// <summary>
/// What the IL of a frame on the stack says about the code around its call: for replacements that decide from their
/// caller's code whether a kill may be raised (a caller that catches the interrupt of its lock enter, a frame whose
/// finally a raised kill is running).
/// </summary>
public static class StackInspection
{
    /// <summary>
    /// The exception-handling clauses of <paramref name="frame"/>'s method whose <c>try</c> block holds the frame's
    /// current IL offset, innermost first as the method lists them; none for a method without IL to read (a dynamic
    /// method). The offset of a call inside a <c>try</c> body is exact in optimized code too; a call made by a handler
    /// is reported at the position its parent had when the exception passed, not inside the handler.
    /// </summary>
    /// <param name="frame">A frame of a stack trace.</param>
    /// <returns>The clauses; empty when there are none or the method has no IL.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="frame"/> is null.</exception>
    public static IEnumerable<ExceptionHandlingClause> TryClausesAround(StackFrame frame)
    {
        ArgumentNullException.ThrowIfNull(frame);
        IList<ExceptionHandlingClause> clauses;
        try
        {
            if (frame.GetMethod()?.GetMethodBody() is not { } body) return [];
            clauses = body.ExceptionHandlingClauses;
        }
        catch (Exception e) when (e is InvalidOperationException or NotSupportedException or BadImageFormatException)
        {
            return []; // no IL to read (a dynamic method)
        }
        int il = frame.GetILOffset();
        return clauses.Where(c => il >= c.TryOffset && il < c.TryOffset + c.TryLength);
    }
}
