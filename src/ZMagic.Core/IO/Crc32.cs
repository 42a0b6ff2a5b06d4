namespace ZMagic.Core.IO;

/// <summary>CRC-32 (IEEE 802.3, as zip uses it), incremental. Table-driven, slicing by 4.</summary>
internal struct Crc32
{
    private static readonly uint[][] Tables = BuildTables();
    private uint _crc;

    public Crc32() => _crc = 0xFFFFFFFFu;

    public readonly uint Value => ~_crc;

    public void Append(ReadOnlySpan<byte> data)
    {
        uint crc = _crc;
        uint[] t0 = Tables[0], t1 = Tables[1], t2 = Tables[2], t3 = Tables[3];
        int i = 0;
        for (; i + 4 <= data.Length; i += 4)
        {
            crc ^= (uint)(data[i] | data[i + 1] << 8 | data[i + 2] << 16 | data[i + 3] << 24);
            crc = t3[crc & 0xFF] ^ t2[(crc >> 8) & 0xFF] ^ t1[(crc >> 16) & 0xFF] ^ t0[crc >> 24];
        }
        for (; i < data.Length; i++) crc = t0[(crc ^ data[i]) & 0xFF] ^ (crc >> 8);
        _crc = crc;
    }

    public static uint Compute(ReadOnlySpan<byte> data)
    {
        var c = new Crc32();
        c.Append(data);
        return c.Value;
    }

    private static uint[][] BuildTables()
    {
        var t = new uint[4][];
        for (int k = 0; k < 4; k++) t[k] = new uint[256];
        for (uint n = 0; n < 256; n++)
        {
            uint c = n;
            for (int k = 0; k < 8; k++) c = (c & 1) != 0 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
            t[0][n] = c;
        }
        for (int n = 0; n < 256; n++)
            for (int k = 1; k < 4; k++) t[k][n] = t[0][t[k - 1][n] & 0xFF] ^ (t[k - 1][n] >> 8);
        return t;
    }
}
