using GreenRuntime.AspNetCore.SignalR;
using Microsoft.AspNetCore.SignalR;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace GreenRuntime.AspNetCore;

/// <summary>Registers the greenlet integration with an ASP.NET Core host.</summary>
public static class GreenletsServiceCollectionExtensions
{
    /// <summary>
    /// Adds what <see cref="GreenletsApplicationBuilderExtensions.UseGreenlets"/> needs: a <see cref="HubGroup"/> singleton
    /// owned by the host (its hubs log through the host's <c>ILoggerFactory</c>), created with the application's
    /// pipeline, and disposed when the host is, after the requests still running in greenlets have finished; and, when
    /// <see cref="GreenletsOptions.PatchAll"/> is set, one <see cref="Patch.All"/> per process, its report logged.
    /// </summary>
    /// <remarks>
    /// <para>The group can be injected (<c>HubGroup</c>) to run background greenlets on the same hubs.</para>
    /// <para>The runtime's metrics are the <c>GreenRuntime</c> meter: the host's metrics pipeline sees it like any
    /// other (<c>dotnet-counters monitor --counters GreenRuntime</c>, OpenTelemetry's <c>AddMeter("GreenRuntime")</c>).</para>
    /// <para>With <c>UseGreenlets()</c> in the pipeline, SignalR hub methods (and hubs' <c>OnConnectedAsync</c> and
    /// <c>OnDisconnectedAsync</c>) run in greenlets too, through a hub filter registered here for every hub: filters
    /// added before this call run outside the greenlet, those added after it inside.</para>
    /// <para>Calling it again only applies <paramref name="configure"/> too.</para>
    /// </remarks>
    /// <param name="services">The host's services.</param>
    /// <param name="configure">Changes <see cref="GreenletsOptions"/>' defaults; null keeps them.</param>
    /// <returns><paramref name="services"/>, for chaining.</returns>
    /// <example>
    /// <code>
    /// var builder = WebApplication.CreateBuilder(args);
    /// builder.Services.AddGreenlets(o =&gt; o.MaxConcurrentRequests = 10_000);
    /// var app = builder.Build();
    /// app.UseGreenlets();                                        // everything after this runs in greenlets
    /// app.MapGet("/legacy", () =&gt; { Thread.Sleep(20); return "done"; });   // parks a greenlet, not a pool thread
    /// app.Run();
    /// </code>
    /// </example>
    public static IServiceCollection AddGreenlets(this IServiceCollection services, Action<GreenletsOptions>? configure = null)
    {
        ArgumentNullException.ThrowIfNull(services);
        services.AddOptions<GreenletsOptions>();
        if (configure != null) services.Configure(configure);
        services.TryAddSingleton(static sp =>
        {
            var options = sp.GetRequiredService<IOptions<GreenletsOptions>>().Value;
            options.Validate();
            return new HubGroup(new HubGroupOptions
            {
                HubCount = options.Hubs,
                Hub = new HubOptions
                {
                    LoggerFactory = sp.GetService<ILoggerFactory>() ?? Microsoft.Extensions.Logging.Abstractions.NullLoggerFactory.Instance,
                    // A server must not pause: capturing a blocked thread's stack suspends the whole process (see
                    // HubOptions.CaptureBlockedStacks); the report still names the greenlet and the duration.
                    CaptureBlockedStacks = false,
                    PrestartCarriers = options.PrestartCarriers,
                },
            });
        });
        // Depends on the group, so the container (which disposes in reverse order of creation) disposes it first: it
        // waits for the requests in flight, then the group stops.
        services.TryAddSingleton<GreenletsHost>();
        if (!services.Any(static d => d.ServiceType == typeof(GreenletHubFilter)))
        {
            // Every hub's methods run in greenlets once UseGreenlets() is in the pipeline; harmless without SignalR.
            services.AddSingleton<GreenletHubFilter>();
            services.Configure<Microsoft.AspNetCore.SignalR.HubOptions>(static o => o.AddFilter<GreenletHubFilter>());
        }
        return services;
    }
}
