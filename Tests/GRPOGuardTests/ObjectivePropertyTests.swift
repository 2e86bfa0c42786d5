import TestSupport
import Foundation
import Testing
import FlowMatching
import GRPOGuard
import TensorRuntime

/// Properties of the objectives that a sign error would break.
@Suite struct ObjectivePropertyTests {
    /// A rollout batch at `step`: μ_old random, x' = μ_old + s·ε, log p_old from the stored tensors.
    func rollout(step: SDEStep, batch: Int, elements: Int, seed: UInt64, advantages: [Double]? = nil) -> (StepBatch, GaussianGenerator) {
        var generator = GaussianGenerator(seed: seed)
        let x = generator.tensor(shape: [batch, elements])
        let v = generator.tensor(shape: [batch, elements])
        let sample = step.sample(x: x, velocity: v, generator: &generator)
        let a = advantages ?? (0..<batch).map { _ in generator.next() }
        return (StepBatch(step: step, next: sample.next, meanOld: sample.mean,
                          logProbabilityOld: sample.logProbability, advantages: a), generator)
    }

    /// μ_θ = μ_old − Δ with Δ = `scale`·s·(fixed normal draws).
    func perturbed(_ batch: StepBatch, scale: Double, generator: inout GaussianGenerator) -> Tensor {
        let s = batch.step.noiseScale
        var mean = batch.meanOld
        for i in 0..<mean.count { mean.scalars[i] -= Float(scale * s * generator.next()) }
        return mean
    }

    @Test func onPolicyRatiosAreExactlyOne() {
        let step = FlowMatchSchedule(steps: 10, shift: 3).sdeStep(at: 4)
        let (batch, _) = rollout(step: step, batch: 6, elements: 32, seed: 11)
        let objectives: [any StepObjective] = [VanillaObjective(), GuardObjective(), GuardObjective(biasMode: .perSample)]
        for objective in objectives {
            let result = objective.evaluate(mean: batch.meanOld, batch: batch, referenceMean: nil)
            #expect(result.ratios.allSatisfy { $0 == 1 })
            #expect(result.normalizedRatios.allSatisfy { $0 == 1 })
            #expect(result.diagnostics.clipFractionAbove == 0 && result.diagnostics.clipFractionBelow == 0)
            #expect(result.diagnostics.clipFractionPositive == 0 && result.diagnostics.clipFractionNegative == 0)
            #expect(result.diagnostics.approximateKL == 0)
        }
        // Recomputing μ from the same x and v reproduces μ_old bit for bit, so the trainer's
        // first pass is on-policy exactly.
        var generator = GaussianGenerator(seed: 11)
        let x = generator.tensor(shape: [6, 32]), v = generator.tensor(shape: [6, 32])
        #expect(step.mean(x: x, velocity: v) == batch.meanOld)
    }

    /// After a fixed perturbation of μ_θ the raw log-ratio is biased negative (−‖Δ‖²/(2s²) on
    /// average), while RatioNorm's log r̂ = −mean(Δ·ε) is centred on 0. With Δ = 0.5·s the flipped
    /// bias sign would shift log r̂ by −Δ²/s = −0.25·s, far outside the tolerance used here.
    @Test func ratioNormCentresTheLogRatio() {
        for sigma in [0.9, 0.5, 0.1] {
            let step = SDEStep(sigma: sigma, sigmaNext: sigma - 0.05, sigmaAtOne: 0.96)
            var (batch, generator) = rollout(step: step, batch: 2000, elements: 16, seed: 2024)
            let mean = perturbed(batch, scale: 0.5, generator: &generator)
            batch.advantages = [Double](repeating: 0, count: 2000)
            for mode in RatioBiasMode.allCases {
                let result = GuardObjective(biasMode: mode).evaluate(mean: mean, batch: batch, referenceMean: nil)
                let logR = result.ratios.map { log($0) }
                let logRHat = result.normalizedRatios.map { log($0) }
                let meanLogR = logR.reduce(0, +) / 2000
                let meanLogRHat = logRHat.reduce(0, +) / 2000
                let s = step.noiseScale
                // Expected raw mean: −mean(Δ²)/(2s²) ≈ −0.125; its noise is tiny in comparison.
                #expect(meanLogR < -0.1 && meanLogR > -0.15, "σ \(sigma): mean log r = \(meanLogR)")
                // Standard error of mean log r̂: 0.5·s/√(16·2000) ≈ 0.003·s; allow ~3.5·SE, while the
                // flipped sign would sit at −0.25·s.
                #expect(abs(meanLogRHat) < 0.01 * s, "σ \(sigma) \(mode): mean log r̂ = \(meanLogRHat), s = \(s)")
                #expect(result.diagnostics.ratioMean < 0.9)
                #expect(abs(result.diagnostics.normalizedRatioMean - 1) < 0.01 * s)
            }
        }
    }

