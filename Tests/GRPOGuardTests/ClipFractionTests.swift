import Foundation
import Testing
import FlowMatching
import GRPOGuard
import TensorRuntime

/// The clip fractions split by advantage sign (`StepDiagnostics.clipFractionPositive`,
/// `.clipFractionNegative`): among A > 0 samples the share with ρ − 1 > ε, among A < 0 samples
/// the share with 1 − ρ > ε, 0 for an empty sign; and that the objectives pass their advantages in.
@Suite struct ClipFractionTests {
    static func diagnostics(_ ratios: [Double], _ advantages: [Double], clipRange: Double = 0.1) -> StepDiagnostics {
        let zeros = [Double](repeating: 0, count: ratios.count)
        return StepDiagnostics(logRatios: zeros, normalizedLogRatios: zeros, clippedRatios: ratios,
                               advantages: advantages, clipRange: clipRange)
    }

    /// Only positive-advantage samples lie above 1 + ε; the negative ones sit inside the range.
    @Test func onlyPositiveAdvantagesAboveTheUpperClip() {
        let d = Self.diagnostics([1.5, 1.2, 0.95, 1.0], [1, 2, -1, -1])
        #expect(d.clipFractionPositive == 1)
        #expect(d.clipFractionNegative == 0)
        #expect(d.clipFractionAbove == 0.5 && d.clipFractionBelow == 0)
        // The mirror image: only negative-advantage samples below 1 − ε.
        let m = Self.diagnostics([0.5, 0.8, 1.05, 1.0], [-1, -2, 1, 1])
        #expect(m.clipFractionPositive == 0 && m.clipFractionNegative == 1)
    }

    /// Without negative samples the negative fraction is 0 (not NaN), even though samples with
    /// A = 0 lie below 1 − ε: A = 0 counts in neither sign.
    @Test func noNegativeSamples() {
        let d = Self.diagnostics([0.5, 1.3, 1.0, 0.7], [1, 1, 0, 0])
        #expect(d.clipFractionPositive == 0.5)
        #expect(d.clipFractionNegative == 0)
        #expect(d.clipFractionBelow == 0.5)
        let none = Self.diagnostics([0.5, 1.5], [0, 0])
        #expect(none.clipFractionPositive == 0 && none.clipFractionNegative == 0)
        let empty = Self.diagnostics([], [])
        #expect(empty.clipFractionPositive == 0 && empty.clipFractionNegative == 0)
    }

    /// Mixed signs, with ratios on both sides for each sign and one A = 0 sample.
    ///   A > 0: ρ = 1.3 ✓, 1.05, 0.7, 1.25 ✓  → 2/4
    ///   A < 0: ρ = 0.8 ✓, 1.2, 0.85 ✓         → 2/3
    @Test func mixedSigns() {
        let ratios = [1.3, 1.05, 0.8, 0.7, 1.2, 0.85, 1.25, 0.5]
        let advantages = [2, 1, -1, 3, -2, -0.5, 0.5, 0]
        let d = Self.diagnostics(ratios, advantages)
        #expect(d.clipFractionPositive == 0.5)
        #expect(abs(d.clipFractionNegative - 2.0 / 3) < 1e-15)
        #expect(d.clipFractionAbove == 3.0 / 8 && d.clipFractionBelow == 0.5)
    }

    /// The inequalities are strict, like the unsigned fractions: ρ = 1 ± ε exactly is not clipped.
    @Test func boundaryIsNotClipped() {
        let d = Self.diagnostics([1.5, 0.5, 1.5, 0.5], [1, -1, -1, 1], clipRange: 0.5)
        #expect(d.clipFractionPositive == 0 && d.clipFractionNegative == 0)
        #expect(d.clipFractionAbove == 0 && d.clipFractionBelow == 0)
    }

