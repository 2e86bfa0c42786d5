import Testing
import SafeTensors
import TestSupport

/// Conversions between every float dtype and Float32, checked against an independent oracle:
/// the exhaustive table of each format's values, searched for the nearest value (ties to the
/// even code), and Swift's own `Float16` for half precision.
@Suite struct FloatCodecTests {
    static let smallFloats: [DType] = [.f8e4m3, .f8e5m2, .f8e4m3fnuz, .f8e5m2fnuz, .f6e2m3, .f6e3m2, .f4]

    /// Packs `codes` of a small format into bytes, the way the file stores them.
    static func pack(_ codes: [UInt32], _ dtype: DType) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: (codes.count * dtype.bits + 7) / 8)
        for (i, code) in codes.enumerated() {
            let bit = i * dtype.bits
            let word = code << UInt32(bit % 8)
            bytes[bit / 8] |= UInt8(truncatingIfNeeded: word)
            if bit % 8 + dtype.bits > 8 { bytes[bit / 8 + 1] |= UInt8(truncatingIfNeeded: word >> 8) }
        }
        return bytes
    }

    static func decode(_ dtype: DType, _ bytes: [UInt8], count: Int) -> [Float] {
        var out = [Float](repeating: 0, count: count)
        bytes.withUnsafeBytes { raw in out.withUnsafeMutableBufferPointer { FloatCodec.decode(dtype, from: raw, into: $0) } }
        return out
    }

    static func encode(_ dtype: DType, _ values: [Float]) -> ([UInt8], ConversionReport) {
        var bytes = [UInt8](repeating: 0, count: (values.count * dtype.bits + 7) / 8)
        let report = values.withUnsafeBufferPointer { v in bytes.withUnsafeMutableBytes { FloatCodec.encode(dtype, from: v, into: $0) } }
        return (bytes, report)
    }

    /// Every code's value, from the format's definition (sign, exponent, mantissa, bias).
    static func definitionValue(_ dtype: DType, _ code: UInt32) -> Float {
        let (e, m, bias): (Int, Int, Int) = switch dtype {
        case .f8e4m3: (4, 3, 7)
        case .f8e5m2: (5, 2, 15)
        case .f8e4m3fnuz: (4, 3, 8)
        case .f8e5m2fnuz: (5, 2, 16)
        case .f6e2m3: (2, 3, 1)
        case .f6e3m2: (3, 2, 3)
        default: (2, 1, 1)
        }
        let sign: Float = (code >> UInt32(e + m)) & 1 == 1 ? -1 : 1
        let ef = Int(code >> UInt32(m)) & ((1 << e) - 1)
        let mf = Int(code) & ((1 << m) - 1)
        if dtype == .f8e5m2 && ef == 31 { return mf == 0 ? sign * .infinity : .nan }
        if dtype == .f8e4m3 && ef == 15 && mf == 7 { return .nan }
        if (dtype == .f8e4m3fnuz || dtype == .f8e5m2fnuz) && code == 0x80 { return .nan }
        if ef == 0 { return sign * Float(mf) * Float(sign: .plus, exponent: 1 - bias - m, significand: 1) }
        return sign * (1 + Float(mf) / Float(1 << m)) * Float(sign: .plus, exponent: ef - bias, significand: 1)
    }

    @Test(arguments: smallFloats)
    func decodeMatchesDefinition(dtype: DType) {
        let count = 1 << dtype.bits
        let codes = (0..<count).map(UInt32.init)
        let values = Self.decode(dtype, Self.pack(codes, dtype), count: count)
        for (code, value) in zip(codes, values) {
            let expected = Self.definitionValue(dtype, code)
            #expect(value.bitPattern == expected.bitPattern || (value.isNaN && expected.isNaN), "\(dtype) code \(code)")
        }
    }

    @Test(arguments: smallFloats)
    func encodeRoundsToNearestEvenAndSaturates(dtype: DType) {
        let count = 1 << dtype.bits
        let table = (0..<count).map { Self.definitionValue(dtype, UInt32($0)) }
        let finite = table.enumerated().filter { $0.element.isFinite }
        let maxFinite = finite.map(\.element).max()!
        var rng = SeededGenerator(seed: 7)
        var probes: [Float] = table.filter(\.isFinite)
        // Midpoints (ties) between neighbours, and random values across the whole range.
        let sorted = Array(Set(probes)).sorted()
        for (a, b) in zip(sorted, sorted.dropFirst()) { probes.append((a + b) / 2) }
        for _ in 0..<4000 { probes.append(Float.random(in: -1.2 * maxFinite...1.2 * maxFinite, using: &rng)) }
        probes += [.infinity, -.infinity, maxFinite * 4, 1e-30, -1e-30, 0, -0.0]
        let (bytes, report) = Self.encode(dtype, probes)
        let decoded = Self.decode(dtype, bytes, count: probes.count)
        var expectedSaturated = 0
        for (x, got) in zip(probes, decoded) {
            // Oracle: nearest finite value; ties go to the code with an even mantissa.
            var best = finite[0]
            for candidate in finite {
                let d = abs(candidate.element - x), bd = abs(best.element - x)
                if d < bd || (d == bd && candidate.offset & 1 == 0 && best.offset & 1 == 1) { best = candidate }
            }
            var expected = best.element
            let maxCode = finite.filter { $0.element == maxFinite }.first!.offset
            let ulpAtMax = maxFinite - finite.map(\.element).filter { $0 < maxFinite }.max()!
            if abs(x) > maxFinite {
                if dtype == .f8e5m2 {
                    // IEEE-style: beyond max + half an ulp rounds to infinity.
                    expected = abs(x) >= maxFinite + ulpAtMax / 2 && !(abs(x) == maxFinite + ulpAtMax / 2 && maxCode & 1 == 1) ? (x < 0 ? -.infinity : .infinity) : (x < 0 ? -maxFinite : maxFinite)
                } else {
                    expected = x < 0 ? -maxFinite : maxFinite
                    // Saturation is counted when the value would round past the largest finite.
                    if abs(x) > maxFinite + ulpAtMax / 2 || (abs(x) == maxFinite + ulpAtMax / 2 && maxCode & 1 == 1) || abs(x).isInfinite { expectedSaturated += 1 }
                }
            }
            #expect(got == expected || (got == 0 && expected == 0), "\(dtype): \(x) → \(got), expected \(expected)")
        }
        if dtype != .f8e5m2 { #expect(report.saturated == expectedSaturated) }
    }

    @Test func e4m3KnownValues() {
        let (bytes, report) = Self.encode(.f8e4m3, [448, 449, 500, 1e6, -1e6, .nan, 0.001953125, 1, -2.5])
        #expect(bytes == [0x7E, 0x7E, 0x7E, 0x7E, 0xFE, 0x7F, 0x01, 0x38, 0xC2])
        #expect(report.saturated == 3)
    }

    @Test func halfMatchesSwiftFloat16() {
        // Every half value widens exactly and narrows back to itself.
        let codes = (0..<65536).map { UInt16($0) }
        let bytes = codes.flatMap { withUnsafeBytes(of: $0.littleEndian, Array.init) }
        let values = Self.decode(.f16, bytes, count: codes.count)
        for (code, value) in zip(codes, values) {
            let swift = Float(Float16(bitPattern: code))
            #expect(value.bitPattern == swift.bitPattern || (value.isNaN && swift.isNaN))
            if !value.isNaN { #expect(FloatCodec.floatToHalf(value) == code) }
        }
        // Narrowing rounds to nearest even exactly as Float16(Float) does, subnormals included.
        var rng = SeededGenerator(seed: 3)
        for _ in 0..<200_000 {
            let x = Float(bitPattern: UInt32.random(in: 0...UInt32.max, using: &rng))
            let expected = Float16(x).bitPattern
            let got = FloatCodec.floatToHalf(x)
            if x.isNaN { #expect(Float16(bitPattern: got).isNaN) } else { #expect(got == expected, "\(x)") }
        }
        for x: Float in [65504, 65519.99, 65520, 1e-8, 2.98e-8, 5.96e-8, 6.1e-5, -0.0] {
            #expect(FloatCodec.floatToHalf(x) == Float16(x).bitPattern)
        }
    }

    @Test func bfloat16RoundsToNearestEven() {
        var rng = SeededGenerator(seed: 5)
        for _ in 0..<200_000 {
            let x = Float(bitPattern: UInt32.random(in: 0...UInt32.max, using: &rng))
            let got = FloatCodec.floatToBFloat16(x)
            let back = Float(bitPattern: UInt32(got) << 16)
            if x.isNaN { #expect(back.isNaN); continue }
            // Oracle: the two bf16 neighbours of x, chosen by distance in Double, ties to even.
            let bits = x.bitPattern
            let down = Float(bitPattern: bits & 0xFFFF_0000)
            let upBits = (bits & 0xFFFF_0000) &+ 0x1_0000
            let up = Float(bitPattern: upBits)
            let dd = abs(Double(x) - Double(down)), du = abs(Double(up) - Double(x))
            let expected: Float = dd < du ? down : du < dd ? up : ((bits >> 16) & 1 == 0 ? down : up)
            #expect(back.bitPattern == expected.bitPattern || (back == expected))
        }
    }

    @Test func convertBetweenDTypesInChunks() {
        // 40,000 values cross the 16,384-element chunk boundary twice.
        var rng = SeededGenerator(seed: 9)
        let values = (0..<40_000).map { _ in Float.random(in: -300...300, using: &rng) }
        for (source, target) in [(DType.f32, DType.bf16), (.bf16, .f16), (.f16, .f8e4m3), (.f32, .f4), (.f32, .f6e3m2), (.f64, .f32)] {
            let (sourceBytes, _) = Self.encode(source, values)
            let sourceValues = Self.decode(source, sourceBytes, count: values.count)
            var out = [UInt8](repeating: 0, count: target.byteCount(elements: values.count)!)
            sourceBytes.withUnsafeBytes { raw in out.withUnsafeMutableBytes { _ = FloatCodec.convert(count: values.count, from: source, raw, to: target, $0) } }
            let (direct, _) = Self.encode(target, sourceValues)
            #expect(out == direct, "\(source) → \(target)")
        }
    }

    @Test func e8m0PowersOfTwo() {
        let (bytes, report) = Self.encode(.f8e8m0, [1, 2, 0.5, 3, 2.9, 0, -1, .nan])  // 2.9 is nearer 2 than 4; 3 is the tie, rounded up
        #expect(Array(bytes.prefix(5)) == [127, 128, 126, 129, 128])
        #expect(bytes[5] == 0xFF && bytes[6] == 0xFF && bytes[7] == 0xFF)
        #expect(report.unrepresentable == 2)
        let decoded = Self.decode(.f8e8m0, [0, 127, 254], count: 3)
        #expect(decoded == [Float(sign: .plus, exponent: -127, significand: 1), 1, Float(sign: .plus, exponent: 127, significand: 1)])
    }
}
