using System.Reflection;
using System.Runtime.CompilerServices;

namespace GreenRuntime.Patch.Tests.PatchSets;

/// <summary>
/// Reflection that makes the runtime initialise a class itself — a static field's FieldInfo.GetValue/SetValue (and
/// their TypedReference forms), ConstructorInfo.Invoke, a ConstructorInvoker's first calls,
/// RuntimeHelpers.GetUninitializedObject — while another greenlet is parked inside that class's static constructor:
/// the hub must not deadlock, and the constructor runs once. Each case runs on a hub of its own thread, so a deadlock
/// fails the test instead of hanging the run.
/// </summary>
public class ReflectionClassInitTests : PatchedHubTest
{
    private const int Greenlets = 20;
    private static readonly TimeSpan DeadlockLimit = TimeSpan.FromSeconds(30);

    [Test]
    public void StaticFieldGetValue() => TouchAtOnce<GetTag>(type => type.GetField(nameof(Slow<GetTag>.Value))!.GetValue(null));

    [Test]
    public void StaticFieldSetValue() => TouchAtOnce<SetTag>(type =>
    {
        type.GetField(nameof(Slow<SetTag>.Value))!.SetValue(null, "set");
        return null;
    });

    [Test]
    public void StaticFieldGetValueDirect() => TouchAtOnce<GetDirectTag>(type =>
    {
        var unrelated = 0; // a static field ignores the reference it is given
        return type.GetField(nameof(Slow<GetDirectTag>.Value))!.GetValueDirect(__makeref(unrelated));
    });

    [Test]
    public void StaticFieldSetValueDirect() => TouchAtOnce<SetDirectTag>(type =>
    {
        var unrelated = 0;
        type.GetField(nameof(Slow<SetDirectTag>.Value))!.SetValueDirect(__makeref(unrelated), "set");
        return null;
    });

    [Test]
    public void ConstructorInfoInvoke() => TouchAtOnce<InvokeTag>(type => type.GetConstructor(Type.EmptyTypes)!.Invoke(null));

    [Test]
    public void ActivatorCreateInstanceWithArguments() => TouchAtOnce<ActivatorTag>(type => Activator.CreateInstance(type, "argument"));

    [Test]
    public void ConstructorInvokerInvoke() => TouchAtOnce<InvokerTag>(type => ConstructorInvoker.Create(type.GetConstructor(Type.EmptyTypes)!).Invoke());

    [Test]
    public void GetUninitializedObject() => TouchAtOnce<UninitializedTag>(RuntimeHelpers.GetUninitializedObject);

    /// <summary>A constructor that throws surfaces from every path exactly as from the original: the same exception types,
    /// on greenlets (the patched path) as off any hub (where the replacements call the original at once).</summary>
    [Test]
    public void AFailingStaticConstructorFailsEachPathAsTheOriginalDoes()
    {
        var paths = new (Type Tag, Func<Type, object?> Touch)[]
        {
            (typeof(GetTag), type => type.GetField("Value")!.GetValue(null)),
            (typeof(SetTag), type =>
            {
                type.GetField("Value")!.SetValue(null, "set");
                return null;
            }),
            (typeof(InvokeTag), type => type.GetConstructor(Type.EmptyTypes)!.Invoke(null)),
            (typeof(InvokerTag), type => ConstructorInvoker.Create(type.GetConstructor(Type.EmptyTypes)!).Invoke()),
            (typeof(UninitializedTag), RuntimeHelpers.GetUninitializedObject),
        };
        foreach (var (tag, touch) in paths)
        {
            Exception? offHub = null;
            var offHubThread = new Thread(() => offHub = Catch(() => touch(typeof(Failing<,>).MakeGenericType(tag, typeof(OffHubTag)))));
            offHubThread.Start();
            offHubThread.Join();
            var onGreenlets = new List<Exception?>();
            OnOwnHub(() =>
            {
                var all = Enumerable.Range(0, 5).Select(_ => Green.Spawn(() => Catch(() => touch(typeof(Failing<,>).MakeGenericType(tag, typeof(GreenletTag)))))).ToList();
                Green.JoinAll(all, raiseError: true);
                onGreenlets.AddRange(all.Select(g => g.Get()));
            });
            Assert.That(offHub, Is.Not.Null, tag.Name);
            foreach (var e in onGreenlets)
            {
                Assert.That(e?.GetType(), Is.EqualTo(offHub!.GetType()), tag.Name);
                Assert.That(e!.InnerException?.GetType(), Is.EqualTo(offHub.InnerException?.GetType()), tag.Name);
            }
        }
    }

    private static Exception? Catch(Func<object?> call)
    {
        try
        {
            call();
            return null;
        }
        catch (Exception e)
        {
            return e;
        }
    }

    /// <summary>Touches <c>Slow&lt;TTag&gt;</c> from <see cref="Greenlets"/> greenlets at once through <paramref name="touch"/>:
    /// the first runs the static constructor, which parks (a patched sleep); the others meet it in progress.</summary>
    private static void TouchAtOnce<TTag>(Func<Type, object?> touch)
    {
        OnOwnHub(() =>
        {
            var all = Enumerable.Range(0, Greenlets).Select(_ => Green.Spawn(() => touch(typeof(Slow<TTag>)))).ToList();
            Green.JoinAll(all, raiseError: true);
        });
        Assert.That(Slow<TTag>.Runs, Is.EqualTo(1), "the static constructor ran exactly once");
    }

    private static void OnOwnHub(Action body) =>
        OwnHub.Run(body, DeadlockLimit, "the hub deadlocked: a greenlet waited for the class's initialisation holding the baton");

    private sealed class GetTag;
    private sealed class SetTag;
    private sealed class GetDirectTag;
    private sealed class SetDirectTag;
    private sealed class InvokeTag;
    private sealed class ActivatorTag;
    private sealed class InvokerTag;
    private sealed class UninitializedTag;
    private sealed class OffHubTag;
    private sealed class GreenletTag;

    /// <summary>A class per tag whose static constructor parks (a patched sleep) and counts its runs.</summary>
    private sealed class Slow<TTag>
    {
        public static int Runs;
        public static string Value = "initial";

        static Slow()
        {
            Thread.Sleep(50);
            Interlocked.Increment(ref Runs);
        }

        public Slow()
        {
        }

        public Slow(string argument) => _ = argument;
    }

    /// <summary>A class per pair of tags whose static constructor parks, then throws.</summary>
    private sealed class Failing<TPath, TWhere>
    {
        public static string Value = "initial";

        static Failing()
        {
            Thread.Sleep(20);
            throw new InvalidOperationException("broken on purpose");
        }
    }
}
