import Foundation
import FlowMatching
import TensorRuntime

/// What the rollout fixed for one trained denoising step of a batch: the SDE step, the sampled
/// next latents x', the rollout's step means μ_old and log-probabilities log p_old, and the
/// (already clamped) advantages. Tensors are batch-first; arrays hold one value per sample.
public struct StepBatch: Sendable {
    /// The SDE step (σ → σ') the samples took.
    public var step: SDEStep
    /// x', the latents the rollout sampled.
    public var next: Tensor
    /// μ_old, the rollout policy's step means (needed for ratio normalization).
    public var meanOld: Tensor
    /// log p_old(x' | x) per sample, as the rollout computed it.
    public var logProbabilityOld: [Double]
    /// The advantage of each sample.
    public var advantages: [Double]

    /// A batch; shapes and counts must agree (checked here).
    public init(step: SDEStep, next: Tensor, meanOld: Tensor, logProbabilityOld: [Double], advantages: [Double]) {
        precondition(next.shape == meanOld.shape, "StepBatch: x' \(next.shape) and μ_old \(meanOld.shape) differ")
        precondition(next.rank >= 1 && next.shape[0] > 0, "StepBatch: needs a batch dimension, got \(next.shape)")
        precondition(logProbabilityOld.count == next.shape[0] && advantages.count == next.shape[0],
                     "StepBatch: \(next.shape[0]) samples but \(logProbabilityOld.count) log-probabilities and \(advantages.count) advantages")
        self.step = step
        self.next = next
        self.meanOld = meanOld
        self.logProbabilityOld = logProbabilityOld
        self.advantages = advantages
    }

    /// The number of samples.
    public var batchSize: Int { next.shape[0] }
    /// The number of latent elements per sample.
    public var elementsPerSample: Int { next.count / next.shape[0] }
}

/// The loss of one trained step and its exact gradient with respect to the policy's step mean
/// μ_θ (and, through c_v, the model's velocity output), with the step's diagnostics.
public struct StepLoss: Sendable {
    /// The total loss: `weight`·policy loss + β·KL loss.
    public var loss: Double
    /// The clipped surrogate, averaged over samples, before `weight`.
    public var policyLoss: Double
    /// The KL penalty mean((μ_θ − μ_ref)²)/(2·std²) before β (0 without a reference).
    public var klLoss: Double
    /// The factor applied to the policy loss (δ = 1/|dt| for GRPO-Guard's reweighting, else 1).
    public var weight: Double
    /// ∂loss/∂μ_θ, row-major, in `Double`.
    public var meanGradient: [Double]
    /// The shape of μ_θ.
    public var shape: [Int]
    /// The raw importance ratios r = exp(log p_θ − log p_old), one per sample.
    public var ratios: [Double]
    /// The normalized ratios r̂ (RatioNorm), one per sample.
    public var normalizedRatios: [Double]
    /// Ratio statistics, clip fractions and approximate KL.
    public var diagnostics: StepDiagnostics

    /// ∂loss/∂μ_θ as a tensor.
    public var meanGradientTensor: Tensor { Tensor(shape: shape, scalars: meanGradient.map { Float($0) }) }

    /// ∂loss/∂v = c_v·∂loss/∂μ_θ: the seed for `Graph.backward(from: v, seed:)`.
    public func velocityGradient(step: SDEStep) -> Tensor {
        step.velocityGradient(fromMeanGradient: meanGradient, shape: shape)
    }
}

/// A per-step policy objective: a loss on the policy's step means for a rollout batch.
public protocol StepObjective: Sendable {
    /// The loss at the policy means `mean` (μ_θ, same shape as `batch.next`) and its gradient.
    /// `referenceMean` (μ_ref, the model with the adapter disabled) is needed only for a KL term.
    func evaluate(mean: Tensor, batch: StepBatch, referenceMean: Tensor?) -> StepLoss
}

/// The PPO clipped surrogate of one sample: ℓ = max(−A·r, −A·clip(r, 1−ε, 1+ε)).
public enum ClippedSurrogate {
    /// ℓ and dℓ/dr. Where the clipped branch strictly wins the derivative is 0; elsewhere it is
    /// −A (this matches autograd through `maximum`/`clamp`, whose clamp passes gradient on the
    /// closed interval).
    public static func evaluate(ratio: Double, advantage: Double, clipRange: Double) -> (loss: Double, derivative: Double) {
        let unclipped = -advantage * ratio
        let clipped = -advantage * min(max(ratio, 1 - clipRange), 1 + clipRange)
        return unclipped >= clipped ? (unclipped, -advantage) : (clipped, 0)
    }
}

