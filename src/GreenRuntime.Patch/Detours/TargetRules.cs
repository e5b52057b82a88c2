using System.Reflection;
using System.Reflection.Emit;
using System.Runtime.CompilerServices;

namespace GreenRuntime.Detours;

/// <summary>
/// Decides, from metadata alone and before any memory is touched, whether a target can be detoured to a
/// replacement, and produces the exception that says why not.
/// </summary>
internal static class TargetRules
{
    private const string IntrinsicAttributeName = "System.Runtime.CompilerServices.IntrinsicAttribute";

    /// <summary>Throws unless <paramref name="target"/> and <paramref name="replacement"/> fit together.</summary>
    public static void Validate(MethodBase target, MethodInfo replacement)
    {
        ArgumentNullException.ThrowIfNull(target);
        ArgumentNullException.ThrowIfNull(replacement);
        string name = Describe(target);

        if (target is DynamicMethod || target.GetType().Name.Contains("DynamicMethod", StringComparison.Ordinal))
        {
            throw new NotSupportedException($"Cannot detour {name}: dynamic methods cannot be detoured.");
        }

        if (target.IsGenericMethodDefinition || target.ContainsGenericParameters)
        {
            throw new NotSupportedException(
                $"Cannot detour {name}: it is an open generic method; detour a closed instantiation instead.");
        }

        if (target.IsGenericMethod)
        {
            throw new NotSupportedException(
                $"Cannot detour {name}: generic instantiations of a generic method are not supported (their shared code takes a hidden " +
                "instantiation argument).");
        }

        // An instance method of a generic class over reference types runs the class's shared code (T = __Canon), which
        // finds its instantiation through `this`: its calling convention is the plain one, and one detour covers every
        // such instantiation. A value-type instantiation has code of its own; a static method takes a hidden argument.
        if (target.DeclaringType is { IsGenericType: true } generic
            && (target.IsStatic || generic.IsValueType || generic.GetGenericArguments().Any(a => a.IsValueType)))
        {
            throw new NotSupportedException(
                $"Cannot detour {name}: of generic types only instance methods of classes instantiated over reference " +
                "types are supported (their shared code serves every such instantiation and needs no hidden argument).");
        }

        if (target.IsAbstract)
        {
            throw new NotSupportedException($"Cannot detour {name}: it is abstract and has no body.");
        }

        MethodImplAttributes impl = target.MethodImplementationFlags;
        if ((impl & MethodImplAttributes.InternalCall) != 0 || (impl & MethodImplAttributes.CodeTypeMask) == MethodImplAttributes.Runtime)
        {
            throw new NotSupportedException(
                $"Cannot detour {name}: it is implemented inside the runtime (InternalCall/runtime-provided), not in IL.");
        }

        if ((target.Attributes & MethodAttributes.PinvokeImpl) != 0 || target.GetMethodBody() is null)
        {
            throw new NotSupportedException($"Cannot detour {name}: it is extern (P/Invoke) or has no IL body.");
        }

        if (target.CustomAttributes.Any(a => a.AttributeType.FullName == IntrinsicAttributeName))
        {
            throw new NotSupportedException(
                $"Cannot detour {name}: it is a JIT intrinsic ([Intrinsic]); the JIT may expand it inline at any call site.");
        }

        if (target is ConstructorInfo { IsStatic: true })
        {
            throw new NotSupportedException($"Cannot detour {name}: static constructors cannot be detoured.");
        }

        if ((target.CallingConvention & CallingConventions.VarArgs) != 0)
        {
            throw new NotSupportedException($"Cannot detour {name}: varargs methods are not supported.");
        }

        ValidateReplacement(target, replacement, name);
    }

    /// <summary>The parameter types a replacement (and the original's delegate) must have, <c>this</c> first.</summary>
    public static Type[] ExpectedParameterTypes(MethodBase target, Type? thisType)
    {
        var types = new List<Type>();
        if (!target.IsStatic)
        {
            types.Add(thisType ?? ThisType(target));
        }

        types.AddRange(target.GetParameters().Select(p => p.ParameterType));
        return types.ToArray();
    }

    /// <summary>The return type a replacement must have.</summary>
    public static Type ReturnType(MethodBase target) => target is MethodInfo m ? m.ReturnType : typeof(void);

    /// <summary>"Type.Method(ParamTypes)", for messages.</summary>
    public static string Describe(MethodBase method) =>
        $"{method.DeclaringType?.FullName ?? "<global>"}.{method.Name}({string.Join(", ", method.GetParameters().Select(p => p.ParameterType.Name))})";

    private static Type ThisType(MethodBase target)
    {
        Type declaring = target.DeclaringType!;
        return declaring.IsValueType ? declaring.MakeByRefType() : declaring;
    }

