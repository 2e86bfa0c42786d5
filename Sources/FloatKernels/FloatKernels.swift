/// The format layer's bulk float conversions, kept apart so they alone are built `-Ounchecked`
/// (see `Package.swift` and `docs/architecture.md`): with overflow checks on, the index
/// arithmetic of these loops stops them from vectorising and a bf16 → fp16 conversion takes
/// about twice the CPU time. They are pure arithmetic over buffers whose sizes the callers in
/// `SafeTensors` (`FloatCodec`) have already checked; no parsing happens here, and nothing here
/// depends on the bytes' values for its memory accesses.
package enum FloatKernels {
    // MARK: scalars

    /// IEEE half → float, exact.
    @inline(__always)
    package static func halfToFloat(_ h: UInt16) -> Float {
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

    /// float → IEEE half, round to nearest even; overflow gives ±inf, NaN stays NaN.
    @inline(__always)
    package static func floatToHalf(_ x: Float) -> UInt16 {
        let bits = x.bitPattern
        let sign = UInt16(truncatingIfNeeded: (bits >> 16) & 0x8000)
        var a = bits & 0x7FFF_FFFF
        if a >= 0x7F80_0000 { return sign | (a > 0x7F80_0000 ? 0x7E00 : 0x7C00) }
        if a >= 0x477F_F000 { return sign | 0x7C00 }            // ≥ 65520 rounds to infinity
        if a < 0x3880_0000 {                                    // below 2^-14: subnormal half
            // Adding 0.5 makes the FPU round |x| to a multiple of 2^-24 (nearest even); the low
            // bits of the sum are then the half's subnormal mantissa (0x400 if it rounds up to normal).
            let sum = Float(bitPattern: a) + 0.5
            return sign | UInt16(truncatingIfNeeded: sum.bitPattern - 0x3F00_0000)
        }
        let odd = (a >> 13) & 1
        a = a &+ 0xC800_0FFF &+ odd                             // rebias 127→15 and round
        return sign | UInt16(truncatingIfNeeded: a >> 13)
    }

    /// float → bfloat16, round to nearest even; NaN stays a (quiet) NaN.
    @inline(__always)
    package static func floatToBFloat16(_ x: Float) -> UInt16 {
        let bits = x.bitPattern
        if bits & 0x7FFF_FFFF > 0x7F80_0000 { return UInt16(truncatingIfNeeded: bits >> 16) | 0x0040 }
        return UInt16(truncatingIfNeeded: (bits &+ 0x7FFF &+ ((bits >> 16) & 1)) >> 16)
    }

    // MARK: widening (stored little-endian → Float)
    // Invariant of every loop below: `src` holds `count` elements of the stored width and `dst`
    // has room for `count` floats (FloatCodec.decode checks both before calling).

    /// `count` little-endian F32 values → Float.
    package static func widenF32(_ src: UnsafeRawPointer, _ dst: UnsafeMutablePointer<Float>, count: Int) {
        for i in 0..<count { dst[i] = Float(bitPattern: UInt32(littleEndian: src.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self))) }
    }

    /// `count` little-endian BF16 values → Float (a 16-bit shift).
    package static func widenBF16(_ src: UnsafeRawPointer, _ dst: UnsafeMutablePointer<Float>, count: Int) {
        for i in 0..<count { dst[i] = Float(bitPattern: UInt32(UInt16(littleEndian: src.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))) << 16) }
    }

    /// `count` little-endian F16 values → Float, exact.
    package static func widenF16(_ src: UnsafeRawPointer, _ dst: UnsafeMutablePointer<Float>, count: Int) {
        for i in 0..<count { dst[i] = halfToFloat(UInt16(littleEndian: src.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))) }
    }

    /// `count` little-endian F64 values → Float (rounded to nearest even).
    package static func widenF64(_ src: UnsafeRawPointer, _ dst: UnsafeMutablePointer<Float>, count: Int) {
        for i in 0..<count { dst[i] = Float(Double(bitPattern: UInt64(littleEndian: src.loadUnaligned(fromByteOffset: 8 * i, as: UInt64.self)))) }
    }

    /// `count` one-byte codes → Float through a 256-entry table (the 8-bit float kinds).
    /// Invariant: `table` has 256 entries, so every byte value indexes inside it.
    package static func widenByTable(_ bytes: UnsafePointer<UInt8>, table: UnsafePointer<Float>, _ dst: UnsafeMutablePointer<Float>, count: Int) {
        for i in 0..<count { dst[i] = table[Int(bytes[i])] }
    }

    // MARK: narrowing (Float → stored little-endian)
    // Invariant: `src` holds `count` floats and `dst` has room for `count` stored elements.

    /// Float → `count` little-endian F32 values.
    package static func narrowF32(_ src: UnsafePointer<Float>, _ dst: UnsafeMutableRawPointer, count: Int) {
        for i in 0..<count { dst.storeBytes(of: src[i].bitPattern.littleEndian, toByteOffset: 4 * i, as: UInt32.self) }
    }

    /// Float → `count` little-endian F64 values (exact).
    package static func narrowF64(_ src: UnsafePointer<Float>, _ dst: UnsafeMutableRawPointer, count: Int) {
        for i in 0..<count { dst.storeBytes(of: Double(src[i]).bitPattern.littleEndian, toByteOffset: 8 * i, as: UInt64.self) }
    }

    /// Float → `count` little-endian BF16 values, round to nearest even.
    package static func narrowBF16(_ src: UnsafePointer<Float>, _ dst: UnsafeMutableRawPointer, count: Int) {
        for i in 0..<count { dst.storeBytes(of: floatToBFloat16(src[i]).littleEndian, toByteOffset: 2 * i, as: UInt16.self) }
    }

    /// Float → `count` little-endian F16 values, round to nearest even.
    package static func narrowF16(_ src: UnsafePointer<Float>, _ dst: UnsafeMutableRawPointer, count: Int) {
        for i in 0..<count { dst.storeBytes(of: floatToHalf(src[i]).littleEndian, toByteOffset: 2 * i, as: UInt16.self) }
    }
}