    @Test func gradientsMatchCentralDifferences() {
        let step = SDEStep(sigma: 0.5, sigmaNext: 0.4, sigmaAtOne: 0.96)
        var (batch, generator) = rollout(step: step, batch: 5, elements: 6, seed: 99)
        batch.advantages = [1.5, -0.7, 2.0, -1.2, 0.3]
        let mean = perturbed(batch, scale: 0.3, generator: &generator)
        let referenceMean = perturbed(batch, scale: 0.4, generator: &generator)
        let objectives: [(String, any StepObjective)] = [
            ("vanilla", VanillaObjective(clipRange: 0.5)),
            ("vanilla+KL", VanillaObjective(clipRange: 0.5, klCoefficient: 0.04)),
            ("guard batch", GuardObjective(clipRange: 0.5, biasMode: .batch)),
            ("guard per-sample", GuardObjective(clipRange: 0.5, biasMode: .perSample, klCoefficient: 0.01)),
            ("vanilla clipping", VanillaObjective(clipRange: 0.01)),
            ("guard clipping", GuardObjective(clipRange: 0.002)),
        ]
        for (label, objective) in objectives {
            let result = objective.evaluate(mean: mean, batch: batch, referenceMean: referenceMean)
            var checked = 0
            for i in 0..<mean.count {
                var plus = mean, minus = mean
                plus.scalars[i] += 2e-3
                minus.scalars[i] -= 2e-3
                let h = Double(plus.scalars[i]) - Double(minus.scalars[i])
                let lp = objective.evaluate(mean: plus, batch: batch, referenceMean: referenceMean)
                let lm = objective.evaluate(mean: minus, batch: batch, referenceMean: referenceMean)
                // Skip elements whose perturbation moves some ratio across a clip boundary (a kink).
                let kink = [lp, lm].contains {
                    $0.diagnostics.clipFractionAbove != result.diagnostics.clipFractionAbove
                        || $0.diagnostics.clipFractionBelow != result.diagnostics.clipFractionBelow
                }
                if kink { continue }
                let fd = (lp.loss - lm.loss) / h
                let scale = max(result.meanGradient.map(abs).max()!, 1e-12)
                #expect(abs(fd - result.meanGradient[i]) <= 2e-4 * scale, "\(label) element \(i): fd \(fd) vs \(result.meanGradient[i])")
                checked += 1
            }
            #expect(checked > mean.count / 2, "\(label): only \(checked) elements checked")
        }
    }

