import Foundation
import JSON
import SafeTensors
import SystemSupport

/// One trained timestep's diagnostics within an optimizer step (averaged over its minibatches).
public struct TimestepRecord: Sendable, Equatable {
    /// The step index j in the schedule.
    public var index: Int
    /// σ_j.
    public var sigma: Double
    /// Ratio statistics, clip fractions and approximate KL (design §6).
    public var diagnostics: StepDiagnostics
    /// The 2-norm of this timestep's LoRA gradient (before averaging over timesteps and clipping).
    public var gradientNorm: Double
    /// The timestep's loss (reweighted; averaged over minibatches).
    public var loss: Double
    /// Quantiles of the per-sample raw ratio r over all samples of the optimizer step (every
    /// minibatch); nil in logs written before the field existed.
    public var ratioQuantiles: SampleQuantiles?
    /// Quantiles of the per-sample normalized ratio r̂, as `ratioQuantiles`.
    public var normalizedRatioQuantiles: SampleQuantiles?

    /// A record from its fields (the trainer, and the report reading `diagnostics.jsonl` back).
    public init(index: Int, sigma: Double, diagnostics: StepDiagnostics, gradientNorm: Double, loss: Double,
                ratioQuantiles: SampleQuantiles? = nil, normalizedRatioQuantiles: SampleQuantiles? = nil) {
        self.index = index
        self.sigma = sigma
        self.diagnostics = diagnostics
        self.gradientNorm = gradientNorm
        self.loss = loss
        self.ratioQuantiles = ratioQuantiles
        self.normalizedRatioQuantiles = normalizedRatioQuantiles
    }
}

/// One optimizer step's line of `RUN/diagnostics.jsonl`.
public struct UpdateRecord: Sendable, Equatable {
    /// The training step (1-based; one rollout each).
    public var step: Int
    /// The update within the step's rollout (0-based).
    public var update: Int
    /// Optimizer steps taken so far, this one included.
    public var optimizerStep: Int
    /// Mean reward of the rollout.
    public var rewardMean: Double
    /// Standard deviation (population) of the rollout's rewards.
    public var rewardStd: Double
    /// The loss: mean over trained timesteps.
    public var loss: Double
    /// The learning rate used.
    public var learningRate: Double
    /// The global gradient norm before clipping.
    public var gradientNorm: Double
    /// Per trained timestep.
    public var timesteps: [TimestepRecord]
    /// Wall-clock seconds of the training step (rollout and updates) so far.
    public var seconds: Double

    /// A record from its fields (the trainer, and the report reading `diagnostics.jsonl` back).
    public init(step: Int, update: Int, optimizerStep: Int, rewardMean: Double, rewardStd: Double, loss: Double,
                learningRate: Double, gradientNorm: Double, timesteps: [TimestepRecord], seconds: Double) {
        self.step = step
        self.update = update
        self.optimizerStep = optimizerStep
        self.rewardMean = rewardMean
        self.rewardStd = rewardStd
        self.loss = loss
        self.learningRate = learningRate
        self.gradientNorm = gradientNorm
        self.timesteps = timesteps
        self.seconds = seconds
    }

    /// The mean over timesteps of a diagnostic.
    public func mean(_ key: KeyPath<StepDiagnostics, Double>) -> Double {
        timesteps.isEmpty ? 0 : timesteps.reduce(0) { $0 + $1.diagnostics[keyPath: key] } / Double(timesteps.count)
    }

    /// The JSON object written as one line.
    public var json: JSONValue {
        .object([
            ("step", .int(Int64(step))), ("update", .int(Int64(update))), ("optimizer_step", .int(Int64(optimizerStep))),
            ("reward_mean", .double(rewardMean)), ("reward_std", .double(rewardStd)), ("loss", .double(loss)),
            ("lr", .double(learningRate)), ("grad_norm", .double(gradientNorm)),
            ("ratio_mean", .double(mean(\.ratioMean))), ("normalized_ratio_mean", .double(mean(\.normalizedRatioMean))),
            ("clip_fraction_above", .double(mean(\.clipFractionAbove))), ("clip_fraction_below", .double(mean(\.clipFractionBelow))),
            ("clip_fraction_positive", .double(mean(\.clipFractionPositive))),
            ("clip_fraction_negative", .double(mean(\.clipFractionNegative))),
            ("approx_kl", .double(mean(\.approximateKL))),
            ("timesteps", .array(timesteps.map { t in
                var members: [(String, JSONValue)] = [
                    ("index", .int(Int64(t.index))), ("sigma", .double(t.sigma)),
                    ("ratio_mean", .double(t.diagnostics.ratioMean)), ("ratio_std", .double(t.diagnostics.ratioStd)),
                    ("normalized_ratio_mean", .double(t.diagnostics.normalizedRatioMean)),
                    ("normalized_ratio_std", .double(t.diagnostics.normalizedRatioStd)),
                    ("clip_fraction_above", .double(t.diagnostics.clipFractionAbove)),
                    ("clip_fraction_below", .double(t.diagnostics.clipFractionBelow)),
                    ("clip_fraction_positive", .double(t.diagnostics.clipFractionPositive)),
                    ("clip_fraction_negative", .double(t.diagnostics.clipFractionNegative)),
                    ("approx_kl", .double(t.diagnostics.approximateKL)),
                    ("grad_norm", .double(t.gradientNorm)), ("loss", .double(t.loss)),
                ]
                if let q = t.ratioQuantiles { members.append(("ratio_quantiles", .array(q.values.map { .double($0) }))) }
                if let q = t.normalizedRatioQuantiles { members.append(("normalized_ratio_quantiles", .array(q.values.map { .double($0) }))) }
                return .object(members)
            })),
            ("seconds", .double(seconds)),
        ])
    }
}

/// The append-only diagnostics file: each line is written with one `write(2)` so its length on
/// disk is always a whole number of lines (a checkpoint records it; resume truncates to it).
final class DiagnosticsLog {
    let path: String
    private let file: FileDescriptor

    /// Opens (creating) the file and truncates it to `length` bytes.
    init(path: String, truncateTo length: Int) throws(TrainingError) {
        self.path = path
        do { file = try FileDescriptor.openForWriting(path) } catch {
            throw .io(path: path, reason: "cannot open for writing: \(error.message)")
        }
        do {
            try file.truncate(to: length)
            try file.seek(to: length)
        } catch {
            file.close()
            throw .io(path: path, reason: "cannot truncate to \(length) bytes: \(error.message)")
        }
    }

    deinit { file.close() }

    /// The current length in bytes.
    var length: Int { file.position }

    /// Appends one line (one `write(2)` unless the kernel takes it in parts).
    func append(_ value: JSONValue) throws(TrainingError) {
        do { try file.write(Array((value.compactText + "\n").utf8)) } catch {
            throw .io(path: path, reason: "cannot append a line: \(error.message)")
        }
    }

    /// Flushes the file to disk.
    func sync() { try? file.sync() }
}
