import SafeTensors

/// IEEE half-precision conversions as numpy performs them (the arithmetic gguf-py relies on).
enum Half {
    /// half → float, exact (numpy `astype(np.float32)` of a float16).
    @inline(__always)
    static func toFloat(_ h: UInt16) -> Float {
        let sign = UInt32(h & 0x8000) << 16
        let exponent = UInt32(h >> 10) & 0x1F
        let mantissa = UInt32(h) & 0x3FF
        if exponent == 0 {
            // Zero or subnormal: mantissa × 2^-24, exact in Float.
            let magnitude = Float(mantissa) * 0x1p-24
            return Float(bitPattern: magnitude.bitPattern | sign)
        }
        if exponent == 31 { return Float(bitPattern: sign | 0x7F80_0000 | (mantissa << 13)) }
        return Float(bitPattern: sign | ((exponent + 112) << 23) | (mantissa << 13))
    }

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
