using System.Reflection;
using System.Runtime.CompilerServices;
using GreenRuntime.Detours;

namespace GreenRuntime.Patch.Tests.Detours;

/// <summary>Detours of methods defined here: shapes of signatures, originals, undo.</summary>
[TestFixture]
public class UserMethodTests
{
    [OneTimeSetUp]
    public void Supported() => Detour.EnsureSupported();

    [Test]
    public void IsSupportedOnThisMachine() => Assert.That(Detour.IsSupported, Is.True);

    [Test]
    public void StaticMethodIsRedirectedAndOriginalIsCallable()
    {
        Assert.That(Targets.Add(2, 3), Is.EqualTo(5));
        using Detour d = Detour.Create(Method(typeof(Targets), nameof(Targets.Add)), Method(typeof(Replacements), nameof(Replacements.Add)));
        Assert.Multiple(() =>
        {
            Assert.That(d.IsApplied, Is.True);
            Assert.That(Targets.Add(2, 3), Is.EqualTo(-6));
            Assert.That(d.GetOriginal<Func<int, int, int>>()(2, 3), Is.EqualTo(5));
            Assert.That(d.Target.Name, Is.EqualTo(nameof(Targets.Add)));
        });
        d.Dispose();
        Assert.That(d.IsApplied, Is.False);
        Assert.That(Targets.Add(2, 3), Is.EqualTo(5));
    }

    [Test]
    public void DoubleDisposeIsHarmlessAndRedetourWorks()
    {
        MethodInfo target = Method(typeof(Targets), nameof(Targets.Add));
        MethodInfo replacement = Method(typeof(Replacements), nameof(Replacements.Add));
        Detour d = Detour.Create(target, replacement);
        d.Dispose();
        d.Dispose();
        Assert.That(Targets.Add(4, 4), Is.EqualTo(8));
        using Detour again = Detour.Create(target, replacement);
        Assert.That(Targets.Add(4, 4), Is.EqualTo(-16));
    }

    [Test]
    public void ManyParameterKinds()
    {
        MethodInfo target = Method(typeof(Targets), nameof(Targets.Mixed));
        var point = new Point { X = 1.5, Y = -2, Tag = 7 };
        int r = 10;
        double expected = Targets.Mixed("abc", 2.25, point, ref r, out string expectedNote, 40L, 3.5f, 'q');
        Assert.That(r, Is.EqualTo(11));

        using Detour d = Detour.Create(target, Method(typeof(Replacements), nameof(Replacements.Mixed)));
        r = 10;
        double got = Targets.Mixed("abc", 2.25, point, ref r, out string note, 40L, 3.5f, 'q');
        Assert.Multiple(() =>
        {
            Assert.That(got, Is.EqualTo(-1.0));
            Assert.That(r, Is.EqualTo(1000));
            Assert.That(note, Is.EqualTo("replaced abc"));
        });

        r = 10;
        var original = d.GetOriginal<MixedFn>();
        double back = original("abc", 2.25, point, ref r, out string originalNote, 40L, 3.5f, 'q');
        Assert.Multiple(() =>
        {
            Assert.That(back, Is.EqualTo(expected));
            Assert.That(r, Is.EqualTo(11));
            Assert.That(originalNote, Is.EqualTo(expectedNote));
        });
    }

    [Test]
    public void BigStructReturnedFromStaticMethod()
    {
        using Detour d = Detour.Create(Method(typeof(Targets), nameof(Targets.MakeBig)), Method(typeof(Replacements), nameof(Replacements.MakeBig)));
        Assert.That(Targets.MakeBig(5).D, Is.EqualTo(-5));
        Assert.That(d.GetOriginal<Func<long, Big>>()(5).D, Is.EqualTo(20));
    }

