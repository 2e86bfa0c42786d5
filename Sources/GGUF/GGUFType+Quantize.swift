import SafeTensors

/// Encoding of `Float` values as GGUF tensor bytes, byte for byte as gguf-py's
/// `gguf.quants.quantize` produces them (numpy float32 arithmetic; numpy's float → integer casts
/// as they behave on x86-64 and arm64 for the values that reach them).
extension GGUFType {
    /// Encodes `input` (a whole number of blocks) as this type into `output`, which must hold
    /// `byteCount(elements: input.count)` bytes. The type must be quantizable (`isQuantizable`).
    /// Returns how many input values were NaN or ±infinity: F32, F16 and BF16 keep them (F16 as
    /// numpy does), the block types write what gguf-py writes for them (±inf, and a single quiet
    /// NaN per block, byte for byte; with several or signalling NaNs in a block, numpy's SIMD
    /// reductions pick the NaN payload of the fp16 scale in ways not reproduced here). Such
    /// blocks decode to nothing meaningful, so callers should refuse input with non-finite values.
    @discardableResult
    public func quantize(_ input: UnsafeBufferPointer<Float>, into output: UnsafeMutableRawBufferPointer) -> Int {
        precondition(isQuantizable, "quantize: \(name) is not quantizable")
        let count = input.count
        precondition(count % blockSize == 0, "quantize: \(count) values is not a whole number of \(name) blocks")
        let blocks = count / blockSize
        precondition(output.count >= blocks * typeSize, "quantize: destination holds \(output.count) bytes, \(blocks) \(name) blocks need \(blocks * typeSize)")
        guard count > 0, let src = input.baseAddress, let dst = output.baseAddress else { return 0 }
        var nonFinite = 0
        for i in 0..<count where !src[i].isFinite { nonFinite += 1 }
        switch self {
        case .f32:
            for i in 0..<count { dst.storeBytes(of: src[i].bitPattern.littleEndian, toByteOffset: 4 * i, as: UInt32.self) }
        case .f16:
            for i in 0..<count { dst.storeBytes(of: Half.fromFloat(src[i]).littleEndian, toByteOffset: 2 * i, as: UInt16.self) }
        case .bf16:
            // gguf-py's BF16.quantize_blocks (ggml_compute_fp32_to_bf16): NaN made quiet, otherwise
            // round to nearest even; FloatCodec's conversion is the same function.
            for i in 0..<count { dst.storeBytes(of: FloatCodec.floatToBFloat16(src[i]).littleEndian, toByteOffset: 2 * i, as: UInt16.self) }
        default:
            let encodeBlock = Encoders.encoder(for: self)
            for b in 0..<blocks { encodeBlock(src + b * blockSize, dst + b * typeSize) }
        }
        return nonFinite
    }
}

/// One encoder per block type. Each reads exactly `blockSize` (32) values at `x` and writes
/// exactly `typeSize` bytes at `out`; `quantize` checked both sizes for every block.
private enum Encoders {
    typealias Encoder = (UnsafePointer<Float>, UnsafeMutableRawPointer) -> Void

    static func encoder(for type: GGUFType) -> Encoder {
        switch type {
        case .q8_0: return q8_0
        case .q4_0: return q4_0
        case .q4_1: return q4_1
        case .q5_0: return q5_0
        case .q5_1: return q5_1
        default: preconditionFailure("no block encoder for \(type.name)")
        }
    }

    /// numpy's float32 → int8/uint8 cast (`astype`) as the hardware does it: truncation toward
    /// zero to a 32-bit integer (NaN and values outside ±2^31 give −2^31), then the low 8 bits.
    /// Only NaN reaches this from gguf-py's quantizers with values out of range. The truncation
    /// is gguf-py's `trunc` before the cast too (no separate rounding call needed).
    @inline(__always)
    static func castByte(_ v: Float) -> UInt8 {
        guard v >= -2_147_483_648.0, v < 2_147_483_648.0 else { return 0 }
        return UInt8(truncatingIfNeeded: Int32(v))
    }

    /// gguf-py's `np_roundf`: round half away from zero, computed as numpy does
    /// (`sign(n) · (floor|n| + floor(2·(|n| − floor|n|)))`).
    @inline(__always)
    static func roundHalfAway(_ n: Float) -> Float {
        let a = abs(n)
        let floored = a.rounded(.down)
        let b = floored + (2 * (a - floored)).rounded(.down)
        let sign: Float = n.isNaN ? .nan : (n > 0 ? 1 : (n < 0 ? -1 : 0))
        return sign * b
    }

    /// The value of largest magnitude (numpy's `argmax` of `abs`: the first such value; the
    /// first NaN if there is one).
    @inline(__always)
    static func signedAbsMax(_ x: UnsafePointer<Float>) -> Float {
        var best = x[0]
        var bestAbs = abs(best)
        if bestAbs.isNaN { return best }
        for i in 1..<32 {
            let a = abs(x[i])
            if a.isNaN { return x[i] }
            if a > bestAbs { bestAbs = a; best = x[i] }
        }
        return best
    }

    /// The NaN numpy's `max`/`min` reductions return when a NaN is present, whatever its payload.
    static let reductionNaN = Float(bitPattern: 0x7FC0_0000)

    /// Largest and smallest value as numpy's `max`/`min` reductions give them: the canonical NaN
    /// if there is a NaN; among equal values (+0 and −0) the last one, which decides the sign of
    /// a zero scale.
    @inline(__always)
    static func maxMin(_ x: UnsafePointer<Float>) -> (max: Float, min: Float) {
        var hi = x[0], lo = x[0]
        if hi.isNaN { return (reductionNaN, reductionNaN) }
        for i in 1..<32 {
            let v = x[i]
            if v.isNaN { return (reductionNaN, reductionNaN) }
            if !(hi > v) { hi = v }
            if !(lo < v) { lo = v }
        }
        return (hi, lo)
    }