/// How GRPO-Guard's RatioNorm averages the bias mean((μ_θ − μ_old)²)/(2s²).
public enum RatioBiasMode: String, Sendable, Equatable, CaseIterable {
    /// One scalar over the whole batch and all elements (the official code; default).
    case batch
    /// One value per sample, over its elements (the paper's formula).
    case perSample
}

/// Vanilla Flow-GRPO, per trained step: r = exp(log p_θ − log p_old),
/// L = mean over samples of max(−A·r, −A·clip(r, 1−ε, 1+ε)) + β·mean((μ_θ − μ_ref)²)/(2·std²).
///
/// Gradient flow follows flow_grpo (`flow_grpo/diffusers_patch/sd3_sde_with_logprob.py`,
/// `scripts/train_sd3.py`): only μ_θ carries gradient; x' is detached, log p_old is stored, std
/// and s come from the schedule (constants); μ_ref is computed under `no_grad`; the KL term uses
/// std (not s), averages over each sample's elements and then over the batch.
public struct VanillaObjective: StepObjective, Equatable {
    /// The PPO clip range ε (1e-4).
    public var clipRange: Double
    /// The KL coefficient β (0: no KL term).
    public var klCoefficient: Double
    /// Whether the policy loss is multiplied by δ = 1/|dt| (GRPO-Guard's reweighting on the raw
    /// ratio: not Flow-GRPO, but the "reweighting only" ablation; off by default).
    public var reweights: Bool

    /// Flow-GRPO with the official defaults unless given.
    public init(clipRange: Double = 1e-4, klCoefficient: Double = 0, reweights: Bool = false) {
        self.clipRange = clipRange
        self.klCoefficient = klCoefficient
        self.reweights = reweights
    }

    /// See `StepObjective.evaluate`.
    public func evaluate(mean: Tensor, batch: StepBatch, referenceMean: Tensor? = nil) -> StepLoss {
        let parts = PolicyTerms(mean: mean, batch: batch, biasMode: .batch)
        let b = batch.batchSize
        let weight = reweights ? 1 / abs(batch.step.dt) : 1
        var policy = 0.0
        var coefficients = [Double](repeating: 0, count: b)
        for i in 0..<b {
            let (l, d) = ClippedSurrogate.evaluate(ratio: parts.ratios[i], advantage: batch.advantages[i], clipRange: clipRange)
            policy += l / Double(b)
            coefficients[i] = weight * d * parts.ratios[i] / Double(b)   // ∂(weight·L)/∂log p_θ,i
        }
        let gradient = parts.logProbabilityGradient(perSample: coefficients)
        return parts.stepLoss(policy: policy, weight: weight, gradient: gradient, clippedRatios: parts.ratios, clipRange: clipRange,
                              mean: mean, batch: batch, referenceMean: referenceMean, klCoefficient: klCoefficient)
    }
}

/// GRPO-Guard, per trained step (design §6): RatioNorm
/// log r̂ = s·(log p_θ − log p_old + bias), bias = mean((μ_θ − μ_old)²)/(2s²), the clipped
/// surrogate on r̂, and the policy loss multiplied by δ = 1/|dt|.
///
/// Facts from the official implementation (flow_grpo's `scripts/train_sd3_GRPO_Guard.py`, as
/// mirrored in e.g. zhtmike/flow_grpo; discussed in yifan123/flow_grpo issue #223):
/// - the bias is *not* detached: it is built from the graph's `prev_sample_mean` minus the stored
///   rollout mean, so it carries gradient into μ_θ; std and √(−dt) come from the schedule and
///   carry none; x' is detached inside the log-probability;
/// - the bias is reduced with `.mean(dim=tuple(range(1, log_prob.ndim)))` where `log_prob` is
///   already per-sample (ndim 1), i.e. an empty dim tuple, which torch reduces over *all*
///   dimensions: one scalar over batch and elements (`RatioBiasMode.batch`); the paper's
///   per-sample bias is `RatioBiasMode.perSample`;
/// - s is `std_dev_t.mean()·sqrt_dt.mean()` over the batch (one σ per step here, so simply s);
/// - reweighting divides the policy loss by `sqrt_dt.mean()**2` = |dt|; a KL term, if any, is
///   added after the reweighting, unweighted (GRPO-Guard uses β = 0);
/// - clip fractions are measured on r̂, approximate KL on the raw log-ratio.
public struct GuardObjective: StepObjective, Equatable {
    /// The clip range ε on r̂ (2e-6; 4e-6 for preference rewards).
    public var clipRange: Double
    /// How the RatioNorm bias is averaged.
    public var biasMode: RatioBiasMode
    /// Whether the policy loss is multiplied by δ = 1/|dt|.
    public var reweights: Bool
    /// The KL coefficient β (0 in GRPO-Guard).
    public var klCoefficient: Double

