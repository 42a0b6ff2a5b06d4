using System.IO.Compression;
using System.Text;
using TorchSharp;
using ZMagic.Core.IO;
using ZMagic.Models.Adm;
using ZMagic.Models.Ddpm;
using ZMagic.Models.Loading;
using static TorchSharp.torch;

namespace ZMagic.Models.Tests;

/// <summary>Bad checkpoints give clear exceptions naming the file and the problem, and never leave a half-loaded module in use.</summary>
public class LoadingErrorTests
{
    private static DdpmUNetConfig TinyDdpm => (DdpmUNetConfig)BackbonePresets.ConfigFromCase(TestPaths.DdpmTinyCase);
    private static AdmUNetConfig TinyAdm => (AdmUNetConfig)BackbonePresets.ConfigFromCase(TestPaths.AdmTinyCase);

    [Theory]
    [InlineData("weights.safetensors")]
    [InlineData("weights.pt")]
    public void Truncated_file_is_refused_with_its_name(string file)
    {
        using var tmp = new TestPaths.TempDir();
        var src = Path.Combine(TestPaths.AdmTinyCase, file);
        var bad = tmp.File("truncated_" + file);
        var bytes = File.ReadAllBytes(src);
        File.WriteAllBytes(bad, bytes[..(bytes.Length / 2)]);
        var ex = Assert.ThrowsAny<CheckpointFormatException>(() => AdmDenoiser.Load(bad, TinyAdm));
        Assert.Contains(bad, ex.Message);
    }

    [Fact]
    public void Corrupted_header_is_refused()
    {
        using var tmp = new TestPaths.TempDir();
        var bad = tmp.File("garbage.safetensors");
        var bytes = File.ReadAllBytes(TestPaths.DdpmTinyWeights);
        for (int i = 8; i < 64; i++) bytes[i] = (byte)'#';
        File.WriteAllBytes(bad, bytes);
        var ex = Assert.ThrowsAny<CheckpointFormatException>(() => DdpmDenoiser.Load(bad, TinyDdpm));
        Assert.Contains(bad, ex.Message);
    }

    [Fact]
    public void Header_that_lies_about_sizes_is_refused()
    {
        using var tmp = new TestPaths.TempDir();
        var bad = tmp.File("lying.safetensors");
        var header = "{\"conv_out.weight\":{\"dtype\":\"F32\",\"shape\":[3,32,3,3],\"data_offsets\":[0,1000000]}}";
        while ((8 + header.Length) % 8 != 0) header += " ";
        using (var fs = File.Create(bad))
        {
            fs.Write(BitConverter.GetBytes((ulong)header.Length));
            fs.Write(Encoding.UTF8.GetBytes(header));
            fs.Write(new byte[64]);
        }
        var ex = Assert.ThrowsAny<CheckpointFormatException>(() => DdpmDenoiser.Load(bad, TinyDdpm));
        Assert.Contains(bad, ex.Message);
    }

    [Fact]
    public void Pickle_with_a_forbidden_global_is_refused_before_it_runs()
    {
        using var tmp = new TestPaths.TempDir();
        var bad = tmp.File("evil.pt");
        var marker = tmp.File("pwned");
        using (var zip = ZipFile.Open(bad, ZipArchiveMode.Create))
        {
            var e = zip.CreateEntry("archive/data.pkl", CompressionLevel.NoCompression);
            using (var s = e.Open()) s.Write(Encoding.ASCII.GetBytes($"cos\nsystem\n(S'touch {marker}'\ntR."));
            var v = zip.CreateEntry("archive/version", CompressionLevel.NoCompression);
            using (var s = v.Open()) s.Write(Encoding.ASCII.GetBytes("3\n"));
        }
        var ex = Assert.ThrowsAny<CheckpointFormatException>(() => DdpmDenoiser.Load(bad, TinyDdpm));
        Assert.Contains("os", ex.Message);
        Assert.Contains("system", ex.Message);
        Assert.False(File.Exists(marker));
    }

    [Fact]
    public void Missing_file_names_the_path()
    {
        var ex = Assert.Throws<FileNotFoundException>(() => DdpmDenoiser.Load("/nonexistent/celeba_hq.ckpt", TinyDdpm));
        Assert.Contains("/nonexistent/celeba_hq.ckpt", ex.Message);
    }

    [Fact]
    public void Adm_weights_into_the_ddpm_list_the_keys_and_name_the_other_architecture()
    {
        var ex = Assert.Throws<BackboneCheckpointMismatchException>(() => DdpmDenoiser.Load(TestPaths.AdmTinyWeights, TinyDdpm));
        Assert.Contains(TestPaths.AdmTinyWeights, ex.Message);
        Assert.Contains("guided-diffusion", ex.Message);
        Assert.Contains("temb.dense.0.weight", ex.Report.Missing);
        Assert.Contains("input_blocks.0.0.weight", ex.Report.Unexpected);
        Assert.Contains("temb.dense.0.weight", ex.Message);
        Assert.Contains("input_blocks.0.0.weight", ex.Message);
    }

