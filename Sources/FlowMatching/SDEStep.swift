import Foundation
import TensorRuntime

/// One stochastic step of the Flow-GRPO reverse SDE, from noise level σ to σ' < σ, with the
/// Gaussian transition density needed for policy-gradient training (design §6):
///
///     std = a·√(σ / (1 − σ))        (σ = 1 uses σ_1 of the schedule in the denominator)
///     μ   = x·(1 + std²·dt/(2σ)) + v·(1 + std²·(1 − σ)/(2σ))·dt,   dt = σ' − σ
///     x'  = μ + s·ε,   s = std·√(−dt),   ε ~ N(0, I)
///     log p(x' | x) = mean over a sample's elements of −(x' − μ)²/(2s²) − log s − ½·log 2π
///
/// Tensors are batched along their first dimension; log-probabilities come back one per sample.
/// Arithmetic is done in `Double`; tensors are rounded to `Float` once, when they are returned.
/// μ is an affine function of the velocity (`meanXCoefficient`, `meanVelocityCoefficient`), so a
/// trainer turns ∂L/∂μ into ∂L/∂v with `velocityGradient(fromMeanGradient:)`.
public struct SDEStep: Sendable, Equatable {
    /// The noise level a used by Flow-GRPO and GRPO-Guard (0.7).
    public static let defaultNoiseLevel = 0.7

    /// The current noise level σ (0 < σ ≤ 1).
    public let sigma: Double
    /// The next noise level σ' (0 ≤ σ' < σ).
    public let sigmaNext: Double
    /// The noise level a.
    public let noiseLevel: Double
    /// The signed step dt = σ' − σ (negative).
    public let dt: Double
    /// std = a·√(σ/(1 − σ)), the SDE's diffusion coefficient at σ.
    public let standardDeviation: Double
    /// s = std·√(−dt), the standard deviation of x' around μ.
    public let noiseScale: Double
    /// c_x in μ = c_x·x + c_v·v: 1 + std²·dt/(2σ).
    public let meanXCoefficient: Double
    /// c_v in μ = c_x·x + c_v·v: (1 + std²·(1 − σ)/(2σ))·dt.
    public let meanVelocityCoefficient: Double

    /// The step from `sigma` to `sigmaNext` at noise level `noiseLevel`. `sigmaAtOne` is the σ
    /// substituted in the denominator 1 − σ when σ = 1 (the schedule's σ_1; flow_grpo uses
    /// `scheduler.sigmas[1]`); it is ignored for σ < 1.
    public init(sigma: Double, sigmaNext: Double, noiseLevel: Double = SDEStep.defaultNoiseLevel, sigmaAtOne: Double) {
        precondition(sigma > 0 && sigma <= 1, "SDEStep: σ must lie in (0, 1], got \(sigma)")
        precondition(sigmaNext >= 0 && sigmaNext < sigma, "SDEStep: σ' must lie in [0, σ), got \(sigmaNext) for σ = \(sigma)")
        precondition(noiseLevel >= 0, "SDEStep: the noise level must not be negative, got \(noiseLevel)")
        let denominatorSigma = sigma >= 1 ? sigmaAtOne : sigma
        precondition(denominatorSigma < 1, "SDEStep: σ = 1 needs a substitute σ_1 < 1, got \(sigmaAtOne)")
        self.sigma = sigma
        self.sigmaNext = sigmaNext
        self.noiseLevel = noiseLevel
        dt = sigmaNext - sigma
        standardDeviation = noiseLevel * (sigma / (1 - denominatorSigma)).squareRoot()
        noiseScale = standardDeviation * (-dt).squareRoot()
        let variance = standardDeviation * standardDeviation
        meanXCoefficient = 1 + variance * dt / (2 * sigma)
        meanVelocityCoefficient = (1 + variance * (1 - sigma) / (2 * sigma)) * dt
    }

    /// μ = c_x·x + c_v·v, rounded to `Float`. `x` and `velocity` must have the same shape.
    public func mean(x: Tensor, velocity: Tensor) -> Tensor {
        precondition(x.shape == velocity.shape, "SDEStep.mean: x \(x.shape) and velocity \(velocity.shape) differ")
        let cx = meanXCoefficient, cv = meanVelocityCoefficient
        var out = [Float](repeating: 0, count: x.count)
        x.scalars.withUnsafeBufferPointer { xs in
            velocity.scalars.withUnsafeBufferPointer { vs in
                for i in 0..<out.count { out[i] = Float(cx * Double(xs[i]) + cv * Double(vs[i])) }
            }
        }
        return Tensor(shape: x.shape, scalars: out)
    }