    [Test]
    public void InstanceMethodOfClass()
    {
        var counter = new Counter { Value = 5 };
        using Detour d = Detour.Create(Method(typeof(Counter), nameof(Counter.AddTo)), Method(typeof(Replacements), nameof(Replacements.CounterAddTo)));
        Assert.That(counter.AddTo(3), Is.EqualTo(-8));
        Assert.That(d.GetOriginal<Func<Counter, int, int>>()(counter, 3), Is.EqualTo(8));
        Assert.That(counter.Value, Is.EqualTo(8));
    }

    [Test]
    public void InstanceMethodOfStructTakesThisByRef()
    {
        var acc = new Accumulator { Sum = 1 };
        using Detour d = Detour.Create(Method(typeof(Accumulator), nameof(Accumulator.Push)), Method(typeof(Replacements), nameof(Replacements.AccumulatorPush)));
        acc.Push(10);
        Assert.That(acc.Sum, Is.EqualTo(-100));
        d.GetOriginal<AccumulatorPushFn>()(ref acc, 10);
        Assert.That(acc.Sum, Is.EqualTo(-90));
    }

    [Test]
    public void ConstructorCanBeDetoured()
    {
        using Detour d = Detour.Create(typeof(Counter).GetConstructor([typeof(int), typeof(string)])!, Method(typeof(Replacements), nameof(Replacements.CounterCtor)));
        var c = new Counter(4, "x");
        Assert.That(c.Value, Is.EqualTo(-4));
        var o = (Counter)RuntimeHelpers.GetUninitializedObject(typeof(Counter));
        d.GetOriginal<Action<Counter, int, string>>()(o, 4, "x");
        Assert.That(o.Value, Is.EqualTo(5));
    }

    [Test]
    public void ExceptionFromOriginalPropagatesThroughTrampoline()
    {
        using Detour d = Detour.Create(Method(typeof(Targets), nameof(Targets.Throws)), Method(typeof(Replacements), nameof(Replacements.Throws)));
        Assert.That(Targets.Throws("x"), Is.EqualTo("replaced"));
        var original = d.GetOriginal<Func<string, string>>();
        var e = Assert.Throws<InvalidOperationException>(() => original("boom"));
        Assert.That(e!.Message, Is.EqualTo("boom"));
        Assert.That(e.StackTrace, Does.Contain(nameof(Targets.Throws)));
    }

    [Test]
    public void ReplacementCanCallOriginal()
    {
        using Detour d = Detour.Create(Method(typeof(Targets), nameof(Targets.Greeting)), Method(typeof(Replacements), nameof(Replacements.Greeting)));
        Replacements.GreetingDetour = d;
        Assert.That(Targets.Greeting("bob"), Is.EqualTo("[hello bob]"));
    }

    [Test]
    public void WrongDelegateShapeIsRefused()
    {
        using Detour d = Detour.Create(Method(typeof(Targets), nameof(Targets.Add)), Method(typeof(Replacements), nameof(Replacements.Add)));
        var e = Assert.Throws<ArgumentException>(() => d.GetOriginal<Func<long, int, int>>());
        Assert.That(e!.Message, Does.Contain("does not match"));
    }

    [Test]
    public void AnInstanceMethodOfAGenericClassIsRedirectedForEveryReferenceTypeInstantiation()
    {
        // Box<string> and Box<Uri> run the shared code of Box<__Canon>: one detour, reached through any of them.
        Assert.That(new Box<string>("a").Describe(), Is.EqualTo("box of a"));
        using Detour d = Detour.Create(typeof(Box<object>).GetMethod(nameof(Box<object>.Describe))!, Method(typeof(Replacements), nameof(Replacements.DescribeBox)));
        Replacements.DescribeBoxDetour = d;
        Assert.Multiple(() =>
        {
            Assert.That(new Box<string>("a").Describe(), Is.EqualTo("<box of a>"));
            Assert.That(new Box<Uri>(new Uri("http://x/")).Describe(), Is.EqualTo("<box of http://x/>"));
            Assert.That(new Box<int>(7).Describe(), Is.EqualTo("box of 7"), "a value-type instantiation has code of its own");
        });
        d.Dispose();
        Assert.That(new Box<string>("a").Describe(), Is.EqualTo("box of a"));
    }