    /// GRPO-Guard with the official defaults unless given.
    public init(clipRange: Double = 2e-6, biasMode: RatioBiasMode = .batch, reweights: Bool = true, klCoefficient: Double = 0) {
        self.clipRange = clipRange
        self.biasMode = biasMode
        self.reweights = reweights
        self.klCoefficient = klCoefficient
    }

    /// See `StepObjective.evaluate`.
    public func evaluate(mean: Tensor, batch: StepBatch, referenceMean: Tensor? = nil) -> StepLoss {
        let parts = PolicyTerms(mean: mean, batch: batch, biasMode: biasMode)
        let b = batch.batchSize
        let s = batch.step.noiseScale
        let weight = reweights ? 1 / abs(batch.step.dt) : 1
        var policy = 0.0
        var coefficients = [Double](repeating: 0, count: b)
        for i in 0..<b {
            let r = parts.normalizedRatios[i]
            let (l, d) = ClippedSurrogate.evaluate(ratio: r, advantage: batch.advantages[i], clipRange: clipRange)
            policy += l / Double(b)
            // ∂(weight·L)/∂(log p_θ,i + bias_i), since log r̂_i = s·(log p_θ,i − log p_old,i + bias_i).
            coefficients[i] = weight * d * r * s / Double(b)
        }
        var gradient = parts.logProbabilityGradient(perSample: coefficients)
        parts.addBiasGradient(perSample: coefficients, into: &gradient)
        return parts.stepLoss(policy: policy, weight: weight, gradient: gradient, clippedRatios: parts.normalizedRatios, clipRange: clipRange,
                              mean: mean, batch: batch, referenceMean: referenceMean, klCoefficient: klCoefficient)
    }
}

/// The per-sample quantities both objectives share, in `Double`: residuals x' − μ_θ, differences
/// μ_θ − μ_old, raw and normalized log-ratios.
struct PolicyTerms {
    let batch: Int
    let elements: Int
    let s: Double
    let biasMode: RatioBiasMode
    /// x' − μ_θ.
    var residual: [Double]
    /// μ_θ − μ_old.
    var difference: [Double]
    var logRatios: [Double]
    var normalizedLogRatios: [Double]
    var ratios: [Double] { logRatios.map { Foundation.exp($0) } }
    var normalizedRatios: [Double] { normalizedLogRatios.map { Foundation.exp($0) } }

    /// The step's result once the (unweighted) policy loss and its gradient w.r.t. μ_θ are known:
    /// adds the KL term (unweighted, after the reweighting) and the diagnostics, whose clip
    /// fractions are taken on `clippedRatios` (r for Flow-GRPO, r̂ for GRPO-Guard).
    func stepLoss(policy: Double, weight: Double, gradient: [Double], clippedRatios: [Double], clipRange: Double,
                  mean: Tensor, batch: StepBatch, referenceMean: Tensor?, klCoefficient: Double) -> StepLoss {
        var gradient = gradient
        let kl = klTerm(mean: mean, batch: batch, referenceMean: referenceMean, coefficient: klCoefficient, gradient: &gradient)
        return StepLoss(loss: weight * policy + klCoefficient * kl, policyLoss: policy, klLoss: kl, weight: weight,
                        meanGradient: gradient, shape: mean.shape, ratios: ratios, normalizedRatios: normalizedRatios,
                        diagnostics: StepDiagnostics(logRatios: logRatios, normalizedLogRatios: normalizedLogRatios,
                                                     clippedRatios: clippedRatios, advantages: batch.advantages, clipRange: clipRange))
    }

