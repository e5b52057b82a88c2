extern alias PatchAssembly;

using Patching = PatchAssembly::GreenRuntime.Patch;

namespace GreenRuntime.Patch.Tests.PatchSets;

/// <summary>
/// A static constructor runs shielded on a greenlet, so a greenlet inside one when its hub's Dispose gives up waiting
/// outlives the disposal: it must still finish the initialisation, or every thread that touches the class later hangs.
/// The hub runs on a thread of its own.
/// </summary>
public class DisposeSurvivorPatchTests
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(30);

    [OneTimeSetUp]
    public void PatchEverything() => Patching.All();

    [OneTimeTearDown]
    public void UndoEverything() => Patching.UndoAll();

    // Outside SlowInit: reading it must not wait for SlowInit's initialisation.
    private static readonly ManualResetEventSlim s_entered = new();

    private static class SlowInit
    {
        public static readonly int Value = Initialise();

        private static int Initialise()
        {
            s_entered.Set();
            Thread.Sleep(1500); // patched: the greenlet parks, shielded, past the grace of Dispose
            return 42;
        }
    }

    [Test]
    public void AStaticConstructorThatOutlivesDisposeCompletesForOtherThreads()
    {
        Exception? failure = null;
        var hubThread = new Thread(() =>
        {
            try
            {
                var hub = new Hub(new HubOptions { MaxBlockingTime = null });
                Green.Spawn(() => SlowInit.Value);
                Green.Sleep(50);
                hub.Dispose(TimeSpan.FromMilliseconds(200));
            }
            catch (Exception e)
            {
                failure = e;
            }
        });
        hubThread.Start();
        Assert.That(hubThread.Join(Bound), Is.True, "Dispose returns after its grace");
        Assert.That(failure, Is.Null);
        Assert.That(s_entered.IsSet, Is.True, "the greenlet was inside the static constructor");
        // As when a thread runs the initialiser: the others wait for it to end, then read its result.
        var touch = Task.Factory.StartNew(() => SlowInit.Value, TaskCreationOptions.LongRunning);
        Assert.That(touch.Wait(Bound), Is.True, "a class whose initialiser outlived Dispose is initialised for other threads");
        Assert.That(touch.Result, Is.EqualTo(42));
    }
}
