import FloatKernels
/// Counts of values that could not be represented exactly in the target dtype's range.
public struct ConversionReport: Sendable, Hashable {
    /// Values whose magnitude exceeded the target's largest finite value (including ±inf) and
    /// were clamped to it, in formats that have no infinities (F8_E4M3, the FNUZ kinds, F6, F4).
    public var saturated: Int = 0
    /// NaNs written to a format that has no NaN (F6, F4); they become zero.
    public var nanReplaced: Int = 0
    /// Non-finite values written to F8_E8M0 (which has no zero): they become NaN (0xFF).
    public var unrepresentable: Int = 0

    /// Creates an empty report.
    public init() {}

    /// Adds another report's counts to this one.
    public mutating func merge(_ other: ConversionReport) {
        saturated += other.saturated
        nanReplaced += other.nanReplaced
        unrepresentable += other.unrepresentable
    }

    /// True when every value was represented without clamping or replacement.
    public var isClean: Bool { saturated == 0 && nanReplaced == 0 && unrepresentable == 0 }
}

/// Conversion of tensor bytes to and from `Float` for every dtype that holds numbers.
///
/// Widening is exact for every float kind except F64 (rounded to nearest even). Narrowing rounds
/// to nearest, ties to even; formats without infinities saturate at their largest finite value
/// and say so in the returned `ConversionReport`.
public enum FloatCodec {
    /// Whether `decode` accepts the dtype (every kind except C64).
    public static func canDecode(_ dtype: DType) -> Bool { dtype != .c64 }

    /// Whether `encode` accepts the dtype (the floating-point kinds).
    public static func canEncode(_ dtype: DType) -> Bool { dtype.isFloatingPoint }

