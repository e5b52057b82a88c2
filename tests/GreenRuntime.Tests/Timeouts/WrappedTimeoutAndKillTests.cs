namespace GreenRuntime.Tests.Timeouts;

/// <summary>
/// Blocking I/O wraps what it cannot handle: NetworkStream.Read turns a timeout or a kill raised in its socket
/// call into an IOException, and a database driver wraps that again. The timeout or kill must still be
/// recognised as such — by reference, never by type alone.
/// </summary>
public class WrappedTimeoutAndKillTests : HubTest
{
    /// <summary>What NetworkStream.Read and a driver do around a blocking call that fails.</summary>
    private static void SleepWrapped(int milliseconds)
    {
        try
        {
            try
            {
                Green.Sleep(milliseconds);
            }
            catch (Exception e)
            {
                throw new IOException("Unable to read data from the transport connection.", e);
            }
        }
        catch (IOException e)
        {
            throw new InvalidOperationException("Exception while reading from stream", e);
        }
    }

    [Test]
    public void WithTimeoutReturnsTheTimeoutValueWhenTheTimeoutCameBackWrapped()
    {
        var g = Green.Spawn(() => Green.WithTimeout(TimeSpan.FromMilliseconds(20), () => { SleepWrapped(10_000); return 1; }, -1));
        Assert.That(g.Get(TimeSpan.FromSeconds(5)), Is.EqualTo(-1));
    }

    [Test]
    public void WithTimeoutAsyncReturnsTheTimeoutValueWhenTheTimeoutCameBackWrapped()
    {
        // An async client library wraps the socket error the same way (RabbitMQ.Client: BrokerUnreachableException over an
        // AggregateException over the timeout raised in its connect).
        static async Task<int> SleepWrappedAsync()
        {
            try
            {
                await Green.SleepAsync(TimeSpan.FromSeconds(10));
                return 1;
            }
            catch (Exception e)
            {
                throw new InvalidOperationException("None of the specified endpoints were reachable", new AggregateException(e));
            }
        }
        var g = Green.SpawnAsync(async () => await Green.WithTimeoutAsync(TimeSpan.FromMilliseconds(20), SleepWrappedAsync, -1));
        Assert.That(g.Get(TimeSpan.FromSeconds(5)), Is.EqualTo(-1));
    }

    [Test]
    public void RunSilentlyReturnsFalseWhenTheTimeoutCameBackWrapped()
    {
        var g = Green.Spawn(() => GreenTimeout.RunSilently(TimeSpan.FromMilliseconds(20), () => SleepWrapped(10_000)));
        Assert.That(g.Get(TimeSpan.FromSeconds(5)), Is.False);
    }

    [Test]
    public void WithTimeoutThrowsItsOwnTimeoutExceptionUnwrapped()
    {
        var g = Green.Spawn(() => Green.WithTimeout(TimeSpan.FromMilliseconds(20), () => SleepWrapped(10_000)));
        g.Join(TimeSpan.FromSeconds(5));
        Assert.That(g.Exception, Is.InstanceOf<GreenTimeoutException>());
        Assert.That(((GreenTimeoutException)g.Exception!).Scope, Is.Not.Null);
    }

    [Test]
    public void AnEnclosingTimeoutThatCameBackWrappedStillPropagatesThroughAnInnerOne()
    {
        var g = Green.Spawn(() =>
        {
            using var outer = GreenTimeout.Start(TimeSpan.FromMilliseconds(20));
            try
            {
                Green.WithTimeout(TimeSpan.FromSeconds(30), () => { SleepWrapped(10_000); return 1; }, -1);
                return "inner swallowed the outer timeout";
            }
            catch (Exception e)
            {
                return e is InvalidOperationException { InnerException.InnerException: GreenTimeoutException t } && t.Scope == outer
                    ? "outer, still wrapped"
                    : e.ToString();
            }
        });
        Assert.That(g.Get(TimeSpan.FromSeconds(5)), Is.EqualTo("outer, still wrapped"));
    }

