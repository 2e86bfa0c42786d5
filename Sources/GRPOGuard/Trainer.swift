import Checkpoints
import FlowMatching
import Foundation
import TensorRuntime
import Transformers

/// The mutable state a run carries between training steps and that a checkpoint stores: the
/// trained factors, AdamW's moments, the EMA averages, the noise generator and the counters.
public struct TrainerState: Sendable, Equatable {
    /// Training steps completed (rollouts done and trained on).
    public var step: Int
    /// Optimizer steps taken.
    public var optimizerSteps: Int
    /// The LoRA factors (down, up per module, modules sorted by name).
    public var parameters: [Tensor]
    /// AdamW's state.
    public var optimizer: AdamWState
    /// The EMA averages, same order as `parameters`.
    public var averages: [Tensor]
    /// The noise generator's `[seed, counter]`.
    public var noise: [UInt64]
}

/// GRPO-Guard / Flow-GRPO training of a LoRA adapter (design §6). Each `trainStep()` samples a
/// rollout with the current adapter (SDE steps, no gradient), scores it, computes group
/// advantages, then takes `updatesPerRollout` optimizer steps, each accumulating the objective's
/// gradient over every trained timestep and its share of the rollout's minibatches, clipping the
/// global gradient norm, applying AdamW and folding the result into the EMA.
///
/// A class: it owns the model and the trainable variables, whose identity the graphs rely on.
/// Deterministic: the same config, seed and thread count give the same bits.
public final class Trainer {
    /// The run's configuration.
    public let config: TrainingConfig
    /// The model's weights.
    public let weights: TransformerWeights
    /// The adapted module names, sorted.
    public let modules: [String]
    /// The trainable factors.
    public let parameters: LoRAParameters
    /// The base adapters' low-rank branches, constant (nil when the base has none): part of the
    /// frozen model in every forward, the reference and the base evaluation included.
    public let frozen: LoRAParameters?
    /// The branches of a forward with the trained adapter: `frozen`'s, then `parameters`'.
    let policyBranches: LoRAParameters
    /// The reward.
    public let reward: any Reward
    /// The learning rate in effect.
    public let learningRate: Double

    let driver: ModelDriver
    let schedule: FlowMatchSchedule
    let objective: any StepObjective
    var optimizer: AdamW
    var ema: ParameterEMA
    var noise: GaussianGenerator
    /// Training steps completed.
    public private(set) var step = 0
    /// Optimizer steps taken.
    public private(set) var optimizerSteps = 0

    /// A trainer with a fresh adapter (PEFT initialization from the config's seed). `baseBranches`
    /// are low-rank adapters of the frozen base (`AdaptedBase.branches`; `weights` and `model`
    /// already hold its exactly merged weights): they stay constant and apply in every forward.
    public init(config: TrainingConfig, weights: TransformerWeights, model: any DiffusionTransformer,
                prompts: TrainingPrompts, reward: any Reward, baseBranches: AdapterSet = AdapterSet()) throws(TrainingError) {
        self.config = config
        self.weights = weights
        self.reward = reward
        driver = try ModelDriver(model: model, prompts: prompts, config: config)
        try AdapterInitialization.checkTargets(weights, targets: config.loraTargets)
        modules = AdapterInitialization.targetModules(weights, targets: config.loraTargets)
        guard !modules.isEmpty else {
            throw .badConfigValue(source: "config", key: "lora_targets",
                                  reason: "\(config.loraTargets.joined(separator: ",")) match no attention module of \(weights.path)")
        }
        let set = try AdapterInitialization.make(weights, modules: modules, rank: config.loraRank, alpha: config.loraAlpha, seed: config.seed)
        let trained = LoRAParameters(set, trainable: true)
        let constant = baseBranches.modules.isEmpty ? nil : LoRAParameters(baseBranches, trainable: false)
        parameters = trained
        frozen = constant
        policyBranches = constant.map { LoRAParameters(combining: [$0, trained]) } ?? trained
        learningRate = config.learningRate ?? weights.architecture.family.defaultLearningRate
        let adam = AdamWConfiguration(learningRate: learningRate, beta1: config.adamBeta1, beta2: config.adamBeta2,
                                      epsilon: config.adamEpsilon, weightDecay: config.weightDecay)
        let variables = parameters.variables
        optimizer = AdamW(configuration: adam, counts: variables.map { $0.value.count })
        ema = ParameterEMA(parameters: variables.map(\.value), decay: config.emaDecay, updateInterval: config.emaInterval)
        noise = GaussianGenerator(seed: config.seed)
        schedule = FlowMatchSchedule(steps: config.samplingSteps, shift: config.shift)
        objective = config.stepObjective
    }