    /// Widens `output.count` elements stored as `dtype` in `raw` to `Float`.
    /// `raw` must hold at least the bytes of that many elements.
    public static func decode(_ dtype: DType, from raw: UnsafeRawBufferPointer, into output: UnsafeMutableBufferPointer<Float>) {
        let count = output.count
        guard count > 0, let src = raw.baseAddress, let out = output.baseAddress else { return }
        precondition(dtype.byteCount(elements: count).map { $0 <= raw.count } ?? (raw.count * 8 >= count * dtype.bits),
                     "decode: source buffer too small")
        switch dtype {
        case .f32:
            FloatKernels.widenF32(src, out, count: count)
        case .bf16:
            FloatKernels.widenBF16(src, out, count: count)
        case .f16:
            FloatKernels.widenF16(src, out, count: count)
        case .f64:
            FloatKernels.widenF64(src, out, count: count)
        case .f8e4m3, .f8e5m2, .f8e4m3fnuz, .f8e5m2fnuz, .f8e8m0:
            let table = MiniFloat.table(for: dtype)
            let bytes = src.assumingMemoryBound(to: UInt8.self)
            precondition(table.count == 256, "decode: an 8-bit table has 256 entries")
            table.withUnsafeBufferPointer { t in FloatKernels.widenByTable(bytes, table: t.baseAddress!, out, count: count) }
        case .f4:
            let table = MiniFloat.table(for: dtype)
            let bytes = src.assumingMemoryBound(to: UInt8.self)
            for i in 0..<count {
                let byte = bytes[i >> 1]
                out[i] = table[Int(i & 1 == 0 ? byte & 0x0F : byte >> 4)]
            }
        case .f6e2m3, .f6e3m2:
            let table = MiniFloat.table(for: dtype)
            let bytes = src.assumingMemoryBound(to: UInt8.self)
            for i in 0..<count { out[i] = table[Int(sixBitCode(bytes, index: i))] }
        case .bool, .u8:
            let bytes = src.assumingMemoryBound(to: UInt8.self)
            for i in 0..<count { out[i] = Float(bytes[i]) }
        case .i8:
            for i in 0..<count { out[i] = Float(src.load(fromByteOffset: i, as: Int8.self)) }
        case .i16:
            for i in 0..<count { out[i] = Float(Int16(littleEndian: src.loadUnaligned(fromByteOffset: 2 * i, as: Int16.self))) }
        case .u16:
            for i in 0..<count { out[i] = Float(UInt16(littleEndian: src.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))) }
        case .i32:
            for i in 0..<count { out[i] = Float(Int32(littleEndian: src.loadUnaligned(fromByteOffset: 4 * i, as: Int32.self))) }
        case .u32:
            for i in 0..<count { out[i] = Float(UInt32(littleEndian: src.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self))) }
        case .i64:
            for i in 0..<count { out[i] = Float(Int64(littleEndian: src.loadUnaligned(fromByteOffset: 8 * i, as: Int64.self))) }
        case .u64:
            for i in 0..<count { out[i] = Float(UInt64(littleEndian: src.loadUnaligned(fromByteOffset: 8 * i, as: UInt64.self))) }
        case .c64:
            preconditionFailure("C64 cannot be decoded to Float; check canDecode first")
        }
    }

    /// Narrows `input` to `dtype`, writing the packed little-endian bytes to `raw` (which must
    /// hold them). Returns what had to be clamped or replaced.
    @discardableResult
    public static func encode(_ dtype: DType, from input: UnsafeBufferPointer<Float>, into raw: UnsafeMutableRawBufferPointer) -> ConversionReport {
        var report = ConversionReport()
        let count = input.count
        guard count > 0, let src = input.baseAddress, let dst = raw.baseAddress else { return report }
        precondition(canEncode(dtype), "encode: \(dtype.rawValue) is not a floating-point dtype")
        precondition(raw.count * 8 >= count * dtype.bits, "encode: destination buffer too small")
        switch dtype {
        case .f32:
            FloatKernels.narrowF32(src, dst, count: count)
        case .f64:
            FloatKernels.narrowF64(src, dst, count: count)
        case .bf16:
            FloatKernels.narrowBF16(src, dst, count: count)
        case .f16:
            FloatKernels.narrowF16(src, dst, count: count)
        case .f8e4m3, .f8e5m2, .f8e4m3fnuz, .f8e5m2fnuz, .f8e8m0:
            let format = MiniFloat.format(for: dtype)
            let bytes = dst.assumingMemoryBound(to: UInt8.self)
            for i in 0..<count { bytes[i] = UInt8(format.encode(src[i], report: &report)) }
        case .f4:
            let format = MiniFloat.format(for: dtype)
            let bytes = dst.assumingMemoryBound(to: UInt8.self)
            for i in 0..<count {
                let code = UInt8(format.encode(src[i], report: &report))
                if i & 1 == 0 { bytes[i >> 1] = code } else { bytes[i >> 1] |= code << 4 }
            }
        case .f6e2m3, .f6e3m2:
            let format = MiniFloat.format(for: dtype)
            let bytes = dst.assumingMemoryBound(to: UInt8.self)
            let byteCount = (count * 6 + 7) / 8
            for b in 0..<byteCount { bytes[b] = 0 }
            for i in 0..<count {
                let code = UInt32(format.encode(src[i], report: &report))
                let bit = i * 6
                let word = code << UInt32(bit & 7)
                bytes[bit >> 3] |= UInt8(truncatingIfNeeded: word)
                if (bit & 7) > 2 { bytes[(bit >> 3) + 1] |= UInt8(truncatingIfNeeded: word >> 8) }
            }
        default:
            break
        }
        return report
    }

    /// Converts `count` elements from one dtype to another through `Float`, in chunks, without
    /// allocating more than a small scratch buffer. Same-dtype conversion copies the bytes.
    @discardableResult
    public static func convert(count: Int, from source: DType, _ raw: UnsafeRawBufferPointer,
                               to target: DType, _ output: UnsafeMutableRawBufferPointer) -> ConversionReport {
        var report = ConversionReport()
        if source == target {
            if let dst = output.baseAddress, let src = raw.baseAddress, let n = source.byteCount(elements: count) {
                dst.copyMemory(from: src, byteCount: n)
            }
            return report
        }
        let chunk = 16_384
        // Sub-byte kinds only convert in chunks that start on a byte boundary: 16,384 elements
        // is a whole number of bytes for 4- and 6-bit kinds alike.
        withUnsafeTemporaryAllocation(of: Float.self, capacity: chunk) { scratch in
            var done = 0
            while done < count {
                let n = min(chunk, count - done)
                let inStart = done * source.bits / 8
                let outStart = done * target.bits / 8
                let part = UnsafeMutableBufferPointer(rebasing: scratch[0..<n])
                decode(source, from: UnsafeRawBufferPointer(rebasing: raw[inStart...]), into: part)
                report.merge(encode(target, from: UnsafeBufferPointer(part), into: UnsafeMutableRawBufferPointer(rebasing: output[outStart...])))
                done += n
            }
        }
        return report
    }

    /// IEEE half → float, exact.
    @inline(__always)
    public static func halfToFloat(_ h: UInt16) -> Float { FloatKernels.halfToFloat(h) }

    /// float → IEEE half, round to nearest even; overflow gives ±inf, NaN stays NaN.
    @inline(__always)
    public static func floatToHalf(_ x: Float) -> UInt16 { FloatKernels.floatToHalf(x) }

    /// float → bfloat16, round to nearest even; NaN stays a (quiet) NaN.
    @inline(__always)
    public static func floatToBFloat16(_ x: Float) -> UInt16 { FloatKernels.floatToBFloat16(x) }

    /// The 6-bit code of element `index` in a packed F6 buffer (element i at bits 6i..6i+5 of
    /// the little-endian bit stream).
    @inline(__always)
    static func sixBitCode(_ bytes: UnsafePointer<UInt8>, index: Int) -> UInt8 {
        let bit = index * 6
        var word = UInt32(bytes[bit >> 3])
        if (bit & 7) > 2 { word |= UInt32(bytes[(bit >> 3) + 1]) << 8 }
        return UInt8((word >> UInt32(bit & 7)) & 0x3F)
    }
}

