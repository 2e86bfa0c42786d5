import FlowMatching
import Foundation
import GRPOGuard
import JSON
import SafeTensors
import TensorRuntime
import Transformers

/// The fine-tuning runs' shared settings (equal budget for every method).
struct RunSettings: Codable, Equatable {
    var steps = 240
    var groupSize = 8
    var updatesPerRollout = 4
    var samplingSteps = 10
    var shift = 3.0
    var noiseLevel = 0.7
    var loraRank = 8
    var loraAlpha = 16.0
    var learningRate = 1e-3
    /// β of the "+KL" method.
    var klBeta = 0.04
    /// Evaluate the gold metrics every this many steps (and at 0).
    var evalEvery = 10
    /// Noise-free evaluation samples per class and their Euler steps.
    var evalPerClass = 16
    var evalSteps = 20
}

/// One compared method: a name and the trainer switches that make it.
struct Method: Codable, Equatable {
    var name: String
    var label: String
    var objective: String
    var reweighting: Bool
    var kl: Bool
    /// The run's learning rate is the settings' times this.
    var learningRateScale = 1.0
    /// The clip range ε; nil takes the objective's default (1e-4 Flow-GRPO, 2e-6 GRPO-Guard).
    var clipRange: Double?

    static let all: [Method] = [
        Method(name: "flow-grpo", label: "Flow-GRPO", objective: "flow-grpo", reweighting: false, kl: false),
        Method(name: "flow-grpo-kl", label: "Flow-GRPO + KL", objective: "flow-grpo", reweighting: false, kl: true),
        Method(name: "grpo-guard", label: "GRPO-Guard", objective: "grpo-guard", reweighting: true, kl: false),
        Method(name: "ratio-norm", label: "RatioNorm only", objective: "grpo-guard", reweighting: false, kl: false),
        Method(name: "reweight", label: "reweighting only", objective: "flow-grpo", reweighting: true, kl: false),
        // Controls: is GRPO-Guard's gold cost at equal proxy a matter of speed, or of its clipping?
        Method(name: "flow-grpo-slow", label: "Flow-GRPO, lr × 0.4", objective: "flow-grpo", reweighting: false, kl: false,
               learningRateScale: 0.4),
        Method(name: "grpo-guard-wide", label: "GRPO-Guard, ε = 2e-5", objective: "grpo-guard", reweighting: true, kl: false,
               clipRange: 2e-5),
    ]
}

/// The proxy reward as a trainer `Reward`.
struct ProxyReward: Reward {
    let world: ToyWorld
    var name: String { "study:proxy" }
    func score(latents: Tensor, prompts: [String], promptIDs: [Int]) throws(RewardError) -> [Float] {
        let d = world.dimension
        return (0..<latents.shape[0]).map { Float(world.proxy(latents.scalars[($0 * d)..<(($0 + 1) * d)])) }
    }
}

/// One method × seed fine-tuning run with gold evaluations.
enum StudyRun {
    /// Trains `method` with `seed` on the base model in `base` and writes into `folder`:
    /// config.json and diagnostics.jsonl as `flowguard train` does (so `flowguard report` reads
    /// the folder) and gold.jsonl, one line per evaluation: {"step", metrics…}.
    static func run(method: Method, seed: UInt64, settings s: RunSettings, world: ToyWorld, base: String, prompts: String,
                    folder: String, threads: Int, log: (String) -> Void) throws {
        var config = TrainingConfig()
        config.model = base
        config.prompts = prompts
        config.reward = "study:proxy"
        config.output = folder
        config.seed = seed
        config.steps = s.steps
        config.promptsPerStep = world.settings.classes
        config.groupSize = s.groupSize
        config.batchSize = world.settings.classes * s.groupSize / max(1, s.updatesPerRollout)
        config.updatesPerRollout = s.updatesPerRollout
        config.samplingSteps = s.samplingSteps
        config.shift = s.shift
        config.noiseLevel = s.noiseLevel
        config.latentSize = world.settings.side
        config.objective = ObjectiveKind(rawValue: method.objective)!
        config.reweighting = method.reweighting
        config.klBeta = method.kl ? s.klBeta : 0
        config.loraRank = s.loraRank
        config.loraAlpha = s.loraAlpha
        config.learningRate = s.learningRate * method.learningRateScale
        config.clipRange = method.clipRange
        config.threads = threads
        config.useEMA = false
        config.checkpointEvery = 0
        config.evalPrompts = 0
        try config.validate(source: "study settings")

        let weights = try TransformerWeights(path: base)
        let model = try TransformerModel.load(weights)
        let promptSet = try TrainingPrompts.load(path: prompts, architecture: weights.architecture)
        let trainer = try Trainer(config: config, weights: weights, model: model, prompts: promptSet, reward: ProxyReward(world: world))

        let fm = FileManager.default
        try fm.createDirectory(atPath: folder, withIntermediateDirectories: true)
        try Data((config.json.compactText + "\n").utf8).write(to: URL(fileURLWithPath: folder + "/config.json"), options: .atomic)
        var diagnostics = ""
        var gold = ""
        let evalIDs = (0..<world.settings.classes).flatMap { [Int](repeating: $0, count: s.evalPerClass) }
        // The same evaluation noise for every method and seed: curves differ only by training.
        let evalSeed: UInt64 = 0xE7A1
        func evaluate() {
            let x = trainer.sample(promptIDs: evalIDs, steps: s.evalSteps, seed: evalSeed, adapted: trainer.step > 0)
            let m = world.metrics(samples: x.scalars, labels: evalIDs)
            gold += JSONValue.object([("step", .int(Int64(trainer.step)))] + m.jsonFields).compactText + "\n"
        }
        evaluate()
        let started = Date()
        while trainer.step < s.steps {
            let records = try trainer.trainStep()
            for r in records { diagnostics += r.json.compactText + "\n" }
            if trainer.step % s.evalEvery == 0 || trainer.step == s.steps {
                evaluate()
                let last = records.last!
                log(String(format: "%@ seed %llu: step %d/%d  reward %.3f  %.0f s", method.name, seed, trainer.step, s.steps,
                           last.rewardMean, Date().timeIntervalSince(started)))
            }
        }
        try Data(diagnostics.utf8).write(to: URL(fileURLWithPath: folder + "/diagnostics.jsonl"), options: .atomic)
        try Data(gold.utf8).write(to: URL(fileURLWithPath: folder + "/gold.jsonl"), options: .atomic)
    }
}

extension ToyWorld.Metrics {
    /// The metrics as JSON members (snake_case keys, as in gold.jsonl).
    var jsonFields: [(String, JSONValue)] {
        [("proxy", .double(proxy)), ("quality", .double(quality)), ("hack", .double(hack)),
         ("excess_nll", .double(excessNLL)), ("off_manifold", .double(offManifold)),
         ("class_accuracy", .double(classAccuracy)), ("diversity", .double(diversity))]
    }
}
