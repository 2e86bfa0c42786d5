import Foundation
import GRPOGuard
import JSON
import Testing
import TestSupport

/// `SampleQuantiles` (the per-timestep ratio quantiles the trainer logs) against a reference
/// computed from the sorted array, and through the log's JSON line.
@Suite struct SampleQuantilesTests {
    /// The reference: the type-7 quantile written out from the sorted values by rank.
    static func reference(_ values: [Double], _ p: Double) -> Double {
        let x = values.sorted()
        let rank = p * Double(x.count - 1)
        let below = Int(Foundation.floor(rank)), above = Int(Foundation.ceil(rank))
        return x[below] * (1 - (rank - Double(below))) + x[above] * (rank - Double(below))
    }

    @Test func matchesNumpysDefaultOnSmallArrays() throws {
        // numpy.quantile([3, 1, 4, 2], [0.05, 0.25, 0.5, 0.75, 0.95]) = [1.15, 1.75, 2.5, 3.25, 3.85]
        let q = try #require(SampleQuantiles(of: [3, 1, 4, 2]))
        for (got, want) in zip(q.values, [1.15, 1.75, 2.5, 3.25, 3.85]) { #expect(abs(got - want) < 1e-12) }
        #expect(SampleQuantiles(of: [7])?.values == [7, 7, 7, 7, 7])
        #expect(SampleQuantiles(of: []) == nil)
        let two = try #require(SampleQuantiles(of: [2, 1]))
        #expect(two.low == 1.05 && two.median == 1.5 && abs(two.high - 1.95) < 1e-15)
    }

    @Test func matchesTheSortedArrayReference() throws {
        var generator = SeededGenerator(seed: 16)
        for n in [2, 3, 5, 8, 16, 24, 97] {
            let values = (0..<n).map { _ in 1 + 1e-3 * (Double(generator.next() % 2001) - 1000) / 1000 }
            let q = try #require(SampleQuantiles(of: values))
            for (level, got) in zip(SampleQuantiles.levels, q.values) {
                #expect(abs(got - Self.reference(values, level)) < 1e-15, "n = \(n), level \(level)")
            }
            #expect(zip(q.values, q.values.dropFirst()).allSatisfy { $0 <= $1 })
            #expect(q.low >= values.min()! && q.high <= values.max()!)
        }
    }

    @Test func roundTripsThroughTheDiagnosticsLine() throws {
        let d = StepDiagnostics(logRatios: [-1e-4, 0, -3e-4, -2e-4], normalizedLogRatios: [1e-6, -1e-6, 0, 2e-6],
                                clippedRatios: [1, 1, 1, 1], advantages: [1, -1, 1, -1], clipRange: 1e-4)
        let raw = SampleQuantiles(of: [-1e-4, 0, -3e-4, -2e-4].map { exp($0) })
        let record = UpdateRecord(step: 1, update: 1, optimizerStep: 2, rewardMean: 0, rewardStd: 0, loss: 0, learningRate: 1e-4, gradientNorm: 0,
                                  timesteps: [TimestepRecord(index: 0, sigma: 1, diagnostics: d, gradientNorm: 0, loss: 0,
                                                             ratioQuantiles: raw, normalizedRatioQuantiles: SampleQuantiles(of: [1, 2, 3]))],
                                  seconds: 0)
        let item = try #require(record.json["timesteps"]?.arrayValue?.first)
        #expect(item["ratio_quantiles"]?.arrayValue?.compactMap(\.doubleValue) == raw?.values)
        #expect(item["normalized_ratio_quantiles"]?.arrayValue?.compactMap(\.doubleValue) == [1.1, 1.5, 2, 2.5, 2.9])
        // The raw median lies below 1 as the ratios do.
        #expect(try #require(raw).median < 1)
        // Records without quantiles write no such field.
        let plain = UpdateRecord(step: 1, update: 0, optimizerStep: 1, rewardMean: 0, rewardStd: 0, loss: 0, learningRate: 0, gradientNorm: 0,
                                 timesteps: [TimestepRecord(index: 0, sigma: 1, diagnostics: d, gradientNorm: 0, loss: 0)], seconds: 0)
        #expect(plain.json["timesteps"]?.arrayValue?.first?["ratio_quantiles"] == nil)
    }
}