    // MARK: state

    /// The state a checkpoint stores.
    public var state: TrainerState {
        TrainerState(step: step, optimizerSteps: optimizerSteps, parameters: parameters.variables.map(\.value),
                     optimizer: optimizer.state, averages: ema.averages, noise: noise.state)
    }

    /// Restores a stored state (shapes must match this trainer's adapter).
    public func restore(_ s: TrainerState, source: String) throws(TrainingError) {
        let variables = parameters.variables
        guard s.parameters.count == variables.count, s.averages.count == variables.count,
              zip(s.parameters, variables).allSatisfy({ $0.shape == $1.value.shape }),
              zip(s.averages, variables).allSatisfy({ $0.shape == $1.value.shape }),
              s.optimizer.steps.count == variables.count,
              zip(s.optimizer.firstMoments, variables).allSatisfy({ $0.count == $1.value.count }),
              zip(s.optimizer.secondMoments, variables).allSatisfy({ $0.count == $1.value.count }),
              let generator = GaussianGenerator(state: s.noise) else {
            throw .badCheckpoint(path: source, reason: "its adapter does not match this run's modules, rank or model")
        }
        for (v, p) in zip(variables, s.parameters) { v.value = p }
        optimizer = AdamW(configuration: optimizer.configuration, state: s.optimizer)
        ema = ParameterEMA(averages: s.averages, decay: config.emaDecay, updateInterval: config.emaInterval)
        noise = generator
        step = s.step
        optimizerSteps = s.optimizerSteps
    }

    /// The adapter to export: the EMA averages (or the raw factors with `ema: false`).
    public var exportedFactors: [Tensor] { config.useEMA ? ema.averages : parameters.variables.map(\.value) }

    // MARK: prompts

    /// The prompt indices of training step `n` (0-based): prompts are visited in a seeded
    /// permutation per pass over the prompt set.
    public func promptIDs(forStep n: Int) -> [Int] {
        let p = driver.prompts.count
        var cache: [Int: [Int]] = [:]
        return (0..<config.promptsPerStep).map { i in
            let k = n * config.promptsPerStep + i
            let epoch = k / p
            if cache[epoch] == nil {
                var order = Array(0..<p)
                var random = SplitMix64(state: config.seed ^ (0x5052_4F4D_5054 &+ UInt64(epoch) &* 0x9E37_79B9))
                for j in stride(from: p - 1, to: 0, by: -1) { order.swapAt(j, Int(random.next() % UInt64(j + 1))) }
                cache[epoch] = order
            }
            return cache[epoch]![k % p]
        }
    }

    // MARK: rollout

    /// Samples G latents per prompt of the step with the current adapter (no gradients), scores
    /// them and computes advantages. Advances the noise generator.
    public func rollout(promptIDs prompts: [Int]) throws(TrainingError) -> RolloutBatch {
        let g = config.groupSize
        let ids = prompts.flatMap { [Int](repeating: $0, count: g) }
        let b = ids.count
        let chunk = config.effectiveBatchSize
        var x = noise.tensor(shape: [b] + driver.sampleShape)
        var latents = [x], means: [Tensor] = [], logProbabilities: [[Double]] = []
        for i in 0..<schedule.steps {
            let sde = schedule.sdeStep(at: i, noiseLevel: config.noiseLevel)
            let eps = noise.tensor(shape: x.shape)
            var nexts: [Tensor] = [], mus: [Tensor] = [], logps: [Double] = []
            for start in stride(from: 0, to: b, by: chunk) {
                let range = start..<min(b, start + chunk)
                // A recording graph, dropped without a backward pass: the runtime's attention
                // normalizes in another order when it does not record, and the rollout's
                // velocities must be bit-identical to the training pass's so that on-policy
                // ratios are exactly 1.
                let graph = Graph(threads: config.threads, recordsGradients: true)
                let xc = Batch.slice(x, range)
                let v = driver.velocity(xc, sigma: schedule.sigmas[i], promptIDs: Array(ids[range]), adapters: policyBranches, graph: graph).velocity
                let sample = sde.sample(x: xc, velocity: v, noise: Batch.slice(eps, range))
                nexts.append(sample.next)
                mus.append(sample.mean)
                logps += sample.logProbability
            }
            x = Batch.join(nexts)
            latents.append(x)
            means.append(Batch.join(mus))
            logProbabilities.append(logps)
        }
        let texts = ids.map { driver.prompts.texts[$0] }
        let scores: [Float]
        do { scores = try reward.score(latents: x, prompts: texts, promptIDs: ids) } catch {
            throw .reward(error.description)
        }
        let rewards = scores.map(Double.init)
        let advantages = Advantages.compute(rewards: rewards, groupSize: g,
                                            options: AdvantageOptions(scale: config.advantageScale, clamp: config.advantageClip))
        return RolloutBatch(promptIDs: ids, latents: latents, means: means, logProbabilities: logProbabilities,
                            rewards: rewards, advantages: advantages)
    }

