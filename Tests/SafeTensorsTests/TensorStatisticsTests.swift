import Testing
import SafeTensors
import TestSupport

/// Streamed statistics against a direct computation over all values at once.
@Suite struct TensorStatisticsTests {
    /// Mean and population std of the finite values, computed directly in Double (two passes).
    static func direct(_ values: [Float]) -> (min: Float, max: Float, mean: Double, std: Double, nan: Int, pos: Int, neg: Int, zeros: Int) {
        let finite = values.filter(\.isFinite)
        let mean = finite.reduce(0.0) { $0 + Double($1) } / Double(finite.count)
        let variance = finite.reduce(0.0) { $0 + (Double($1) - mean) * (Double($1) - mean) } / Double(finite.count)
        return (finite.min()!, finite.max()!, mean, variance.squareRoot(), values.filter(\.isNaN).count,
                values.filter { $0 == .infinity }.count, values.filter { $0 == -.infinity }.count, values.filter { $0 == 0 }.count)
    }

    /// Values with NaN, ±Inf and zeros mixed in, as the dtype would store them.
    static func sample(_ count: Int, seed: UInt64, special: Bool) -> [Float] {
        var rng = SeededGenerator(seed: seed)
        var values = (0..<count).map { _ in Float.random(in: -3...5, using: &rng) }
        if special && count > 10 {
            values[1] = .nan; values[3] = .infinity; values[4] = -.infinity; values[5] = 0; values[count - 1] = .nan
        }
        return values
    }

    func writeAndRead(_ values: [Float], dtype: DType, dir: TemporaryDirectory) throws -> (TensorStatistics, [Float]) {
        let path = dir.file("\(dtype.rawValue).safetensors")
        try SafeTensorsWriter.write(to: path, specs: [TensorSpec(name: "t", dtype: dtype, shape: [values.count])]) { sink in
            try sink.write(floats: values)
        }
        let file = try SafeTensorsFile(path: path)
        let stored = try file.floats(of: "t")
        return (try file.statistics(of: file.info("t"), chunkElements: 1000), stored)
    }

    @Test(arguments: [DType.f32, .bf16, .f16, .f8e5m2, .f8e4m3, .f64])
    func matchesDirectComputation(dtype: DType) throws {
        let dir = TemporaryDirectory()
        let special = dtype != .f8e4m3   // E4M3 has no infinities (they saturate)
        let (stats, stored) = try writeAndRead(Self.sample(5_003, seed: 11, special: special), dtype: dtype, dir: dir)
        let expected = Self.direct(stored)
        #expect(stats.count == 5_003)
        #expect(stats.min == expected.min && stats.max == expected.max)
        #expect(abs(stats.mean! - expected.mean) <= 1e-12 * max(1, abs(expected.mean)))
        #expect(abs(stats.std! - expected.std) <= 1e-12 * expected.std)
        #expect(stats.nanCount == expected.nan && stats.positiveInfinityCount == expected.pos && stats.negativeInfinityCount == expected.neg)
        #expect(stats.zeroCount == expected.zeros)
        #expect(stats.finiteCount == 5_003 - expected.nan - expected.pos - expected.neg)
        if special { #expect(stats.nanCount == 2 && stats.infinityCount == 2) }
    }

    @Test func integerDTypes() throws {
        let bytes: [UInt8] = [0xFF, 0xFF, 0xFF, 0xFF, 2, 0, 0, 0, 0, 0, 0, 0]   // I32: -1, 2, 0
        let stats = bytes.withUnsafeBytes { TensorStatistics.compute(.i32, count: 3, from: $0) }!
        #expect(stats.min == -1 && stats.max == 2 && stats.mean == 1.0 / 3 && stats.zeroCount == 1)
        #expect(TensorStatistics.compute(.c64, count: 1, from: UnsafeRawBufferPointer(start: nil, count: 0)) == nil)
    }

    @Test func subByteKindsAcrossChunks() throws {
        // F4: two values per byte; chunks of 8 elements must start on byte boundaries.
        var rng = SeededGenerator(seed: 3)
        let bytes = (0..<1_001).map { _ in UInt8.random(in: 0...255, using: &rng) }
        for dtype in [DType.f4, .f6e2m3] {
            let count = bytes.count * 8 / dtype.bits
            var all = [Float](repeating: 0, count: count)
            bytes.withUnsafeBytes { raw in all.withUnsafeMutableBufferPointer { FloatCodec.decode(dtype, from: raw, into: $0) } }
            let streamed = bytes.withUnsafeBytes { TensorStatistics.compute(dtype, count: count, from: $0, chunkElements: 24) }!
            #expect(streamed.count == count && streamed.zeroCount == TensorStatistics(values: all).zeroCount)
            let expected = Self.direct(all)
            #expect(streamed.min == expected.min && streamed.max == expected.max)
            #expect(abs(streamed.std! - expected.std) < 1e-12)
        }
    }

    @Test func largerThanOneChunk() throws {
        // 200,003 elements: three full 64K chunks and a ragged tail; a large offset tests stability.
        let dir = TemporaryDirectory()
        let values = Self.sample(200_003, seed: 5, special: true).map { $0.isFinite ? $0 + 1000 : $0 }
        let path = dir.file("big.safetensors")
        try SafeTensorsWriter.write(to: path, specs: [TensorSpec(name: "w", dtype: .f32, shape: [200_003])]) { try $0.write(floats: values) }
        let file = try SafeTensorsFile(path: path)
        let stats = try file.statistics(of: file.info("w"))
        let expected = Self.direct(values)
        #expect(stats.count == 200_003 && stats.nanCount == 2 && stats.infinityCount == 2)
        #expect(abs(stats.mean! - expected.mean) < 1e-9 && abs(stats.std! - expected.std) < 1e-9)
        #expect(stats.min == expected.min && stats.max == expected.max)
    }

    @Test func wholeCollectionWithProgressAndASkippedTensor() throws {
        let dir = TemporaryDirectory()
        let path = dir.file("mixed.safetensors")
        try SafeTensorsWriter.write(to: path, tensors: [
            (TensorSpec(name: "a", dtype: .f32, shape: [2]), [0, 0, 0xC0, 0x7F, 0, 0, 0x80, 0x3F]),   // NaN, 1
            (TensorSpec(name: "c", dtype: .c64, shape: [1]), [UInt8](repeating: 0, count: 8)),
        ])
        var calls: [(Int, Int)] = []
        let stats = try TensorCollection(path: path).statistics { calls.append(($0, $1)) }
        #expect(stats.tensors.map(\.name) == ["c", "a"])
        #expect(stats.tensors[0].statistics == nil && stats.tensors[0].note?.contains("C64") == true)
        #expect(stats.tensors[1].statistics?.nanCount == 1 && stats.tensors[1].statistics?.mean == 1)
        #expect(stats.nanCount == 1 && stats.skippedCount == 1)
        #expect(calls.last.map { $0 == (16, 16) } == true)
    }

    @Test func allNonFiniteHasNoMoments() {
        let stats = TensorStatistics(values: [.nan, .infinity])
        #expect(stats.min == nil && stats.mean == nil && stats.std == nil && stats.finiteCount == 0)
    }
}
