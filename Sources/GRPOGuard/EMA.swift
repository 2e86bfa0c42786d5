import TensorRuntime

/// An exponential moving average of the trained parameters, used for checkpoints and
/// evaluation, with flow_grpo's semantics (`flow_grpo/ema.py` `EMAModuleWrapper`, called from
/// `scripts/train_sd3.py` with decay 0.9 and `update_step_interval` 8):
///
/// - the average starts as a copy of the parameters;
/// - `update(parameters:optimizationStep:)` with step k uses the warm-up decay
///   d_k = min((1 + k)/(10 + k), decay) and changes the average only when (k + 1) is a multiple
///   of the interval: avg ← avg + (1 − d_k)·(p − avg);
/// - flow_grpo calls it once per training batch with `global_step`, the number of optimizer
///   steps taken so far.
public struct ParameterEMA: Sendable, Equatable {
    /// The decay ceiling (0.9).
    public var decay: Double
    /// The average changes on steps k with (k + 1) a multiple of this (8).
    public var updateInterval: Int
    /// The averaged parameters, in the order given at creation.
    public private(set) var averages: [Tensor]

    /// An average starting at `parameters`.
    public init(parameters: [Tensor], decay: Double = 0.9, updateInterval: Int = 8) {
        precondition(updateInterval > 0, "ParameterEMA: the update interval must be positive, got \(updateInterval)")
        self.decay = decay
        self.updateInterval = updateInterval
        averages = parameters
    }

    /// The decay used at optimization step `step`: min((1 + step)/(10 + step), decay).
    public func effectiveDecay(atStep step: Int) -> Double {
        min(Double(1 + step) / Double(10 + step), decay)
    }

    /// Folds `parameters` into the average if step `optimizationStep` is an update step;
    /// returns whether it was.
    @discardableResult
    public mutating func update(parameters: [Tensor], optimizationStep: Int) -> Bool {
        precondition(parameters.count == averages.count,
                     "ParameterEMA: averaging \(averages.count) parameters, given \(parameters.count)")
        guard (optimizationStep + 1) % updateInterval == 0 else { return false }
        let rate = 1 - effectiveDecay(atStep: optimizationStep)
        for i in averages.indices {
            let p = parameters[i]
            precondition(p.shape == averages[i].shape, "ParameterEMA: parameter \(i) has shape \(p.shape), its average \(averages[i].shape)")
            for k in 0..<p.count {
                let a = Double(averages[i].scalars[k])
                averages[i].scalars[k] = Float(a + rate * (Double(p.scalars[k]) - a))
            }
        }
        return true
    }

    /// Folds the values of `variables` into the average (see `update(parameters:optimizationStep:)`).
    @discardableResult
    public mutating func update(_ variables: [Variable], optimizationStep: Int) -> Bool {
        update(parameters: variables.map(\.value), optimizationStep: optimizationStep)
    }

    /// An average restored from stored `averages` (e.g. a checkpoint).
    public init(averages: [Tensor], decay: Double, updateInterval: Int) {
        self.init(parameters: averages, decay: decay, updateInterval: updateInterval)
    }
}