    // MARK: training

    /// One training step: a rollout, then `updatesPerRollout` optimizer steps on it. Returns one
    /// record per optimizer step.
    public func trainStep() throws(TrainingError) -> [UpdateRecord] {
        let started = Date()
        let batch = try rollout(promptIDs: promptIDs(forStep: step))
        let (rewardMean, rewardStd) = StepDiagnostics.meanAndStd(batch.rewards)
        let chunk = config.effectiveBatchSize
        let b = batch.promptIDs.count
        let minibatches = stride(from: 0, to: b, by: chunk).map { $0..<min(b, $0 + chunk) }
        let perUpdate = minibatches.count / config.updatesPerRollout
        var records: [UpdateRecord] = []
        for u in 0..<config.updatesPerRollout {
            let group = Array(minibatches[(u * perUpdate)..<((u + 1) * perUpdate)])
            var record = try update(batch: batch, minibatches: group)
            record.step = step + 1
            record.update = u
            record.rewardMean = rewardMean
            record.rewardStd = rewardStd
            record.seconds = Date().timeIntervalSince(started)
            records.append(record)
        }
        step += 1
        return records
    }

    /// One optimizer step on `minibatches` of a rollout.
    func update(batch: RolloutBatch, minibatches: [Range<Int>]) throws(TrainingError) -> UpdateRecord {
        let variables = parameters.variables
        let trained = config.trainedTimesteps
        var accumulated: [[Float]?] = [[Float]?](repeating: nil, count: variables.count)
        var timesteps: [TimestepRecord] = []
        var totalLoss = 0.0
        parameters.zeroGradients()
        for j in 0..<trained {
            let sde = schedule.sdeStep(at: j, noiseLevel: config.noiseLevel)
            var diagnostics: [StepDiagnostics] = []
            var ratios: [Double] = [], normalizedRatios: [Double] = []
            var loss = 0.0
            for range in minibatches {
                let ids = Array(batch.promptIDs[range])
                let x = Batch.slice(batch.latents[j], range)
                let graph = Graph(threads: config.threads, recordsGradients: true)
                let (output, v) = driver.velocity(x, sigma: schedule.sigmas[j], promptIDs: ids, adapters: policyBranches, graph: graph)
                let mean = sde.mean(x: x, velocity: v)
                var reference: Tensor?
                if config.klBeta > 0 {
                    let plain = Graph(threads: config.threads, recordsGradients: false)
                    let vRef = driver.velocity(x, sigma: schedule.sigmas[j], promptIDs: ids, adapters: frozen, graph: plain).velocity
                    reference = sde.mean(x: x, velocity: vRef)
                }
                let stepBatch = StepBatch(step: sde, next: Batch.slice(batch.latents[j + 1], range),
                                          meanOld: Batch.slice(batch.means[j], range),
                                          logProbabilityOld: Array(batch.logProbabilities[j][range]),
                                          advantages: Array(batch.advantages[range]))
                let result = objective.evaluate(mean: mean, batch: stepBatch, referenceMean: reference)
                guard result.loss.isFinite else { throw .nonFinite(step: step + 1, what: "the loss at timestep \(j)") }
                let share = Double(minibatches.count)
                let seed = sde.velocityGradient(fromMeanGradient: result.meanGradient.map { $0 / share }, shape: result.shape)
                graph.backward(from: output, seed: driver.outputSeed(seed))
                diagnostics.append(result.diagnostics)
                ratios += result.ratios
                normalizedRatios += result.normalizedRatios
                loss += result.loss / share
            }
            // This timestep's gradient: its norm, then its share of the mean over timesteps.
            var squares = 0.0
            for (k, variable) in variables.enumerated() {
                guard let g = variable.gradient else { continue }
                var acc = accumulated[k] ?? [Float](repeating: 0, count: g.count)
                let inv = Float(trained)
                for e in 0..<g.count {
                    let value = g.scalars[e]
                    squares += Double(value) * Double(value)
                    acc[e] += value / inv
                }
                accumulated[k] = acc
                variable.gradient = nil
            }
            timesteps.append(TimestepRecord(index: j, sigma: schedule.sigmas[j], diagnostics: StepDiagnostics.average(diagnostics)!,
                                            gradientNorm: squares.squareRoot(), loss: loss,
                                            ratioQuantiles: SampleQuantiles(of: ratios),
                                            normalizedRatioQuantiles: SampleQuantiles(of: normalizedRatios)))
            totalLoss += loss / Double(trained)
        }
        for (k, variable) in variables.enumerated() {
            variable.gradient = accumulated[k].map { Tensor(shape: variable.value.shape, scalars: $0) }
        }
        let norm = GradientClipping.clip(variables, maxNorm: config.maxGradNorm)
        guard norm.isFinite else { throw .nonFinite(step: step + 1, what: "the gradient norm") }
        optimizer.step(variables)
        parameters.zeroGradients()
        optimizerSteps += 1
        ema.update(variables, optimizationStep: optimizerSteps)
        return UpdateRecord(step: step + 1, update: 0, optimizerStep: optimizerSteps, rewardMean: 0, rewardStd: 0,
                            loss: totalLoss, learningRate: learningRate, gradientNorm: norm, timesteps: timesteps, seconds: 0)
    }

