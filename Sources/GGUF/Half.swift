import SafeTensors

/// IEEE half-precision conversions as numpy performs them (the arithmetic gguf-py relies on).
enum Half {
    /// half → float, exact (numpy `astype(np.float32)` of a float16): the format layer's conversion.
    @inline(__always)
    static func toFloat(_ h: UInt16) -> Float { FloatCodec.halfToFloat(h) }

    /// float → half as numpy's `astype(np.float16)`: round to nearest even, overflow to ±inf; a
    /// NaN keeps its sign and the top 10 bits of its payload (numpy's `npy_floatbits_to_halfbits`:
    /// a payload that would vanish becomes 1, so a NaN stays a NaN).
    @inline(__always)
    static func fromFloat(_ x: Float) -> UInt16 {
        let bits = x.bitPattern
        guard x.isNaN else { return FloatCodec.floatToHalf(x) }
        let sign = UInt16(truncatingIfNeeded: (bits >> 16) & 0x8000)
        var h = UInt16(0x7C00) + UInt16(truncatingIfNeeded: (bits & 0x007F_FFFF) >> 13)
        if h == 0x7C00 { h += 1 }
        return sign | h
    }
}
