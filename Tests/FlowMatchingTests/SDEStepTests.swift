import TestSupport
import Foundation
import Testing
import FlowMatching
import TensorRuntime

/// SDE and ODE steps against the torch float64 reference, and the gradient of log p.
@Suite struct SDEStepTests {
    func cases() throws -> [(Int, SDEStep)] {
        let reference = try ReferenceFile()
        var result: [(Int, SDEStep)] = []
        var k = 0
        while reference.has("sde.\(k).params") {
            let p = try reference.doubles("sde.\(k).params")
            result.append((k, SDEStep(sigma: p[0], sigmaNext: p[1], noiseLevel: p[2], sigmaAtOne: p[3])))
            k += 1
        }
        return result
    }

    @Test func matchesReference() throws {
        let reference = try ReferenceFile()
        let all = try cases()
        #expect(all.count == 7)
        for (k, step) in all {
            let name = "sde.\(k)"
            let c = try reference.doubles("\(name).coefficients")
            #expect(isClose(step.dt, c[0], 1e-12) && isClose(step.standardDeviation, c[1], 1e-12) && isClose(step.noiseScale, c[2], 1e-12), "\(name)")
            #expect(isClose(step.meanXCoefficient, c[3], 1e-12) && isClose(step.meanVelocityCoefficient, c[4], 1e-12), "\(name)")
            let x = try reference.tensor("\(name).x"), v = try reference.tensor("\(name).v"), eps = try reference.tensor("\(name).eps")
            let sample = step.sample(x: x, velocity: v, noise: eps)
            #expect(maxError(sample.mean.scalars.map(Double.init), try reference.doubles("\(name).mean")) <= 1e-6, "\(name) mean")
            #expect(maxError(sample.next.scalars.map(Double.init), try reference.doubles("\(name).next")) <= 1e-6, "\(name) next")
            #expect(maxError(sample.logProbability, try reference.doubles("\(name).logp")) <= 1e-6, "\(name) log p")
            // Recomputing log p from the stored tensors gives the very same values.
            #expect(step.logProbability(next: sample.next, mean: sample.mean) == sample.logProbability)
            let gradient = step.logProbabilityGradient(next: sample.next, mean: sample.mean)
            let expectedGradient = try reference.doubles("\(name).dlogp_dmean")
            let scale = expectedGradient.map(abs).max() ?? 1
            #expect(maxError(gradient.scalars.map { Double($0) / scale }, expectedGradient.map { $0 / scale }) <= 1e-6, "\(name) ∂log p/∂μ")
            let ode = ODEStep.euler(x: x, velocity: v, dt: step.dt)
            #expect(maxError(ode.scalars.map(Double.init), try reference.doubles("\(name).ode_next")) <= 1e-6, "\(name) ODE")
        }
    }

    @Test func meanIsAffineInVelocity() {
        let step = SDEStep(sigma: 0.6, sigmaNext: 0.5, sigmaAtOne: 0.96)
        let x = Tensor(shape: [1, 3], scalars: [0.5, -1, 2])
        let v = Tensor(shape: [1, 3], scalars: [1, 0.25, -0.5])
        let mu = step.mean(x: x, velocity: v)
        for i in 0..<3 {
            let expected = step.meanXCoefficient * Double(x.scalars[i]) + step.meanVelocityCoefficient * Double(v.scalars[i])
            #expect(abs(Double(mu.scalars[i]) - expected) < 1e-6)
        }
        // c_v·dt-sign: the velocity coefficient carries dt (negative), so it must be negative.
        #expect(step.meanVelocityCoefficient < 0)
        let seed = Tensor(shape: [1, 3], scalars: [1, 2, 3])
        let dv = step.velocityGradient(fromMeanGradient: seed)
        #expect(abs(Double(dv.scalars[2]) - 3 * step.meanVelocityCoefficient) < 1e-6)
    }

    /// ∂log p/∂μ against central differences of log p (computed in Double from Float tensors,
    /// so steps are taken at Float-representable offsets).
    @Test func logProbabilityGradientMatchesFiniteDifferences() {
        let step = SDEStep(sigma: 0.4, sigmaNext: 0.3, sigmaAtOne: 0.96)
        var generator = GaussianGenerator(seed: 7)
        let next = generator.tensor(shape: [2, 5])
        let mean = generator.tensor(shape: [2, 5])
        let gradient = step.logProbabilityGradient(next: next, mean: mean)
        for i in [0, 3, 7, 9] {
            var plus = mean, minus = mean
            plus.scalars[i] += 1e-3
            minus.scalars[i] -= 1e-3
            let h = Double(plus.scalars[i]) - Double(minus.scalars[i])
            let b = i / 5
            let fd = (step.logProbability(next: next, mean: plus)[b] - step.logProbability(next: next, mean: minus)[b]) / h
            #expect(abs(fd - Double(gradient.scalars[i])) <= 1e-4 * max(1, abs(fd)), "element \(i): \(fd) vs \(gradient.scalars[i])")
            // The other sample's log p does not depend on this element.
            #expect(step.logProbability(next: next, mean: plus)[1 - b] == step.logProbability(next: next, mean: mean)[1 - b])
        }
    }

    @Test func logProbabilityOfExactNoiseIsGaussian() {
        // With x' = μ + s·ε the log-density is mean(−ε²/2) − log s − ½ log 2π.
        let step = SDEStep(sigma: 0.7, sigmaNext: 0.6, sigmaAtOne: 0.96)
        var generator = GaussianGenerator(seed: 3)
        let x = generator.tensor(shape: [3, 8]), v = generator.tensor(shape: [3, 8]), eps = generator.tensor(shape: [3, 8])
        let sample = step.sample(x: x, velocity: v, noise: eps)
        for b in 0..<3 {
            let e = eps.scalars[b * 8..<(b + 1) * 8].map(Double.init)
            let expected = -e.reduce(0) { $0 + $1 * $1 } / 16 - log(step.noiseScale) - 0.5 * log(2 * Double.pi)
            #expect(abs(sample.logProbability[b] - expected) < 1e-5)
        }
    }
}
