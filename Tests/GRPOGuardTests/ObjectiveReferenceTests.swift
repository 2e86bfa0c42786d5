import TestSupport
import Testing
import FlowMatching
import GRPOGuard
import TensorRuntime

/// Flow-GRPO and GRPO-Guard losses, gradients and diagnostics against torch float64 autograd.
@Suite struct ObjectiveReferenceTests {
    @Test func everyCaseMatches() throws {
        let reference = try ReferenceFile()
        var k = 0
        while reference.has("objective.\(k).params") {
            let name = "objective.\(k)"
            let p = try reference.doubles("\(name).params")
            let step = SDEStep(sigma: p[1], sigmaNext: p[2], noiseLevel: p[3], sigmaAtOne: p[4])
            let batch = StepBatch(step: step, next: try reference.tensor("\(name).next"),
                                  meanOld: try reference.tensor("\(name).mean_old"),
                                  logProbabilityOld: try reference.doubles("\(name).logp_old"),
                                  advantages: try reference.doubles("\(name).advantages"))
            let objective: any StepObjective
            switch Int(p[0]) {
            case 0: objective = VanillaObjective(clipRange: p[5], klCoefficient: p[6])
            case 1: objective = GuardObjective(clipRange: p[5], biasMode: .batch, reweights: p[7] == 1, klCoefficient: p[6])
            default: objective = GuardObjective(clipRange: p[5], biasMode: .perSample, reweights: p[7] == 1, klCoefficient: p[6])
            }
            let result = objective.evaluate(mean: try reference.tensor("\(name).mean"), batch: batch,
                                            referenceMean: try reference.tensor("\(name).mean_ref"))
            let loss = try reference.doubles("\(name).loss")
            #expect(isClose(result.loss, loss[0]), "\(name) loss \(result.loss) vs \(loss[0])")
            #expect(isClose(result.policyLoss, loss[1]), "\(name) policy loss")
            if p[6] != 0 { #expect(isClose(result.klLoss, loss[2]), "\(name) KL") }
            #expect(isClose(result.weight, loss[3], 1e-12), "\(name) weight")
            let grad = try reference.doubles("\(name).grad")
            let scale = max(grad.map(abs).max() ?? 1, 1e-300)
            #expect(maxError(result.meanGradient.map { $0 / scale }, grad.map { $0 / scale }) <= 1e-6, "\(name) gradient")
            #expect(result.shape == (try reference.shape("\(name).grad")))
            #expect(maxError(result.ratios, try reference.doubles("\(name).ratios")) <= 1e-6, "\(name) ratios")
            #expect(maxError(result.normalizedRatios, try reference.doubles("\(name).normalized_ratios")) <= 1e-6, "\(name) r̂")
            let d = try reference.doubles("\(name).diagnostics")
            let got = result.diagnostics
            let mine = [got.ratioMean, got.ratioStd, got.normalizedRatioMean, got.normalizedRatioStd,
                        got.clipFractionAbove, got.clipFractionBelow, got.approximateKL]
            #expect(maxError(mine, d) <= 1e-6, "\(name) diagnostics \(mine) vs \(d)")
            // Both clip sides are exercised by every case.
            #expect(got.clipFractionAbove > 0 && got.clipFractionBelow > 0, "\(name)")
            // The velocity seed is c_v times the mean gradient.
            let dv = result.velocityGradient(step: step)
            #expect(abs(Double(dv.scalars[0]) - step.meanVelocityCoefficient * result.meanGradient[0]) <= 1e-6 * max(1, abs(Double(dv.scalars[0]))))
            k += 1
        }
        #expect(k == 7)
    }
}
