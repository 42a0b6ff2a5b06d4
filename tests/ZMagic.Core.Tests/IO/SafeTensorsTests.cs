using System.Buffers.Binary;
using System.Text;
using TorchSharp;
using ZMagic.Core.IO;
using static TorchSharp.torch;

namespace ZMagic.Core.Tests.IO;

public class SafeTensorsTests
{
    private static string TempPath() => Path.Combine(Path.GetTempPath(), "zmagic-st-" + Guid.NewGuid().ToString("N") + ".safetensors");

    public static TheoryData<string> DTypes() => new() { "F32", "F16", "BF16", "F64", "I64", "I32", "I16", "I8", "U8", "BOOL" };

    private static Tensor Make(string dtype) => dtype switch
    {
        "F32" => torch.randn(3, 5, generator: new Generator(1)),
        "F16" => torch.randn(4, 2, generator: new Generator(2)).to(ScalarType.Float16),
        "BF16" => torch.randn(2, 3, 2, generator: new Generator(3)).to(ScalarType.BFloat16),
        "F64" => torch.randn(7, generator: new Generator(4), dtype: ScalarType.Float64),
        "I64" => torch.tensor(new long[] { long.MinValue, -1, 0, 1, long.MaxValue }),
        "I32" => torch.tensor(new[] { int.MinValue, -5, 0, int.MaxValue }).reshape(2, 2),
        "I16" => torch.tensor(new short[] { short.MinValue, 0, short.MaxValue }),
        "I8" => torch.tensor(new sbyte[] { sbyte.MinValue, -1, 0, sbyte.MaxValue }),
        "U8" => torch.tensor(new byte[] { 0, 1, 128, 255 }),
        "BOOL" => torch.tensor(new[] { true, false, false, true, true }),
        _ => throw new ArgumentException(dtype),
    };

    [Theory]
    [MemberData(nameof(DTypes))]
    public void RoundTripsEveryDType(string dtype)
    {
        var path = TempPath();
        try
        {
            var t = Make(dtype);
            var scalar = Make(dtype).flatten()[0].clone(); // 0-d tensor
            var sd = new Dictionary<string, Tensor> { ["x"] = t, ["scalar"] = scalar, ["empty"] = torch.empty(new long[] { 0, 2 }, t.dtype), ["view"] = t.flatten().flip(0) };
            SafeTensors.Save(path, sd, new Dictionary<string, string> { ["format"] = "pt" });
            var back = SafeTensors.Load(path);
            Assert.Equal(dtype, SafeTensors.ReadEntries(path).Single(e => e.Name == "x").DType);
            Assert.Equal("pt", SafeTensors.ReadMetadata(path)["format"]);
            foreach (var (k, v) in sd)
            {
                Assert.Equal(v.dtype, back[k].dtype);
                Assert.Equal(v.shape, back[k].shape);
                Assert.True(v.contiguous().bytes.SequenceEqual(back[k].bytes), k);
            }
            Assert.Empty(back["scalar"].shape);
        }
        finally { File.Delete(path); }
    }

    [Fact]
    public void HeaderIsPaddedToEightBytes()
    {
        var path = TempPath();
        try
        {
            SafeTensors.Save(path, new Dictionary<string, Tensor> { ["abc"] = torch.ones(3) });
            var n = BinaryPrimitives.ReadUInt64LittleEndian(File.ReadAllBytes(path).AsSpan(0, 8));
            Assert.Equal(0UL, (8 + n) % 8);
        }
        finally { File.Delete(path); }
    }

    /// <summary>A safetensors file with the given header JSON and data bytes.</summary>
    internal static byte[] Raw(string json, int dataBytes, ulong? claimedHeaderLength = null)
    {
        var j = Encoding.UTF8.GetBytes(json);
        var b = new byte[8 + j.Length + dataBytes];
        BinaryPrimitives.WriteUInt64LittleEndian(b, claimedHeaderLength ?? (ulong)j.Length);
        j.CopyTo(b, 8);
        return b;
    }

    public static TheoryData<string, string, int, string> LyingHeaders() => new()
    {
        { "offsets past end", """{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}""", 8, "outside" },
        { "terabyte tensor", """{"a":{"dtype":"F32","shape":[1000000,1000000],"data_offsets":[0,4000000000000]}}""", 16, "outside" },
        { "shape vs offsets", """{"a":{"dtype":"F32","shape":[1000000,1000000],"data_offsets":[0,16]}}""", 16, "needs" },
        { "overflowing shape", """{"a":{"dtype":"F64","shape":[4294967296,4294967296,4294967296],"data_offsets":[0,8]}}""", 16, "overflows" },
        { "overlapping", """{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}""", 16, "overlap" },
        { "non-object json", """[1,2,3]""", 0, "not a JSON object" },
        { "invalid json", """{"a": """, 0, "not valid JSON" },
        { "negative dim", """{"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}""", 4, "non-negative" },
        { "string offsets", """{"a":{"dtype":"F32","shape":[1],"data_offsets":["0","4"]}}""", 4, "outside" },
        { "unknown dtype", """{"a":{"dtype":"Q7","shape":[1],"data_offsets":[0,4]}}""", 4, "unsupported dtype" },
        { "missing fields", """{"a":{"dtype":"F32"}}""", 4, "needs dtype" },
        { "duplicate names", """{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}""", 2, "twice" },
        { "bad metadata", """{"__metadata__":[1]}""", 0, "__metadata__" },
    };

    [Theory]
    [MemberData(nameof(LyingHeaders))]
    public void LyingHeadersAreRefusedBeforeAllocation(string what, string json, int dataBytes, string expectedMessage)
    {
        var path = TempPath();
        try
        {
            File.WriteAllBytes(path, Raw(json, dataBytes));
            var ex = Assert.ThrowsAny<CheckpointFormatException>(() => SafeTensors.Load(path));
            Assert.Contains(expectedMessage, ex.Message);
            Assert.Contains(path, ex.Message);
            _ = what;
        }
        finally { File.Delete(path); }
    }

    [Theory]
    [InlineData(ulong.MaxValue)]
    [InlineData(200_000_000UL)]
    [InlineData(1UL << 40)]
    public void HugeHeaderLengthIsRefused(ulong claimed)
    {
        var path = TempPath();
        try
        {
            File.WriteAllBytes(path, Raw("{}", 0, claimed));
            Assert.Contains("header length", Assert.Throws<CheckpointFormatException>(() => SafeTensors.Load(path)).Message);
        }
        finally { File.Delete(path); }
    }

    [Fact]
    public void TruncatedFilesAreRefusedAtEveryLength()
    {
        var path = TempPath();
        try
        {
            SafeTensors.Save(path, new Dictionary<string, Tensor> { ["a"] = torch.ones(4, 4), ["b"] = torch.zeros(3, dtype: ScalarType.Int64) });
            var full = File.ReadAllBytes(path);
            for (int len = 0; len < full.Length; len++)
            {
                File.WriteAllBytes(path, full.AsSpan(0, len).ToArray());
                Assert.ThrowsAny<CheckpointFormatException>(() => SafeTensors.Load(path));
            }
        }
        finally { File.Delete(path); }
    }
}