    /// Takes the step with the given standard-normal `noise` ε (same shape as `x`):
    /// μ is rounded to `Float` first, then x' = μ + s·ε is rounded to `Float`, and log p is
    /// evaluated on these stored `Float` values — exactly what a later `logProbability(next:mean:)`
    /// on the same tensors returns, so on-policy ratios are exactly 1.
    public func sample(x: Tensor, velocity: Tensor, noise: Tensor) -> SDESample {
        precondition(noise.shape == x.shape, "SDEStep.sample: noise \(noise.shape) and x \(x.shape) differ")
        let mu = mean(x: x, velocity: velocity)
        let s = noiseScale
        var next = [Float](repeating: 0, count: x.count)
        mu.scalars.withUnsafeBufferPointer { ms in
            noise.scalars.withUnsafeBufferPointer { es in
                for i in 0..<next.count { next[i] = Float(Double(ms[i]) + s * Double(es[i])) }
            }
        }
        let nextTensor = Tensor(shape: x.shape, scalars: next)
        return SDESample(mean: mu, next: nextTensor, logProbability: logProbability(next: nextTensor, mean: mu))
    }

    /// Takes the step with noise drawn from `generator` (row-major order, one draw per element).
    public func sample(x: Tensor, velocity: Tensor, generator: inout GaussianGenerator) -> SDESample {
        sample(x: x, velocity: velocity, noise: generator.tensor(shape: x.shape))
    }

    /// log p(x' | μ) per sample: the mean over each sample's elements of
    /// −(x' − μ)²/(2s²) − log s − ½·log 2π. `next` and `mean` have the same shape, batch first.
    public func logProbability(next: Tensor, mean: Tensor) -> [Double] {
        let (batch, elements) = Self.batchLayout(next, mean, "logProbability")
        let s = noiseScale
        let constant = -Foundation.log(s) - 0.5 * Foundation.log(2 * Double.pi)
        var result = [Double](repeating: 0, count: batch)
        next.scalars.withUnsafeBufferPointer { xs in
            mean.scalars.withUnsafeBufferPointer { ms in
                for b in 0..<batch {
                    var sum = 0.0
                    for e in b * elements..<(b + 1) * elements {
                        let r = Double(xs[e]) - Double(ms[e])
                        sum += r * r
                    }
                    result[b] = -sum / (2 * s * s * Double(elements)) + constant
                }
            }
        }
        return result
    }

    /// ∂ log p_b / ∂μ for every element of sample b: (x' − μ)/(s²·n), n the elements per sample.
    /// (x' is data: it carries no gradient, as in flow_grpo where `prev_sample` is detached.)
    public func logProbabilityGradient(next: Tensor, mean: Tensor) -> Tensor {
        let (_, elements) = Self.batchLayout(next, mean, "logProbabilityGradient")
        let scale = 1 / (noiseScale * noiseScale * Double(elements))
        var out = [Float](repeating: 0, count: next.count)
        for i in 0..<out.count { out[i] = Float((Double(next.scalars[i]) - Double(mean.scalars[i])) * scale) }
        return Tensor(shape: next.shape, scalars: out)
    }

    /// ∂L/∂v = c_v·∂L/∂μ: the seed for back-propagating a loss on μ into the model's velocity.
    public func velocityGradient(fromMeanGradient gradient: Tensor) -> Tensor {
        let cv = meanVelocityCoefficient
        return Tensor(shape: gradient.shape, scalars: gradient.scalars.map { Float(cv * Double($0)) })
    }

    /// ∂L/∂v = c_v·∂L/∂μ for a gradient held in `Double` (row-major, any shape).
    public func velocityGradient(fromMeanGradient gradient: [Double], shape: [Int]) -> Tensor {
        let cv = meanVelocityCoefficient
        return Tensor(shape: shape, scalars: gradient.map { Float(cv * $0) })
    }

    /// (batch, elements per sample) of two same-shaped, batch-first tensors.
    static func batchLayout(_ a: Tensor, _ b: Tensor, _ caller: String) -> (Int, Int) {
        precondition(a.shape == b.shape, "SDEStep.\(caller): shapes \(a.shape) and \(b.shape) differ")
        precondition(a.rank >= 1 && a.shape[0] > 0, "SDEStep.\(caller): needs a batch dimension, got \(a.shape)")
        return (a.shape[0], a.count / a.shape[0])
    }
}

/// The result of one SDE step: the mean μ, the next latent x' and log p(x' | x) per sample.
public struct SDESample: Sendable, Equatable {
    /// μ, the step's mean (store it as μ_old for GRPO-Guard's ratio normalization).
    public var mean: Tensor
    /// x' = μ + s·ε.
    public var next: Tensor
    /// log p(x' | x), one value per sample.
    public var logProbability: [Double]
}