    // MARK: evaluation

    /// The mean reward of noise-free (ODE) samples with `steps` Euler steps from seeded noise,
    /// with the exported adapter (`adapted`) or without it (the base, base adapters included).
    public func evaluate(promptIDs ids: [Int], steps: Int, seed: UInt64, adapted: Bool) throws(TrainingError) -> Double {
        let x = sample(promptIDs: ids, steps: steps, seed: seed, adapted: adapted)
        let scores: [Float]
        do { scores = try reward.score(latents: x, prompts: ids.map { driver.prompts.texts[$0] }, promptIDs: ids) } catch {
            throw .reward(error.description)
        }
        return scores.reduce(0.0) { $0 + Double($1) } / Double(max(scores.count, 1))
    }

    /// Noise-free (ODE) samples, one per entry of `ids` ([ids.count, …] latents): `steps` Euler
    /// steps of the config's schedule from the noise of `GaussianGenerator(seed:)`, with the
    /// exported adapter (`adapted`, the EMA average unless `ema` is off) or without it; the base
    /// adapters apply either way. Does not touch the training state.
    public func sample(promptIDs ids: [Int], steps: Int, seed: UInt64, adapted: Bool) -> Tensor {
        var generator = GaussianGenerator(seed: seed)
        var x = generator.tensor(shape: [ids.count] + driver.sampleShape)
        let evalSchedule = FlowMatchSchedule(steps: steps, shift: config.shift)
        var adapters = frozen
        if adapted {
            var set = AdapterSet()
            let factors = exportedFactors
            for (i, name) in modules.enumerated() {
                set.modules[name] = [AdapterSet.Branch(down: factors[2 * i], up: factors[2 * i + 1],
                                                       scale: Float(config.loraAlpha / Double(config.loraRank)))]
            }
            let trained = LoRAParameters(set, trainable: false)
            adapters = frozen.map { LoRAParameters(combining: [$0, trained]) } ?? trained
        }
        let chunk = config.effectiveBatchSize
        for i in 0..<steps {
            var parts: [Tensor] = []
            for start in stride(from: 0, to: ids.count, by: chunk) {
                let range = start..<min(ids.count, start + chunk)
                let graph = Graph(threads: config.threads, recordsGradients: false)
                let xc = Batch.slice(x, range)
                let v = driver.velocity(xc, sigma: evalSchedule.sigmas[i], promptIDs: Array(ids[range]), adapters: adapters, graph: graph).velocity
                let dt = Float(evalSchedule.dt(at: i))
                parts.append(Tensor(shape: xc.shape, scalars: zip(xc.scalars, v.scalars).map { $0 + dt * $1 }))
            }
            x = Batch.join(parts)
        }
        return x
    }
}
