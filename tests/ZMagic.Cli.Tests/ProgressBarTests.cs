using ZMagic.Cli.Demo;

namespace ZMagic.Cli.Tests;

public class ProgressBarTests
{
    [Fact]
    public void ProgressBar_ToleratesMoreStepsThanAnnounced()
    {
        // The sampler can run one step more than --steps (the final step to t = -1); the bar must not throw.
        var w = new StringWriter();
        var bar = new TextProgressBar(w, total: 3);
        for (int i = 0; i < 6; i++) bar.Advance("zmagic");
        bar.Done();
        Assert.Contains("6/6", w.ToString());
    }
}