    /// The fixture of `mixedSigns` tells the definition apart from its likely mutations: swapping
    /// the sign test, swapping the side tested, dividing by all samples, or counting A = 0 in.
    @Test func mutationsOfTheDefinitionGiveOtherValues() {
        let ratios = [1.3, 1.05, 0.8, 0.7, 1.2, 0.85, 1.25, 0.5]
        let advantages: [Double] = [2, 1, -1, 3, -2, -0.5, 0.5, 0]
        let e = 0.1
        func share(_ sample: (Double) -> Bool, _ clipped: (Double) -> Bool, allSamples: Bool = false) -> Double {
            let chosen = zip(ratios, advantages).filter { sample($0.1) }.map(\.0)
            let n = allSamples ? ratios.count : chosen.count
            return n == 0 ? 0 : Double(chosen.filter(clipped).count) / Double(n)
        }
        let above: (Double) -> Bool = { $0 - 1 > e }, below: (Double) -> Bool = { 1 - $0 > e }
        let d = Self.diagnostics(ratios, advantages, clipRange: e)
        // The definition itself.
        #expect(d.clipFractionPositive == share({ $0 > 0 }, above))
        #expect(d.clipFractionNegative == share({ $0 < 0 }, below))
        // Mutations, each of which the expectations in `mixedSigns` reject.
        let mutants: [(String, Double, Double)] = [
            ("swapped sign test", share({ $0 < 0 }, above), share({ $0 > 0 }, below)),
            ("swapped side", share({ $0 > 0 }, below), share({ $0 < 0 }, above)),
            ("all samples as denominator", share({ $0 > 0 }, above, allSamples: true), share({ $0 < 0 }, below, allSamples: true)),
            ("A = 0 counted", share({ $0 >= 0 }, above), share({ $0 <= 0 }, below)),
        ]
        for (name, positive, negative) in mutants {
            #expect(positive != d.clipFractionPositive && negative != d.clipFractionNegative, "\(name): \(positive), \(negative)")
        }
    }

    /// `average` carries the new fields (field-wise mean), and the memberwise init sets them.
    @Test func averageIncludesTheSignedFractions() {
        let a = StepDiagnostics(ratioMean: 1, ratioStd: 0, normalizedRatioMean: 1, normalizedRatioStd: 0, clipFractionAbove: 0,
                                clipFractionBelow: 0, clipFractionPositive: 0.5, clipFractionNegative: 0, approximateKL: 0)
        let b = StepDiagnostics(ratioMean: 1, ratioStd: 0, normalizedRatioMean: 1, normalizedRatioStd: 0, clipFractionAbove: 0,
                                clipFractionBelow: 0, clipFractionPositive: 0, clipFractionNegative: 0.25, approximateKL: 0)
        let m = StepDiagnostics.average([a, b])!
        #expect(m.clipFractionPositive == 0.25 && m.clipFractionNegative == 0.125)
        #expect(a != b)
    }

    /// A rollout step at σ = 0.5 with μ_θ = μ_old − s·z (z standard normal): the raw log-ratio's
    /// mean is about −½ (the −‖Δμ‖²/2s² term), far below −ε, so under Flow-GRPO every ratio lies
    /// below 1 − ε: no positive-advantage sample is clipped, every negative one is (design §6).
    /// RatioNorm re-centres r̂ on 1, so GRPO-Guard clips on both sides. Also checks each objective
    /// measures on the ratio it clips, split by the batch's own advantages.
    @Test func objectivesSplitTheirClippedRatioByTheBatchAdvantages() {
        let step = SDEStep(sigma: 0.5, sigmaNext: 0.4, sigmaAtOne: 0.96)
        var generator = GaussianGenerator(seed: 77)
        let b = 64, elements = 128
        let x = generator.tensor(shape: [b, elements]), v = generator.tensor(shape: [b, elements])
        let sample = step.sample(x: x, velocity: v, generator: &generator)
        let advantages: [Double] = (0..<b).map { i in
            let size: Double = 1 + Double(i) / 100
            return i % 2 == 0 ? size : -size
        }
        let batch = StepBatch(step: step, next: sample.next, meanOld: sample.mean, logProbabilityOld: sample.logProbability,
                              advantages: advantages)
        var mean = batch.meanOld
        for i in 0..<mean.count { mean.scalars[i] -= Float(step.noiseScale * generator.next()) }

        func expected(_ ratios: [Double], _ e: Double) -> (Double, Double) {
            var positive = 0, positiveClipped = 0, negative = 0, negativeClipped = 0
            for (r, a) in zip(ratios, advantages) {
                if a > 0 { positive += 1; if r - 1 > e { positiveClipped += 1 } }
                if a < 0 { negative += 1; if 1 - r > e { negativeClipped += 1 } }
            }
            return (Double(positiveClipped) / Double(positive), Double(negativeClipped) / Double(negative))
        }
        let vanilla = VanillaObjective().evaluate(mean: mean, batch: batch, referenceMean: nil)
        #expect(vanilla.diagnostics.clipFractionPositive == 0)
        #expect(vanilla.diagnostics.clipFractionNegative == 1)
        #expect(vanilla.diagnostics.clipFractionPositive == expected(vanilla.ratios, 1e-4).0)

        let guarded = GuardObjective().evaluate(mean: mean, batch: batch, referenceMean: nil)
        let (p, n) = expected(guarded.normalizedRatios, 2e-6)
        #expect(guarded.diagnostics.clipFractionPositive == p && guarded.diagnostics.clipFractionNegative == n)
        #expect(p > 0.2 && p < 0.8 && n > 0.2 && n < 0.8, "r̂ clips on both sides: \(p), \(n)")
    }
}