    [Fact]
    public void Ddpm_weights_into_the_adm_name_the_other_architecture()
    {
        var ex = Assert.Throws<BackboneCheckpointMismatchException>(() => AdmDenoiser.Load(TestPaths.DdpmTinyWeights, TinyAdm));
        Assert.Contains("ermongroup DDPM", ex.Message);
        Assert.Contains("time_embed.0.weight", ex.Report.Missing);
        Assert.Contains("conv_in.weight", ex.Report.Unexpected);
    }

    [Fact]
    public void Checkpoint_for_another_config_names_expected_and_actual_shapes()
    {
        // The tiny weights into a config with ch 64: same key set, every shape differs.
        var ex = Assert.Throws<BackboneCheckpointMismatchException>(() => DdpmDenoiser.Load(TestPaths.DdpmTinyWeights, TinyDdpm with { Ch = 64 }));
        var conv = ex.Report.ShapeMismatches.Single(m => m.Key == "conv_in.weight");
        Assert.Equal(new long[] { 64, 3, 3, 3 }, conv.Expected);
        Assert.Equal(new long[] { 32, 3, 3, 3 }, conv.Actual);
        Assert.Contains("conv_in.weight: expected [64, 3, 3, 3]", ex.Message);
        Assert.Contains("[32, 3, 3, 3]", ex.Message);
    }

    [Fact]
    public void Failed_load_leaves_the_module_untouched()
    {
        using var scope = torch.NewDisposeScope();
        using var d = DdpmDenoiser.Load(TestPaths.DdpmTinyWeights, TinyDdpm);
        var before = d.Module.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value.clone());
        var sd = SafeTensors.Load(TestPaths.DdpmTinyWeights);
        foreach (var k in sd.Keys.ToList()) sd[k] = sd[k] + 1;       // different values ...
        sd["conv_out.weight"] = torch.zeros(4, 32, 3, 3);            // ... and one wrong shape
        var ex = Assert.Throws<BackboneCheckpointMismatchException>(() => d.LoadStateDict(sd, "edited"));
        Assert.Contains("conv_out.weight", ex.Message);
        foreach (var (k, v) in d.Module.state_dict()) Assert.True(v.eq(before[k]).all().item<bool>(), $"{k} changed by a failed load");
    }

    [Fact]
    public void Fp16_checkpoint_is_cast_to_the_module_dtype()
    {
        using var scope = torch.NewDisposeScope();
        using var tmp = new TestPaths.TempDir();
        var sd = SafeTensors.Load(TestPaths.AdmTinyWeights);
        var half = sd.ToDictionary(kv => kv.Key, kv => kv.Key.StartsWith("input_blocks", StringComparison.Ordinal) ? kv.Value.to(ScalarType.Float16) : kv.Value);
        var path = tmp.File("fp16.safetensors");
        SafeTensors.Save(path, half);
        using var d = AdmDenoiser.Load(path, TinyAdm);
        Assert.Equal(ScalarType.Float32, d.DType);
        var loaded = d.Module.state_dict()["input_blocks.1.0.in_layers.2.weight"];
        Assert.Equal(ScalarType.Float32, loaded.dtype);
        Assert.True(loaded.eq(half["input_blocks.1.0.in_layers.2.weight"].to(ScalarType.Float32)).all().item<bool>());
    }

    [Fact]
    public void Wrong_input_shape_or_dtype_is_a_clear_argument_error()
    {
        using var scope = torch.NewDisposeScope();
        using var d = DdpmDenoiser.Load(TestPaths.DdpmTinyWeights, TinyDdpm);
        var ex1 = Assert.Throws<ArgumentException>(() => d.Forward(torch.zeros(1, 3, 32, 32), torch.zeros(1)));
        Assert.Contains("[B, 3, 16, 16]", ex1.Message);
        var ex2 = Assert.Throws<ArgumentException>(() => d.Forward(torch.zeros(1, 3, 16, 16, dtype: ScalarType.Float64), torch.zeros(1)));
        Assert.Contains("Float64", ex2.Message);
        var ex3 = Assert.Throws<ArgumentException>(() => d.Forward(torch.zeros(2, 3, 16, 16), torch.zeros(3)));
        Assert.Contains("[2]", ex3.Message);
        // a scalar t is broadcast to the batch
        using var noGrad = torch.no_grad();
        Assert.Equal(new long[] { 2, 3, 16, 16 }, d.Forward(torch.zeros(2, 3, 16, 16), torch.tensor(5f)).shape);
    }
}