    private static void ValidateReplacement(MethodBase target, MethodInfo replacement, string name)
    {
        string replacementName = Describe(replacement);
        if (replacement is DynamicMethod || replacement.GetType().Name.Contains("DynamicMethod", StringComparison.Ordinal))
        {
            throw new ArgumentException(
                $"The replacement {replacementName} is a dynamic method; use a static method of a loaded type.", nameof(replacement));
        }

        if (!replacement.IsStatic)
        {
            throw new ArgumentException(
                $"The replacement {replacementName} must be static; for an instance target pass `this` as its first parameter.",
                nameof(replacement));
        }

        if (replacement.ContainsGenericParameters || replacement.IsGenericMethod || replacement.DeclaringType is { IsGenericType: true })
        {
            throw new ArgumentException($"The replacement {replacementName} must not be generic.", nameof(replacement));
        }

        Type[] actual = replacement.GetParameters().Select(p => p.ParameterType).ToArray();
        Type[] expected = ExpectedParameterTypes(target, null);
        bool match = actual.Length == expected.Length;
        for (int i = 0; match && i < actual.Length; i++)
        {
            bool isThis = i == 0 && !target.IsStatic;
            match = actual[i] == expected[i]
                || AbiEquivalent(actual[i], expected[i])
                || (isThis && !target.DeclaringType!.IsValueType && !actual[i].IsValueType && !actual[i].IsByRef
                    && actual[i].IsAssignableFrom(target.DeclaringType));
        }

        if (!match || (replacement.ReturnType != ReturnType(target) && !AbiEquivalent(replacement.ReturnType, ReturnType(target))))
        {
            string thisNote = target.IsStatic ? "" : target.DeclaringType!.IsValueType
                ? $" (`ref {target.DeclaringType.Name}` for `this` comes first)"
                : $" (`this` as {target.DeclaringType!.Name} comes first)";
            throw new ArgumentException(
                $"The replacement {replacementName} returning {replacement.ReturnType.Name} does not match {name}: expected " +
                $"{ReturnType(target).Name} ({string.Join(", ", expected.Select(t => t.Name))}){thisNote}.",
                nameof(replacement));
        }

        if (!target.IsStatic && UsesHiddenReturnBuffer(ReturnType(target)))
        {
            throw new NotSupportedException(
                $"Cannot detour {name}: it is an instance method returning the struct {ReturnType(target).Name} through a " +
                "hidden return buffer, whose position relative to `this` differs from a static replacement's.");
        }
    }

    /// <summary>
    /// Whether a replacement may declare <paramref name="actual"/> where the target has <paramref name="expected"/>
    /// because both are passed the same way and C# cannot name the target's type: runtime-internal pointer types
    /// (<c>MethodTable*</c>) as any pointer or <see cref="nint"/>, and an internal struct wrapping one primitive
    /// field (<c>Lock.ThreadId</c>) as a struct wrapping the same primitive, and a reference type that is not
    /// visible outside its assembly (a <c>Func</c> over internal types) as <see cref="object"/>. All are one
    /// integer register in SysV x64, and an object reference is reported to the GC the same way whatever its type.
    /// </summary>
    internal static bool AbiEquivalent(Type actual, Type expected)
    {
        if (expected.IsPointer)
            return actual.IsPointer || actual == typeof(nint) || actual == typeof(nuint);
        if (!expected.IsValueType && !expected.IsByRef)
            return actual == typeof(object) && !expected.IsVisible;
        if (!expected.IsValueType || !actual.IsValueType || expected.IsPrimitive || expected.IsEnum || expected.IsVisible)
            return false;
        return SinglePrimitiveField(expected) is { } e && SinglePrimitiveField(actual) == e;
    }

    private static Type? SinglePrimitiveField(Type type)
    {
        if (type.IsPrimitive) return type;
        var fields = type.GetFields(BindingFlags.Instance | BindingFlags.Public | BindingFlags.NonPublic);
        return fields.Length == 1 && fields[0].FieldType.IsPrimitive ? fields[0].FieldType : null;
    }

    /// <summary>
    /// Conservative SysV x64 rule: structs larger than 16 bytes (or with explicit layout, which may be
    /// classified as MEMORY) are returned through a hidden buffer.
    /// </summary>
    private static bool UsesHiddenReturnBuffer(Type type)
    {
        if (!type.IsValueType || type.IsPrimitive || type.IsEnum || type.IsPointer || type == typeof(void))
        {
            return false;
        }

        return type.IsExplicitLayout || RuntimeHelpers.SizeOf(type.TypeHandle) > 16;
    }
}