    [Test]
    public void GenericClassMethodsWithoutSharedReferenceCodeAreRefused()
    {
        var replacement = Method(typeof(Replacements), nameof(Replacements.DescribeBox));
        var valueType = Assert.Throws<NotSupportedException>(() => Detour.Create(typeof(Box<int>).GetMethod(nameof(Box<int>.Describe))!, replacement));
        Assert.That(valueType!.Message, Does.Contain("instantiated over reference types"));
        var isStatic = Assert.Throws<NotSupportedException>(() => Detour.Create(typeof(Box<object>).GetMethod(nameof(Box<object>.Make))!, Method(typeof(Replacements), nameof(Replacements.MakeBox))));
        Assert.That(isStatic!.Message, Does.Contain("instantiated over reference types"));
    }

    internal delegate double MixedFn(string s, double d, Point p, ref int r, out string note, long l, float f, char c);

    internal delegate void AccumulatorPushFn(ref Accumulator self, int value);

    internal static MethodInfo Method(Type type, string name) =>
        type.GetMethod(name, BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.Static | BindingFlags.Instance)
        ?? throw new MissingMethodException(type.Name, name);
}

internal sealed class Box<T>(T value)
{
    [MethodImpl(MethodImplOptions.NoInlining)]
    public string Describe() => $"box of {value}";

    [MethodImpl(MethodImplOptions.NoInlining)]
    public static string Make() => typeof(T).Name;
}

internal struct Point
{
    public double X;
    public double Y;
    public int Tag;
}

internal struct Big
{
    public long A;
    public long B;
    public long C;
    public long D;
}

internal sealed class Counter
{
    public Counter()
    {
    }

    public Counter(int start, string name)
    {
        Value = start + name.Length;
    }

    public int Value { get; set; }

    [MethodImpl(MethodImplOptions.NoInlining)]
    public int AddTo(int delta)
    {
        Value += delta;
        return Value;
    }
}

internal struct Accumulator
{
    public long Sum;

    [MethodImpl(MethodImplOptions.NoInlining)]
    public void Push(int value) => Sum += value * 1L;
}

internal static class Targets
{
    [MethodImpl(MethodImplOptions.NoInlining)]
    public static int Add(int a, int b) => a + b;

    [MethodImpl(MethodImplOptions.NoInlining)]
    public static double Mixed(string s, double d, Point p, ref int r, out string note, long l, float f, char c)
    {
        r++;
        note = $"{s}:{p.Tag}:{c}";
        return (s.Length * d) + p.X + p.Y + l + f + c;
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    public static Big MakeBig(long x) => new() { A = x, B = x * 2, C = x * 3, D = x * 4 };

    [MethodImpl(MethodImplOptions.NoInlining)]
    public static string Throws(string message) => message.Length > 0 ? throw new InvalidOperationException(message) : "none";

    [MethodImpl(MethodImplOptions.NoInlining)]
    public static string Greeting(string name) => "hello " + name;
}

internal static class Replacements
{
    public static Detour? GreetingDetour;
    public static Detour? DescribeBoxDetour;

    public static string DescribeBox(object box) => $"<{DescribeBoxDetour!.GetOriginal<Func<object, string>>()(box)}>";

    public static string MakeBox() => "replaced";

    public static int Add(int a, int b) => -(a * b);

    public static double Mixed(string s, double d, Point p, ref int r, out string note, long l, float f, char c)
    {
        r = 1000;
        note = "replaced " + s;
        return -1.0;
    }

    public static Big MakeBig(long x) => new() { D = -x };

    public static int CounterAddTo(Counter self, int delta) => -(self.Value + delta);

    public static void AccumulatorPush(ref Accumulator self, int value) => self.Sum = -value * 10;

    public static void CounterCtor(Counter self, int start, string name) => self.Value = -start;

    public static string Throws(string message) => "replaced";

    public static string Greeting(string name) => "[" + GreetingDetour!.GetOriginal<Func<string, string>>()(name) + "]";
}