    /// `np.where(d == 0, 0, 1 / d)`.
    @inline(__always)
    static func inverse(_ d: Float) -> Float { d == 0 ? 0 : 1 / d }

    /// Stores the fp16 of `value` at byte `offset` of the block.
    @inline(__always)
    static func storeHalf(_ value: Float, _ out: UnsafeMutableRawPointer, _ offset: Int) {
        out.storeBytes(of: Half.fromFloat(value).littleEndian, toByteOffset: offset, as: UInt16.self)
    }

    /// Stores 32 codes as 16 bytes: value j in the low nibble of byte j, value j + 16 in the
    /// high nibble (bits above the nibble of the high value are dropped, as numpy's uint8 shift does).
    @inline(__always)
    static func storeNibbles(_ q: UnsafePointer<UInt8>, _ out: UnsafeMutableRawPointer, _ offset: Int) {
        for j in 0..<16 {
            out.storeBytes(of: (q[j] & 0x0F) | (q[j + 16] << 4), toByteOffset: offset + j, as: UInt8.self)
        }
    }

    /// Stores bit 4 of each of 32 codes as a little-endian u32 (numpy's `packbits(…, bitorder="little")`).
    @inline(__always)
    static func storeFifthBits(_ q: UnsafePointer<UInt8>, _ out: UnsafeMutableRawPointer, _ offset: Int) {
        var qh: UInt32 = 0
        for j in 0..<32 where q[j] >> 4 != 0 { qh |= 1 << UInt32(j) }
        out.storeBytes(of: qh.littleEndian, toByteOffset: offset, as: UInt32.self)
    }

    /// Q8_0: d = max|x| / 127, q = round-half-away(x · (1/d)).
    static func q8_0(_ x: UnsafePointer<Float>, _ out: UnsafeMutableRawPointer) {
        var amax: Float = 0
        for i in 0..<32 {
            let a = abs(x[i])
            if a.isNaN { amax = reductionNaN; break }
            if a > amax { amax = a }
        }
        let d = amax / 127
        let id = inverse(d)
        storeHalf(d, out, 0)
        guard amax.isFinite, id.isFinite else {
            for j in 0..<32 {
                out.storeBytes(of: castByte(roundHalfAway(x[j] * id)), toByteOffset: 2 + j, as: UInt8.self)
            }
            return
        }
        // Finite values and scale: |x · id| is at most about 127, where `roundHalfAway` is exact
        // in integers (floor of a non-negative value is truncation; floor(2 · fraction) is 0 or
        // 1), without a libm call per value.
        // The sign is applied with the sign bit (no branch on it: signs are random).
        for j in 0..<32 {
            let n = x[j] * id
            let a = abs(n)
            let whole = Int32(a)
            let up: Int32 = 2 * (a - Float(whole)) >= 1 ? 1 : 0
            let sign = Int32(bitPattern: n.bitPattern) >> 31
            let q = ((whole &+ up) ^ sign) &- sign
            out.storeBytes(of: UInt8(truncatingIfNeeded: q), toByteOffset: 2 + j, as: UInt8.self)
        }
    }

    /// Q4_0: d = (value of largest magnitude) / −8, q = min(trunc(x · (1/d) + 8.5), 15).
    static func q4_0(_ x: UnsafePointer<Float>, _ out: UnsafeMutableRawPointer) {
        let d = signedAbsMax(x) / -8
        let id = inverse(d)
        storeHalf(d, out, 0)
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 32) { q in
            for j in 0..<32 { q[j] = min(castByte(x[j] * id + 8.5), 15) }
            storeNibbles(UnsafePointer(q.baseAddress!), out, 2)
        }
    }

    /// Q4_1: d = (max − min) / 15, m = min, q = min(trunc((x − min) · (1/d) + 0.5), 15).
    static func q4_1(_ x: UnsafePointer<Float>, _ out: UnsafeMutableRawPointer) {
        let (hi, lo) = maxMin(x)
        let d = (hi - lo) / 15
        let id = inverse(d)
        storeHalf(d, out, 0)
        storeHalf(lo, out, 2)
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 32) { q in
            for j in 0..<32 { q[j] = min(castByte((x[j] - lo) * id + 0.5), 15) }
            storeNibbles(UnsafePointer(q.baseAddress!), out, 4)
        }
    }

    /// Q5_0: d = (value of largest magnitude) / −16, q = min(trunc(x · (1/d) + 16.5), 31).
    static func q5_0(_ x: UnsafePointer<Float>, _ out: UnsafeMutableRawPointer) {
        let d = signedAbsMax(x) / -16
        let id = inverse(d)
        storeHalf(d, out, 0)
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 32) { q in
            for j in 0..<32 { q[j] = min(castByte(x[j] * id + 16.5), 31) }
            let codes = UnsafePointer(q.baseAddress!)
            storeFifthBits(codes, out, 2)
            storeNibbles(codes, out, 6)
        }
    }

    /// Q5_1: d = (max − min) / 31, m = min, q = min(trunc((x − min) · (1/d) + 0.5), 31).
    static func q5_1(_ x: UnsafePointer<Float>, _ out: UnsafeMutableRawPointer) {
        let (hi, lo) = maxMin(x)
        let d = (hi - lo) / 31
        let id = inverse(d)
        storeHalf(d, out, 0)
        storeHalf(lo, out, 2)
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 32) { q in
            for j in 0..<32 { q[j] = min(castByte((x[j] - lo) * id + 0.5), 31) }
            let codes = UnsafePointer(q.baseAddress!)
            storeFifthBits(codes, out, 4)
            storeNibbles(codes, out, 8)
        }
    }
}