    /// δ = 1/|dt|: at |dt| = 0.1 the reweighted loss and gradient are 10× the plain ones
    /// (|dt| instead would give 0.1×).
    @Test func reweightingDividesByTheStepSize() {
        let step = SDEStep(sigma: 0.5, sigmaNext: 0.4, sigmaAtOne: 0.96)
        var (batch, generator) = rollout(step: step, batch: 4, elements: 8, seed: 5)
        batch.advantages = [1, -1, 0.5, 2]
        let mean = perturbed(batch, scale: 0.2, generator: &generator)
        let weighted = GuardObjective(clipRange: 0.5).evaluate(mean: mean, batch: batch, referenceMean: nil)
        let plain = GuardObjective(clipRange: 0.5, reweights: false).evaluate(mean: mean, batch: batch, referenceMean: nil)
        #expect(abs(weighted.weight - 10) < 1e-9 && plain.weight == 1)
        #expect(abs(weighted.loss - 10 * plain.loss) <= 1e-12 * max(1, abs(plain.loss)) * 10)
        #expect(abs(weighted.policyLoss - plain.policyLoss) < 1e-15)
        for i in 0..<mean.count { #expect(abs(weighted.meanGradient[i] - 10 * plain.meanGradient[i]) <= 1e-9 * max(1, abs(weighted.meanGradient[i]))) }
        // Flow-GRPO does not reweight unless asked ("reweighting only" ablation): then the same 10×.
        let vanilla = VanillaObjective(clipRange: 0.5).evaluate(mean: mean, batch: batch, referenceMean: nil)
        let vanillaWeighted = VanillaObjective(clipRange: 0.5, reweights: true).evaluate(mean: mean, batch: batch, referenceMean: nil)
        #expect(vanilla.weight == 1 && abs(vanillaWeighted.weight - 10) < 1e-9)
        #expect(abs(vanillaWeighted.loss - 10 * vanilla.loss) <= 1e-12 * max(1, abs(vanilla.loss)) * 10)
        for i in 0..<mean.count {
            #expect(abs(vanillaWeighted.meanGradient[i] - 10 * vanilla.meanGradient[i]) <= 1e-9 * max(1, abs(vanillaWeighted.meanGradient[i])))
        }
    }

    /// The config's reweighting defaults to the objective's own choice and can be set either way.
    @Test func reweightingFollowsTheObjectiveUnlessSet() {
        var config = TrainingConfig()
        config.objective = .grpoGuard
        #expect((config.stepObjective as? GuardObjective)?.reweights == true)
        config.objective = .flowGRPO
        #expect((config.stepObjective as? VanillaObjective)?.reweights == false)
        config.reweighting = true
        #expect((config.stepObjective as? VanillaObjective)?.reweights == true)
        config.objective = .grpoGuard
        config.reweighting = false
        #expect((config.stepObjective as? GuardObjective)?.reweights == false)
    }

    /// PPO clipping: a positive advantage stops gaining above 1+ε, a negative one below 1−ε;
    /// on the other sides the unclipped term (and its gradient) stays.
    @Test func clippingActsOnTheRightSide() {
        let e = 0.1
        // r above 1+ε.
        let aboveGood = ClippedSurrogate.evaluate(ratio: 1.3, advantage: 2, clipRange: e)
        #expect(abs(aboveGood.loss - (-2 * 1.1)) < 1e-12 && aboveGood.derivative == 0)
        let aboveBad = ClippedSurrogate.evaluate(ratio: 1.3, advantage: -2, clipRange: e)
        #expect(abs(aboveBad.loss - 2.6) < 1e-12 && aboveBad.derivative == 2)
        // r below 1−ε.
        let belowGood = ClippedSurrogate.evaluate(ratio: 0.7, advantage: 2, clipRange: e)
        #expect(abs(belowGood.loss - (-1.4)) < 1e-12 && belowGood.derivative == -2)
        let belowBad = ClippedSurrogate.evaluate(ratio: 0.7, advantage: -2, clipRange: e)
        #expect(abs(belowBad.loss - 0.9 * 2) < 1e-12 && belowBad.derivative == 0)
        // Inside the range the surrogate is −A·r.
        let inside = ClippedSurrogate.evaluate(ratio: 1.05, advantage: 3, clipRange: e)
        #expect(abs(inside.loss + 3.15) < 1e-12 && inside.derivative == -3)
    }

    /// Clip fractions count each side separately, on the ratio the objective clips.
    @Test func clipFractionsAreSided() {
        let d = StepDiagnostics(logRatios: [0, 0, 0, 0], normalizedLogRatios: [0, 0, 0, 0],
                                clippedRatios: [1.2, 1.05, 0.5, 0.95], advantages: [1, 1, 1, 1], clipRange: 0.1)
        #expect(d.clipFractionAbove == 0.25 && d.clipFractionBelow == 0.25)
        let k = StepDiagnostics(logRatios: [0.2, -0.2], normalizedLogRatios: [0, 0], clippedRatios: [1, 1], advantages: [1, -1], clipRange: 0.1)
        #expect(abs(k.approximateKL - 0.02) < 1e-15)
        #expect(abs(k.ratioMean - (exp(0.2) + exp(-0.2)) / 2) < 1e-15)
        #expect(k.normalizedRatioMean == 1 && k.normalizedRatioStd == 0)
    }

    /// The guard's bias carries gradient (the official code does not detach it): with a zero
    /// advantage on every sample but one, the batch-mode gradient still reaches the other samples.
    @Test func batchBiasGradientReachesEverySample() {
        let step = SDEStep(sigma: 0.5, sigmaNext: 0.4, sigmaAtOne: 0.96)
        var (batch, generator) = rollout(step: step, batch: 3, elements: 4, seed: 8)
        batch.advantages = [1, 0, 0]
        let mean = perturbed(batch, scale: 0.2, generator: &generator)
        let shared = GuardObjective(clipRange: 1).evaluate(mean: mean, batch: batch, referenceMean: nil)
        let own = GuardObjective(clipRange: 1, biasMode: .perSample).evaluate(mean: mean, batch: batch, referenceMean: nil)
        #expect(shared.meanGradient[4..<12].contains { $0 != 0 })
        #expect(own.meanGradient[4..<12].allSatisfy { $0 == 0 })
    }
}
