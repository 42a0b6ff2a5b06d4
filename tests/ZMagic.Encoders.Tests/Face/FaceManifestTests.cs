using ZMagic.Encoders.Face;

namespace ZMagic.Encoders.Tests.Face;

/// <summary>Full-size networks have exactly the released checkpoints' key sets and shapes (golden manifests).</summary>
public class FaceManifestTests
{
    [Fact]
    public void IrSe50MatchesModelIrSe50Manifest()
    {
        using var net = new IrSeBackbone(112, 50, IrMode.IrSe, 0.6, affine: true);
        FaceTestUtil.AssertKeysEqual(net, FaceTestUtil.Manifest("arcface_irse50"), "IR-SE50 vs arcface_irse50/manifest.json");
        Assert.Equal(397, net.state_dict().Count);
    }

    [Fact]
    public void BiSeNetMatches79999IterManifest()
    {
        using var net = new BiSeNet(19);
        FaceTestUtil.AssertKeysEqual(net, FaceTestUtil.Manifest("bisenet_parsing"), "BiSeNet vs bisenet_parsing/manifest.json");
    }

    [Fact]
    public void MobileFaceNetMatchesLandmarkManifest()
    {
        using var net = new MobileFaceNet(136);
        FaceTestUtil.AssertKeysEqual(net, FaceTestUtil.Manifest("mobilefacenet_landmark"), "MobileFaceNet vs mobilefacenet_landmark/manifest.json");
    }
}
