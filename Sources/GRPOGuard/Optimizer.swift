import Foundation
import TensorRuntime

/// AdamW's hyper-parameters; defaults are the flow_grpo SD3 configuration (`config/base.py`):
/// learning rate 1e-4 (FLUX: 2e-4), betas (0.9, 0.999), ε 1e-8, weight decay 1e-4.
public struct AdamWConfiguration: Sendable, Equatable, Codable {
    /// The learning rate.
    public var learningRate: Double
    /// β₁, the first-moment decay.
    public var beta1: Double
    /// β₂, the second-moment decay.
    public var beta2: Double
    /// ε, added to the bias-corrected root second moment.
    public var epsilon: Double
    /// The decoupled weight decay λ (parameters shrink by lr·λ each step).
    public var weightDecay: Double

    /// A configuration with the given values (the flow_grpo defaults otherwise).
    public init(learningRate: Double = 1e-4, beta1: Double = 0.9, beta2: Double = 0.999,
                epsilon: Double = 1e-8, weightDecay: Double = 1e-4) {
        self.learningRate = learningRate
        self.beta1 = beta1
        self.beta2 = beta2
        self.epsilon = epsilon
        self.weightDecay = weightDecay
    }
}

/// AdamW's per-parameter state: how many updates each parameter has had and its two moment
/// buffers (row-major, `Float` as in torch for float32 parameters). Plain arrays, so a checkpoint
/// can store them and a resumed run continues bit for bit.
public struct AdamWState: Sendable, Equatable, Codable {
    /// The update count of each parameter (torch keeps one `step` per parameter).
    public var steps: [Int]
    /// The first moments m, one buffer per parameter.
    public var firstMoments: [[Float]]
    /// The second moments v, one buffer per parameter.
    public var secondMoments: [[Float]]

    /// Fresh state (zero moments, no steps) for parameters of the given element counts.
    public init(counts: [Int]) {
        steps = [Int](repeating: 0, count: counts.count)
        firstMoments = counts.map { [Float](repeating: 0, count: $0) }
        secondMoments = firstMoments
    }

    /// State from stored arrays (all three lists have one entry per parameter).
    public init(steps: [Int], firstMoments: [[Float]], secondMoments: [[Float]]) {
        precondition(steps.count == firstMoments.count && steps.count == secondMoments.count,
                     "AdamWState: \(steps.count) step counts, \(firstMoments.count) and \(secondMoments.count) moment buffers")
        self.steps = steps
        self.firstMoments = firstMoments
        self.secondMoments = secondMoments
    }
}

/// The AdamW optimizer exactly as `torch.optim.AdamW` (single-tensor path) updates a parameter p
/// with gradient g at its step t:
///
///     p ← p·(1 − lr·λ);  m ← m + (g − m)·(1 − β₁);  v ← β₂·v + (1 − β₂)·g²
///     p ← p − lr/(1 − β₁ᵗ) · m / (√v/√(1 − β₂ᵗ) + ε)
///
/// Arithmetic per element is in `Double`; parameters and moments are stored as `Float`.
/// A parameter without a gradient is skipped entirely (no decay, no step), as torch does.
public struct AdamW: Sendable {
    /// The hyper-parameters (the learning rate may be changed between steps).
    public var configuration: AdamWConfiguration
    /// The optimizer state, for checkpoints.
    public private(set) var state: AdamWState

    /// An optimizer for parameters of the given element counts.
    public init(configuration: AdamWConfiguration = AdamWConfiguration(), counts: [Int]) {
        self.configuration = configuration
        state = AdamWState(counts: counts)
    }

    /// An optimizer resuming from a stored `state`.
    public init(configuration: AdamWConfiguration, state: AdamWState) {
        self.configuration = configuration
        self.state = state
    }

    /// Updates `parameters` in place with `gradients` (same order and shapes; nil = no gradient).
    public mutating func step(parameters: inout [Tensor], gradients: [Tensor?]) {
        precondition(parameters.count == state.steps.count && gradients.count == parameters.count,
                     "AdamW: state for \(state.steps.count) parameters, given \(parameters.count) parameters and \(gradients.count) gradients")
        for i in parameters.indices {
            guard let g = gradients[i] else { continue }
            update(&parameters[i], gradient: g, index: i)
        }
    }

    /// Updates each variable's value with its accumulated `gradient` (variables without one are skipped).
    public mutating func step(_ variables: [Variable]) {
        precondition(variables.count == state.steps.count,
                     "AdamW: state for \(state.steps.count) parameters, given \(variables.count) variables")
        for (i, variable) in variables.enumerated() {
            guard let g = variable.gradient else { continue }
            update(&variable.value, gradient: g, index: i)
        }
    }

    /// One parameter's update.
    private mutating func update(_ parameter: inout Tensor, gradient: Tensor, index i: Int) {
        precondition(parameter.count == gradient.count && parameter.count == state.firstMoments[i].count,
                     "AdamW: parameter \(i) has \(parameter.count) values, its gradient \(gradient.count), its state \(state.firstMoments[i].count)")
        let c = configuration
        state.steps[i] += 1
        let t = Double(state.steps[i])
        let decay = 1 - c.learningRate * c.weightDecay
        let stepSize = c.learningRate / (1 - pow(c.beta1, t))
        let correction2 = (1 - pow(c.beta2, t)).squareRoot()
        var m = state.firstMoments[i], v = state.secondMoments[i]
        for k in 0..<parameter.count {
            let g = Double(gradient.scalars[k])
            let p = Double(parameter.scalars[k]) * decay
            let mk = Double(m[k]) + (g - Double(m[k])) * (1 - c.beta1)
            let vk = c.beta2 * Double(v[k]) + (1 - c.beta2) * g * g
            m[k] = Float(mk)
            v[k] = Float(vk)
            parameter.scalars[k] = Float(p - stepSize * mk / (vk.squareRoot() / correction2 + c.epsilon))
        }
        state.firstMoments[i] = m
        state.secondMoments[i] = v
    }
}

/// Global gradient-norm clipping as `torch.nn.utils.clip_grad_norm_` (2-norm): the norm of all
/// gradients together is N; every gradient is multiplied by min(1, maxNorm/(N + 1e-6)).
public enum GradientClipping {
    /// The 2-norm of all values of all gradients together (nil entries count as absent).
    public static func globalNorm(_ gradients: [Tensor?]) -> Double {
        var sum = 0.0
        for g in gradients {
            guard let g else { continue }
            for x in g.scalars { sum += Double(x) * Double(x) }
        }
        return sum.squareRoot()
    }

    /// Scales `gradients` so their global norm is at most `maxNorm` (1.0 in flow_grpo);
    /// returns the norm before clipping.
    @discardableResult
    public static func clip(_ gradients: inout [Tensor?], maxNorm: Double = 1) -> Double {
        let norm = globalNorm(gradients)
        let factor = min(1, maxNorm / (norm + 1e-6))
        if factor < 1 {
            for i in gradients.indices {
                guard let g = gradients[i] else { continue }
                gradients[i] = Tensor(shape: g.shape, scalars: g.scalars.map { Float(Double($0) * factor) })
            }
        }
        return norm
    }

    /// Clips the accumulated gradients of `variables` in place; returns the norm before clipping.
    @discardableResult
    public static func clip(_ variables: [Variable], maxNorm: Double = 1) -> Double {
        var gradients = variables.map(\.gradient)
        let norm = clip(&gradients, maxNorm: maxNorm)
        for (variable, g) in zip(variables, gradients) where variable.gradient != nil { variable.gradient = g }
        return norm
    }
}