/// Parameters of a small floating-point format: exponent and mantissa widths, bias, and how it
/// spends its special codes.
struct MiniFloat: Sendable {
    enum Specials: Sendable {
        /// All-ones exponent means infinity (mantissa 0) or NaN (IEEE style; F8_E5M2).
        case ieee
        /// Only all-ones exponent with all-ones mantissa is NaN; no infinities (F8_E4M3 "fn").
        case finiteWithNaN
        /// The negative-zero code 0x80 is the only NaN; no infinities, no −0 (the FNUZ kinds).
        case unsignedZeroNaN
        /// Every code is a finite number (F6, F4).
        case finiteOnly
    }
    let exponentBits: Int
    let mantissaBits: Int
    let bias: Int
    let specials: Specials

    static let e4m3 = MiniFloat(exponentBits: 4, mantissaBits: 3, bias: 7, specials: .finiteWithNaN)
    static let e5m2 = MiniFloat(exponentBits: 5, mantissaBits: 2, bias: 15, specials: .ieee)
    static let e4m3fnuz = MiniFloat(exponentBits: 4, mantissaBits: 3, bias: 8, specials: .unsignedZeroNaN)
    static let e5m2fnuz = MiniFloat(exponentBits: 5, mantissaBits: 2, bias: 16, specials: .unsignedZeroNaN)
    static let e2m3 = MiniFloat(exponentBits: 2, mantissaBits: 3, bias: 1, specials: .finiteOnly)
    static let e3m2 = MiniFloat(exponentBits: 3, mantissaBits: 2, bias: 3, specials: .finiteOnly)
    static let e2m1 = MiniFloat(exponentBits: 2, mantissaBits: 1, bias: 1, specials: .finiteOnly)

    static let tableE4M3 = e4m3.makeTable()
    static let tableE5M2 = e5m2.makeTable()
    static let tableE4M3FNUZ = e4m3fnuz.makeTable()
    static let tableE5M2FNUZ = e5m2fnuz.makeTable()
    static let tableE2M3 = e2m3.makeTable()
    static let tableE3M2 = e3m2.makeTable()
    static let tableE2M1 = e2m1.makeTable()
    /// F8_E8M0: an unsigned power of two 2^(code−127); 0xFF is NaN.
    static let tableE8M0: [Float] = (0..<256).map { $0 == 255 ? .nan : Float(sign: .plus, exponent: $0 - 127, significand: 1) }

    static func format(for dtype: DType) -> MiniFloat {
        switch dtype {
        case .f8e4m3: return e4m3
        case .f8e5m2: return e5m2
        case .f8e4m3fnuz: return e4m3fnuz
        case .f8e5m2fnuz: return e5m2fnuz
        case .f6e2m3: return e2m3
        case .f6e3m2: return e3m2
        case .f4: return e2m1
        case .f8e8m0: return MiniFloat(exponentBits: 8, mantissaBits: 0, bias: 127, specials: .finiteWithNaN)
        default: preconditionFailure("not a small float format: \(dtype)")
        }
    }

    static func table(for dtype: DType) -> [Float] {
        switch dtype {
        case .f8e4m3: return tableE4M3
        case .f8e5m2: return tableE5M2
        case .f8e4m3fnuz: return tableE4M3FNUZ
        case .f8e5m2fnuz: return tableE5M2FNUZ
        case .f8e8m0: return tableE8M0
        case .f6e2m3: return tableE2M3
        case .f6e3m2: return tableE3M2
        case .f4: return tableE2M1
        default: preconditionFailure("not a small float format: \(dtype)")
        }
    }

    var codeCount: Int { 1 << (1 + exponentBits + mantissaBits) }
    var signBit: UInt32 { 1 << UInt32(exponentBits + mantissaBits) }
    var maxExponentField: Int { (1 << exponentBits) - 1 }

    /// The value of every code.
    func makeTable() -> [Float] { (0..<codeCount).map { decode(UInt32($0)) } }