    init(mean: Tensor, batch stepBatch: StepBatch, biasMode: RatioBiasMode) {
        precondition(mean.shape == stepBatch.next.shape, "objective: μ_θ \(mean.shape) and x' \(stepBatch.next.shape) differ")
        batch = stepBatch.batchSize
        elements = stepBatch.elementsPerSample
        s = stepBatch.step.noiseScale
        self.biasMode = biasMode
        let count = mean.count
        residual = [Double](repeating: 0, count: count)
        difference = [Double](repeating: 0, count: count)
        for i in 0..<count {
            let m = Double(mean.scalars[i])
            residual[i] = Double(stepBatch.next.scalars[i]) - m
            difference[i] = m - Double(stepBatch.meanOld.scalars[i])
        }
        let logP = stepBatch.step.logProbability(next: stepBatch.next, mean: mean)
        let raw = zip(logP, stepBatch.logProbabilityOld).map { $0 - $1 }
        logRatios = raw
        let n = elements, samples = batch
        var sampleSquares = [Double](repeating: 0, count: samples)
        for b in 0..<samples {
            for e in b * n..<(b + 1) * n { sampleSquares[b] += difference[e] * difference[e] }
        }
        let scale = stepBatch.step.noiseScale
        let twoS2 = 2 * scale * scale
        let bias: [Double]
        switch biasMode {
        case .batch:
            let all = sampleSquares.reduce(0, +) / Double(samples * n) / twoS2
            bias = [Double](repeating: all, count: samples)
        case .perSample:
            bias = sampleSquares.map { $0 / Double(n) / twoS2 }
        }
        normalizedLogRatios = zip(raw, bias).map { scale * ($0 + $1) }
    }

    /// Σ_b c_b·∂log p_θ,b/∂μ_θ = c_b·(x' − μ_θ)/(s²·n) per element of sample b.
    func logProbabilityGradient(perSample c: [Double]) -> [Double] {
        var g = [Double](repeating: 0, count: residual.count)
        let inv = 1 / (s * s * Double(elements))
        for b in 0..<batch {
            let k = c[b] * inv
            for e in b * elements..<(b + 1) * elements { g[e] = k * residual[e] }
        }
        return g
    }

    /// Adds Σ_b c_b·∂bias_b/∂μ_θ: (μ_θ − μ_old)/(s²·n) times c of its own sample (per-sample bias)
    /// or times mean_b c_b (one batch bias, which every sample's ratio shares).
    func addBiasGradient(perSample c: [Double], into g: inout [Double]) {
        let inv = 1 / (s * s * Double(elements))
        switch biasMode {
        case .perSample:
            for b in 0..<batch {
                for e in b * elements..<(b + 1) * elements { g[e] += c[b] * inv * difference[e] }
            }
        case .batch:
            let k = c.reduce(0, +) / Double(batch) * inv
            for i in 0..<g.count { g[i] += k * difference[i] }
        }
    }
}

/// The KL penalty mean_b[mean_e (μ_θ − μ_ref)²]/(2·std²) (flow_grpo `train_sd3.py`); adds
/// β·∂KL/∂μ_θ to `gradient` and returns the penalty before β. 0 without a reference or with β = 0.
func klTerm(mean: Tensor, batch: StepBatch, referenceMean: Tensor?, coefficient: Double, gradient: inout [Double]) -> Double {
    guard coefficient != 0 else { return 0 }
    guard let reference = referenceMean else {
        preconditionFailure("objective: a KL coefficient of \(coefficient) needs the reference means μ_ref")
    }
    precondition(reference.shape == mean.shape, "objective: μ_ref \(reference.shape) and μ_θ \(mean.shape) differ")
    let variance = batch.step.standardDeviation * batch.step.standardDeviation
    let total = Double(mean.count)
    var sum = 0.0
    for i in 0..<mean.count {
        let d = Double(mean.scalars[i]) - Double(reference.scalars[i])
        sum += d * d
        gradient[i] += coefficient * d / (total * variance)
    }
    return sum / total / (2 * variance)
}