    [Test]
    public void AGreenletKilledInsideWrappingCodeCountsAsKilled()
    {
        var g = Green.Spawn(() => SleepWrapped(10_000));
        Green.Sleep(10);
        g.Kill();
        Assert.Multiple(() =>
        {
            Assert.That(g.Dead, Is.True);
            Assert.That(g.Successful, Is.True);
            Assert.That(g.Value, Is.InstanceOf<GreenletExit>());
            Assert.That(g.Exception, Is.Null);
        });
    }

    /// <summary>What a database reader's Dispose does (MySqlConnector): reads the rest of its results, a blocking point
    /// where the kill or timeout already raised is raised again, swallows that, and throws its own exception.</summary>
    private sealed class ReaderThatFailsItsOwnWayWhenInterrupted : IDisposable
    {
        public void Dispose()
        {
            try
            {
                Green.Sleep(10);
            }
            catch (Exception)
            {
                throw new InvalidOperationException("Connection must be Open; current state is Broken");
            }
        }
    }

    [Test]
    public void ATimeoutThatCleanUpCodeReplacedWithItsOwnExceptionIsStillTheTimeout()
    {
        var withValue = Green.Spawn(() => Green.WithTimeout(TimeSpan.FromMilliseconds(20), () =>
        {
            using var reader = new ReaderThatFailsItsOwnWayWhenInterrupted();
            Green.Sleep(10_000);
            return 1;
        }, -1));
        Assert.That(withValue.Get(TimeSpan.FromSeconds(5)), Is.EqualTo(-1));

        GreenTimeout? scope = null;
        var throwing = Green.Spawn(() => Green.WithTimeout(TimeSpan.FromMilliseconds(20), () =>
        {
            scope = Green.Current.InnermostTimeout;
            using var reader = new ReaderThatFailsItsOwnWayWhenInterrupted();
            Green.Sleep(10_000);
            return 1;
        }));
        throwing.Join(TimeSpan.FromSeconds(5));
        Assert.That(throwing.Exception, Is.InstanceOf<GreenTimeoutException>().With.Property(nameof(GreenTimeoutException.Scope)).SameAs(scope));

        // Not raised yet, the timeout has nothing to do with what the body throws.
        var unrelated = Green.Spawn(() => Green.WithTimeout(TimeSpan.FromSeconds(10), () =>
        {
            using var reader = new ReaderThatFailsItsOwnWayWhenInterrupted();
            throw new FormatException("the body's own failure");
#pragma warning disable CS0162
            return 1;
#pragma warning restore CS0162
        }, -1));
        unrelated.Join(TimeSpan.FromSeconds(5));
        Assert.That(unrelated.Exception, Is.InstanceOf<FormatException>());
    }

    [Test]
    public void AnEnclosingTimeoutStillPropagatesThroughAnInnerScopeWhoseTimeoutWasRaisedBefore()
    {
        // The inner scope's timeout was raised and handled inside it; the outer one expires during a shielded wait and is
        // raised at the next blocking point (the outermost expired scope wins). What then leaves the inner scope is the
        // outer's timeout, not the inner's to swallow.
        var g = Green.Spawn(() => Green.WithTimeout(TimeSpan.FromMilliseconds(80), () =>
            Green.WithTimeout(TimeSpan.FromMilliseconds(20), () =>
            {
                var inner = Green.Current.InnermostTimeout;
                try
                {
                    Green.Sleep(10_000);
                }
                catch (GreenTimeoutException e) when (e.Scope == inner)
                {
                    // handled
                }
                using (Green.Shield())
                    Green.Sleep(150); // the outer expires meanwhile
                Green.Sleep(10_000);
                return "inner done";
            }, "inner timed out"), "outer timed out"));
        Assert.That(g.Get(TimeSpan.FromSeconds(5)), Is.EqualTo("outer timed out"));
    }

    [Test]
    public void AGreenletWhoseCleanUpReplacedTheRaisedKillWithItsOwnExceptionCountsAsKilled()
    {
        var g = Green.Spawn(() =>
        {
            using var reader = new ReaderThatFailsItsOwnWayWhenInterrupted();
            Green.Sleep(10_000);
        });
        Green.Sleep(10);
        g.Kill();
        Assert.Multiple(() =>
        {
            Assert.That(g.Successful, Is.True);
            Assert.That(g.Value, Is.InstanceOf<GreenletExit>());
            Assert.That(g.Exception, Is.Null);
        });
    }