    func decode(_ code: UInt32) -> Float {
        let negative = code & signBit != 0
        let expField = Int((code >> UInt32(mantissaBits)) & UInt32(maxExponentField))
        let mantissa = Int(code & ((1 << UInt32(mantissaBits)) - 1))
        switch specials {
        case .ieee where expField == maxExponentField:
            return mantissa == 0 ? (negative ? -.infinity : .infinity) : .nan
        case .finiteWithNaN where expField == maxExponentField && mantissa == (1 << mantissaBits) - 1:
            return .nan
        case .unsignedZeroNaN where code == signBit:
            return .nan
        default: break
        }
        let magnitude: Float
        if expField == 0 {
            magnitude = Float(mantissa) * Float(sign: .plus, exponent: 1 - bias - mantissaBits, significand: 1)
        } else {
            magnitude = Float(mantissa + (1 << mantissaBits)) * Float(sign: .plus, exponent: expField - bias - mantissaBits, significand: 1)
        }
        return negative ? -magnitude : magnitude
    }

    /// Largest finite magnitude: exponent field and mantissa.
    var maxFinite: (exponentField: Int, mantissa: Int) {
        switch specials {
        case .ieee: return (maxExponentField - 1, (1 << mantissaBits) - 1)
        case .finiteWithNaN: return (maxExponentField, (1 << mantissaBits) - 2)
        case .unsignedZeroNaN, .finiteOnly: return (maxExponentField, (1 << mantissaBits) - 1)
        }
    }

    /// Encodes `x` with round-to-nearest-even, recording clamping in `report`.
    func encode(_ x: Float, report: inout ConversionReport) -> UInt32 {
        if mantissaBits == 0 { return encodeE8M0(x, report: &report) }
        let m = mantissaBits
        if x.isNaN {
            switch specials {
            case .ieee: return maxExponentFieldCode | (1 << UInt32(m - 1))
            case .finiteWithNaN: return maxExponentFieldCode | ((1 << UInt32(m)) - 1)
            case .unsignedZeroNaN: return signBit
            case .finiteOnly: report.nanReplaced += 1; return 0
            }
        }
        let negative = x.sign == .minus
        let a = abs(x)
        let (maxExp, maxMant) = maxFinite
        let maxCode = UInt32(maxExp) << UInt32(m) | UInt32(maxMant)
        func signed(_ magnitudeCode: UInt32) -> UInt32 {
            if magnitudeCode == 0 && specials == .unsignedZeroNaN { return 0 }
            return negative ? magnitudeCode | signBit : magnitudeCode
        }
        func overflow() -> UInt32 {
            if specials == .ieee { return signed(maxExponentFieldCode) }
            report.saturated += 1
            return signed(maxCode)
        }
        if a.isInfinite { return overflow() }
        let minNormalExponent = 1 - bias
        let e = a == 0 ? minNormalExponent : max(Int(a.exponent), minNormalExponent)
        let quantum = e - m
        // Scaling by a power of two is exact; the rounding below is the only rounding.
        let scaled = (a * Float(sign: .plus, exponent: -quantum, significand: 1)).rounded(.toNearestOrEven)
        var mantissa = Int(scaled)
        var expField: Int
        if mantissa < (1 << m) {
            expField = 0                                   // subnormal (or zero)
        } else {
            expField = e + bias
            if mantissa >= (1 << (m + 1)) { mantissa >>= 1; expField += 1 }
            mantissa -= 1 << m
        }
        if expField > maxExp || (expField == maxExp && mantissa > maxMant) { return overflow() }
        return signed(UInt32(expField) << UInt32(m) | UInt32(mantissa))
    }

    private var maxExponentFieldCode: UInt32 { UInt32(maxExponentField) << UInt32(mantissaBits) }

    /// F8_E8M0 holds 2^(code−127) for code 0…254: round to the nearest power of two in the
    /// log domain (ties up), clamp to the range; zero, negatives and non-finite values have no
    /// code and become NaN (counted).
    private func encodeE8M0(_ x: Float, report: inout ConversionReport) -> UInt32 {
        guard x.isFinite, x > 0 else {
            if !x.isNaN { report.unrepresentable += 1 }
            return 0xFF
        }
        var e = Int(x.exponent)
        // Between 2^e and 2^(e+1) the nearer power (by value) is 2^(e+1) when x ≥ 1.5·2^e.
        if x.significand >= 1.5 { e += 1 }
        if e < -127 { report.saturated += 1; return 0 }
        if e > 127 { report.saturated += 1; return 254 }
        return UInt32(e + 127)
    }
}
