using System.Runtime.CompilerServices;
using TorchSharp;

namespace ZMagic.Models.Tests;

internal static class TestSetup
{
    /// <summary>Tiny networks gain nothing from intra-op threads on a shared CI machine; one thread avoids oversubscription.</summary>
    [ModuleInitializer]
    internal static void Init() => torch.set_num_threads(1);
}