    [Test]
    public void AGreenletThatWrapsSomeoneElsesGreenletExitStillFails()
    {
        var victim = Green.Spawn(() => Green.Sleep(10_000));
        Green.Sleep(0);
        victim.Kill();
        var exit = (GreenletExit)victim.Value!;
        var g = Green.Spawn(() => throw new InvalidOperationException("carried along", exit));
        g.Join();
        Assert.That(g.Successful, Is.False);
        Assert.That(g.Exception, Is.InstanceOf<InvalidOperationException>());
    }

    [Test]
    public void AGreenletKilledWithItsOwnExceptionThatWrapsItIsAFailureWithTheWrapperWhenNotAGreenletExit()
    {
        // Kill(exception) with a custom exception: the outcome is a failure, as before (only GreenletExit counts
        // as success); wrapped or not, the greenlet fails.
        var g = Green.Spawn(() => SleepWrapped(10_000));
        Green.Sleep(10);
        g.Kill(new TimeoutException("custom"));
        Assert.That(g.Successful, Is.False);
        Assert.That(g.Exception, Is.InstanceOf<InvalidOperationException>());
    }

    /// <summary>
    /// An operation given a linked token, whose kill or timeout comes while the greenlet is in a released call that is
    /// not a cancellation point (a contended lock's wait): the token is cancelled there, and the code after the call
    /// finds the operation cancelled and throws its cancellation without reaching a blocking point (WCF's and gRPC's
    /// first calls, made while class initialisers and locks are contended, ended with TaskCanceledException).
    /// </summary>
    private static void OperationCancelledWhileInAReleasedCall()
    {
        var token = GreenRuntime.LowLevel.Parking.LinkCancellation(CancellationToken.None, out var linked);
        using (linked)
        {
            var operation = Task.Delay(Timeout.Infinite, token);
            // Until the cancellation has completed the operation (the token's handle is set before its callbacks run).
            GreenRuntime.LowLevel.Parking.RunReleased(static o => SpinWait.SpinUntil(() => o.IsCompleted, 10_000), operation, WaitReason.Lock, cancellationPoint: false);
            try
            {
                operation.GetAwaiter().GetResult(); // already cancelled: no blocking point
            }
            catch (OperationCanceledException e)
            {
                throw new InvalidOperationException("The operation was aborted.", e); // as a client library wraps it
            }
        }
    }

    [Test]
    public void AGreenletThatEndsWithTheCancellationItsKillCausedBeforeItWasRaisedWasKilled()
    {
        var g = Green.Spawn(OperationCancelledWhileInAReleasedCall);
        Green.Sleep(20); // g is in the released call
        g.Kill(block: false);
        Assert.That(g.Join(TimeSpan.FromSeconds(10)), Is.True);
        Assert.That(g.Exception, Is.Null, "the kill's doing is not the greenlet's failure");
        Assert.That(g.Value, Is.InstanceOf<GreenletExit>());
    }

    [Test]
    public void WithTimeoutRaisesItsTimeoutWhenTheBodyEndsWithTheCancellationTheTimeoutCausedBeforeItWasRaised()
    {
        var error = Assert.Catch(() => Green.WithTimeout(TimeSpan.FromMilliseconds(30), OperationCancelledWhileInAReleasedCall));
        Assert.That(error, Is.InstanceOf<GreenTimeoutException>());
        Assert.That(Green.WithTimeout(TimeSpan.FromMilliseconds(30), () => { OperationCancelledWhileInAReleasedCall(); return 1; }, -1), Is.EqualTo(-1));
    }

    [Test]
    public void AnExceptionWithoutACancellationInItIsTheBodysOwnEvenAfterTheTimeoutExpired()
    {
        // The timeout expired while the body ran without blocking; what the body throws itself is not the timeout's.
        var error = Assert.Catch(() => Green.WithTimeout(TimeSpan.FromMilliseconds(10), () =>
        {
            var spin = System.Diagnostics.Stopwatch.StartNew();
            while (spin.ElapsedMilliseconds < 50) { }
            throw new ArgumentException("the body's own");
        }));
        Assert.That(error, Is.InstanceOf<ArgumentException>());
    }
}
