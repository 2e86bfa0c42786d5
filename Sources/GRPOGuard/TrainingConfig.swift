import Foundation
import JSON
import SafeTensors

/// Which per-step objective trains the adapter.
public enum ObjectiveKind: String, Sendable, Equatable, CaseIterable {
    /// GRPO-Guard: RatioNorm, clipping on r̂ (ε 2e-6), reweighting by 1/|dt| (default).
    case grpoGuard = "grpo-guard"
    /// Vanilla Flow-GRPO: clipping on the raw ratio (ε 1e-4), optional KL.
    case flowGRPO = "flow-grpo"
}

/// Everything a training run is told: the files, the sampling and objective settings, the LoRA
/// shape, the optimizer and the checkpointing (design §6 defaults). Read from a JSON object whose
/// keys are `TrainingConfig.keys`; every key can also be given as a CLI flag (`--group-size 4`).
/// Relative paths in a config file are taken relative to the file's folder.
public struct TrainingConfig: Sendable, Equatable {
    /// The transformer checkpoint (file, shard index or diffusers folder). Required.
    public var model: String = ""
    /// A diffusers `config.json` for the model (optional).
    public var modelConfig: String?
    /// Adapters applied to the frozen base before training, in order (any dialect; LoKr, LoHa,
    /// DoRA and full deltas merged exactly, low-rank ones as frozen branches). The trained LoRA
    /// is a delta on top of the base so modified; the exports hold only the trained LoRA.
    public var baseAdapters: [BaseAdapter] = []
    /// The prompt-embedding safetensors file. Required.
    public var prompts: String = ""
    /// `builtin:NAME[:options]` or an external command line (split on spaces). Required.
    public var reward: String = ""
    /// Seconds an external reward may take for one batch.
    public var rewardTimeout: Double = 300
    /// An external reward's failure policy: `fail` or `retry(N)`.
    public var rewardOnFailure: String = "fail"
    /// The run folder (diagnostics, checkpoints, exports). Required.
    public var output: String = ""
    /// The seed of every random draw (noise, LoRA initialization, prompt order).
    public var seed: UInt64 = 0
    /// Training steps; each is one rollout followed by `updatesPerRollout` optimizer steps.
    public var steps: Int = 100
    /// Prompts sampled per rollout.
    public var promptsPerStep: Int = 1
    /// Samples per prompt, G.
    public var groupSize: Int = 24
    /// Samples per forward pass (rollout and training); 0 = the whole rollout at once.
    public var batchSize: Int = 0
    /// Optimizer steps per rollout: the rollout's minibatches are split evenly between them.
    public var updatesPerRollout: Int = 1
    /// Denoising steps T of a rollout.
    public var samplingSteps: Int = 10
    /// Denoising steps of the noise-free (ODE) evaluation at the end of a run.
    public var evalSteps: Int = 40
    /// Prompts (the first ones of the set) evaluated at the end, one sample each, with and
    /// without the adapter; 0 skips the evaluation.
    public var evalPrompts: Int = 4
    /// The timestep shift of the schedule (3 for SD3.5).
    public var shift: Double = 3
    /// The SDE noise level a.
    public var noiseLevel: Double = 0.7
    /// Fraction of the T steps trained: ⌊T·fraction⌋ first steps (0.99 of 10 → 9).
    public var timestepFraction: Double = 0.99
    /// Classifier-free guidance scale; 1 turns it off, above 1 needs negative embeddings.
    public var cfgScale: Double = 1
    /// FLUX's guidance input (models with a guidance embedder).
    public var guidance: Double = 3.5
    /// Latent height and width (SD3: the VAE latent side, e.g. 64 for 512²; FLUX: twice the token grid side).
    public var latentSize: Int = 64
    /// The objective.
    public var objective: ObjectiveKind = .grpoGuard
    /// The clip range ε; nil takes the objective's default (2e-6 guard, 1e-4 Flow-GRPO).
    public var clipRange: Double?
    /// How GRPO-Guard's RatioNorm bias is averaged.
    public var biasMode: RatioBiasMode = .batch
    /// Reweighting of each step's policy loss by 1/|dt|; nil takes the objective's own choice
    /// (on for GRPO-Guard, off for Flow-GRPO). On with Flow-GRPO gives the "reweighting only"
    /// ablation, off with GRPO-Guard "RatioNorm only".
    public var reweighting: Bool?
    /// The reweighting in effect.
    public var effectiveReweighting: Bool { reweighting ?? (objective == .grpoGuard) }
    /// The KL coefficient β (needs a reference forward without the adapter).
    public var klBeta: Double = 0
    /// How advantages are scaled.
    public var advantageScale: AdvantageScale = .perGroup
    /// Advantages are clamped to ±this.
    public var advantageClip: Double = 5
    /// LoRA rank r.
    public var loraRank: Int = 32
    /// LoRA α (scale α/r).
    public var loraAlpha: Double = 64
    /// Module suffixes adapted in every attention (`attn`, `attn2`).
    public var loraTargets: [String] = ["to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out"]
    /// AdamW learning rate; nil takes 1e-4 (SD3) or 2e-4 (FLUX).
    public var learningRate: Double?
    /// AdamW β₁.
    public var adamBeta1: Double = 0.9
    /// AdamW β₂.
    public var adamBeta2: Double = 0.999
    /// AdamW ε.
    public var adamEpsilon: Double = 1e-8
    /// AdamW decoupled weight decay.
    public var weightDecay: Double = 1e-4
    /// Global gradient-norm clip.
    public var maxGradNorm: Double = 1
    /// EMA decay ceiling.
    public var emaDecay: Double = 0.9
    /// EMA update interval (optimizer steps).
    public var emaInterval: Int = 8
    /// Export (and checkpoint) the EMA adapter rather than the raw parameters.
    public var useEMA: Bool = true
    /// A checkpoint every this many training steps (0: only at the end).
    public var checkpointEvery: Int = 10
    /// Store each checkpoint's adapter as an XOR delta of the previous checkpoint's archive.
    public var checkpointXOR: Bool = true
    /// Keep only the newest this many checkpoints (and every older one their XOR chains need);
    /// 0 keeps all.
    public var keepCheckpoints: Int = 0
    /// The dtype of the exported adapters' factors in `RUN/final/` (float32, bf16 or fp16;
    /// checkpoints are always float32).
    public var exportDType: DType = .f32
    /// Compute threads.
    public var threads: Int = 1

    /// The defaults (required paths empty).
    public init() {}

    /// The clip range in effect.
    public var effectiveClipRange: Double { clipRange ?? (objective == .grpoGuard ? 2e-6 : 1e-4) }

    /// The number of trained timesteps: ⌊T·fraction⌋ clamped to 1…T.
    public var trainedTimesteps: Int { min(samplingSteps, max(1, Int(Double(samplingSteps) * timestepFraction))) }

    /// Samples per rollout.
    public var samplesPerStep: Int { promptsPerStep * groupSize }

    /// Samples per forward in effect.
    public var effectiveBatchSize: Int { batchSize == 0 ? samplesPerStep : batchSize }

    /// The step objective the config selects.
    public var stepObjective: any StepObjective {
        switch objective {
        case .grpoGuard: return GuardObjective(clipRange: effectiveClipRange, biasMode: biasMode, reweights: effectiveReweighting, klCoefficient: klBeta)
        case .flowGRPO: return VanillaObjective(clipRange: effectiveClipRange, klCoefficient: klBeta, reweights: effectiveReweighting)
        }
    }

    // MARK: reading

    /// Reads a config file, applies `overrides` (key → text, as from CLI flags) and validates.
    public static func load(path: String, overrides: [(key: String, value: String)] = []) throws(TrainingError) -> TrainingConfig {
        let data: [UInt8]
        do { data = try readWholeFile(path, limit: 16 << 20) } catch {
            throw .unreadableConfig(path: path, reason: "cannot be read (\(error))")
        }
        let json: JSONValue
        do { json = try JSONValue.parse(data) } catch {
            throw .unreadableConfig(path: path, reason: "is not valid JSON: \(error)")
        }
        guard let members = json.objectMembers else { throw .unreadableConfig(path: path, reason: "is not a JSON object") }
        var config = TrainingConfig()
        var seen = Set<String>()
        let folder = URL(fileURLWithPath: path).deletingLastPathComponent().path
        for (key, value) in members {
            guard seen.insert(key).inserted else { throw .badConfigValue(source: path, key: key, reason: "is given twice") }
            try config.set(key: key, value: value, source: path)
            if Self.pathKeys.contains(key) || key == "base_adapters" { config.resolvePath(key: key, relativeTo: folder) }
        }
        for (key, text) in overrides { try config.set(key: key, text: text, source: "--\(key.replacingOccurrences(of: "_", with: "-"))") }
        try config.validate(source: path)
        return config
    }

    /// A config from overrides alone (no file), validated.
    public static func from(overrides: [(key: String, value: String)]) throws(TrainingError) -> TrainingConfig {
        var config = TrainingConfig()
        for (key, text) in overrides { try config.set(key: key, text: text, source: "--\(key.replacingOccurrences(of: "_", with: "-"))") }
        try config.validate(source: "(command line)")
        return config
    }

    /// Keys whose values are paths.
    static let pathKeys: Set<String> = ["model", "model_config", "prompts", "output"]

    /// Makes a relative path key absolute against `folder`.
    mutating func resolvePath(key: String, relativeTo folder: String) {
        func fix(_ p: String) -> String { p.isEmpty || p.hasPrefix("/") ? p : ((folder + "/" + p) as NSString).standardizingPath }
        switch key {
        case "model": model = fix(model)
        case "model_config": modelConfig = modelConfig.map(fix)
        case "prompts": prompts = fix(prompts)
        case "output": output = fix(output)
        case "base_adapters": for i in baseAdapters.indices { baseAdapters[i].path = fix(baseAdapters[i].path) }
        default: break
        }
    }

    /// Every config key, in documentation order.
    public static let keys: [String] = [
        "model", "model_config", "base_adapters", "prompts", "reward", "reward_timeout", "reward_on_failure", "output", "seed", "steps",
        "prompts_per_step", "group_size", "batch_size", "updates_per_rollout", "sampling_steps", "eval_steps", "eval_prompts", "shift",
        "noise_level", "timestep_fraction", "cfg_scale", "guidance", "latent_size", "objective", "clip_range", "bias_mode",
        "reweighting", "kl_beta", "advantage_scale", "advantage_clip", "lora_rank", "lora_alpha", "lora_targets",
        "learning_rate", "adam_beta1", "adam_beta2", "adam_epsilon", "weight_decay", "max_grad_norm", "ema_decay",
        "ema_interval", "ema", "checkpoint_every", "checkpoint_xor", "keep_checkpoints", "export_dtype", "threads",
    ]

    /// Sets `key` from CLI text: JSON when it parses as a JSON number/bool/array/null, else the string itself.
    /// `base_adapters` takes a JSON array of entries, or one `PATH[:SCALE]` entry.
    public mutating func set(key: String, text: String, source: String) throws(TrainingError) {
        if key == "base_adapters" {
            let t = text.trimmingCharacters(in: .whitespaces)
            guard t.hasPrefix("[") else { return try set(key: key, value: .array([.string(text)]), source: source) }
            guard let parsed = try? JSONValue.parse(Array(t.utf8)) else {
                throw .badConfigValue(source: source, key: key, reason: "is not a JSON array of adapters: \(text)")
            }
            return try set(key: key, value: parsed, source: source)
        }
        let stringKeys: Set<String> = ["model", "model_config", "prompts", "reward", "reward_on_failure", "output",
                                       "objective", "bias_mode", "advantage_scale", "lora_targets", "export_dtype"]
        let value: JSONValue
        let t = text.trimmingCharacters(in: .whitespaces)
        if stringKeys.contains(key) {
            value = .string(text)
        } else if let i = Int64(t) {
            value = .int(i)
        } else if let u = UInt64(t) {
            value = .uint(u)
        } else if let d = Double(t), d.isFinite {
            value = .double(d)
        } else if let b = ["true": true, "false": false][t.lowercased()] {
            value = .bool(b)
        } else if t == "null" {
            value = .null
        } else {
            value = .string(text)
        }
        try set(key: key, value: value, source: source)
    }

    /// Sets `key` from a JSON value; unknown keys and bad values name `source` and the key.
    public mutating func set(key: String, value: JSONValue, source: String) throws(TrainingError) {
        let v = ConfigValue(key: key, value: value, source: source)
        switch key {
        case "model": model = try v.string()
        case "model_config": modelConfig = try v.optionalString()
        case "base_adapters": baseAdapters = try v.baseAdapters()
        case "prompts": prompts = try v.string()
        case "reward": reward = try v.command()
        case "reward_timeout": rewardTimeout = try v.double(open: 0)
        case "reward_on_failure":
            let s = try v.string()
            guard RewardFailurePolicy(s) != nil else { throw v.bad("must be fail or retry(N), found \"\(s)\"") }
            rewardOnFailure = s
        case "output": output = try v.string()
        case "seed":
            guard let i = value.integer, i >= 0 else { throw v.bad("must be a non-negative integer, found \(value.compactText)") }
            seed = UInt64(i)
        case "steps": steps = try v.int(min: 1)
        case "prompts_per_step": promptsPerStep = try v.int(min: 1)
        case "group_size": groupSize = try v.int(min: 2)
        case "batch_size": batchSize = try v.int(min: 0)
        case "updates_per_rollout": updatesPerRollout = try v.int(min: 1)
        case "sampling_steps": samplingSteps = try v.int(min: 2)
        case "eval_steps": evalSteps = try v.int(min: 1)
        case "eval_prompts": evalPrompts = try v.int(min: 0)
        case "shift": shift = try v.double(open: 0)
        case "noise_level": noiseLevel = try v.double(0...10)
        case "timestep_fraction": timestepFraction = try v.double(open: 0)
            if timestepFraction > 1 { throw v.bad("must lie in (0, 1], found \(timestepFraction)") }
        case "cfg_scale": cfgScale = try v.double(1...100)
        case "guidance": guidance = try v.double(0...100)
        case "latent_size": latentSize = try v.int(min: 2)
        case "objective": objective = try v.choice(ObjectiveKind.self, ["grpo-guard": .grpoGuard, "flow-grpo": .flowGRPO])
        case "clip_range": clipRange = value == .null ? nil : try v.double(open: 0)
        case "bias_mode": biasMode = try v.choice(RatioBiasMode.self, ["batch": .batch, "per-sample": .perSample])
        case "reweighting": reweighting = value == .null ? nil : try v.bool()
        case "kl_beta": klBeta = try v.double(0...1e6)
        case "advantage_scale": advantageScale = try v.choice(AdvantageScale.self, ["per-group": .perGroup, "global": .global])
        case "advantage_clip": advantageClip = try v.double(open: 0)
        case "lora_rank": loraRank = try v.int(min: 1)
        case "lora_alpha": loraAlpha = try v.double(open: 0)
        case "lora_targets": loraTargets = try v.moduleNames()
        case "learning_rate": learningRate = value == .null ? nil : try v.double(open: 0)
        case "adam_beta1": adamBeta1 = try v.double(0...0.999999)
        case "adam_beta2": adamBeta2 = try v.double(0...0.999999999)
        case "adam_epsilon": adamEpsilon = try v.double(open: 0)
        case "weight_decay": weightDecay = try v.double(0...1)
        case "max_grad_norm": maxGradNorm = try v.double(open: 0)
        case "ema_decay": emaDecay = try v.double(0...1)
        case "ema_interval": emaInterval = try v.int(min: 1)
        case "ema": useEMA = try v.bool()
        case "checkpoint_every": checkpointEvery = try v.int(min: 0)
        case "checkpoint_xor": checkpointXOR = try v.bool()
        case "keep_checkpoints": keepCheckpoints = try v.int(min: 0)
        case "export_dtype": exportDType = try v.choice(DType.self, Self.exportDTypeNames)
        case "threads": threads = try v.int(min: 1)
            if threads > 1024 { throw v.bad("must be at most 1024, found \(threads)") }
        default:
            let near = Self.keys.filter { $0.hasPrefix(String(key.prefix(4))) }.prefix(3)
            throw v.bad("is not a config key" + (near.isEmpty ? "" : " (did you mean \(near.map { "\"\($0)\"" }.joined(separator: " or "))?)"))
        }
    }

    /// Checks required keys and the relations between values.
    public func validate(source: String) throws(TrainingError) {
        for (key, value) in [("model", model), ("prompts", prompts), ("reward", reward), ("output", output)] where value.isEmpty {
            throw .missingConfigValue(source: source, key: key)
        }
        try checkBaseAdapterPaths(source: source)
        let b = effectiveBatchSize
        guard samplesPerStep % b == 0 else {
            throw .badConfigValue(source: source, key: "batch_size",
                                  reason: "\(b) does not divide the \(samplesPerStep) samples of a rollout (prompts_per_step × group_size)")
        }
        let minibatches = samplesPerStep / b
        guard minibatches % updatesPerRollout == 0 else {
            throw .badConfigValue(source: source, key: "updates_per_rollout",
                                  reason: "\(updatesPerRollout) does not divide the rollout's \(minibatches) minibatches of \(b) samples")
        }
        if reward.hasPrefix(BuiltinRewards.prefix) {
            do { _ = try BuiltinRewards.make(spec: reward) } catch {
                throw .badConfigValue(source: source, key: "reward", reason: error.description)
            }
        }
    }

    /// The config as a JSON object (every key; a run records it in `RUN/config.json`).
    public var json: JSONValue {
        func d(_ x: Double) -> JSONValue { .double(x) }
        func i(_ x: Int) -> JSONValue { .int(Int64(x)) }
        return .object([
            ("model", .string(model)), ("model_config", modelConfig.map { .string($0) } ?? .null),
            ("base_adapters", .array(baseAdapters.map(\.json))),
            ("prompts", .string(prompts)), ("reward", .string(reward)), ("reward_timeout", d(rewardTimeout)),
            ("reward_on_failure", .string(rewardOnFailure)), ("output", .string(output)), ("seed", .uint(seed)),
            ("steps", i(steps)), ("prompts_per_step", i(promptsPerStep)), ("group_size", i(groupSize)),
            ("batch_size", i(batchSize)), ("updates_per_rollout", i(updatesPerRollout)),
            ("sampling_steps", i(samplingSteps)), ("eval_steps", i(evalSteps)), ("eval_prompts", i(evalPrompts)), ("shift", d(shift)),
            ("noise_level", d(noiseLevel)), ("timestep_fraction", d(timestepFraction)), ("cfg_scale", d(cfgScale)),
            ("guidance", d(guidance)), ("latent_size", i(latentSize)), ("objective", .string(objective.rawValue)),
            ("clip_range", clipRange.map(d) ?? .null), ("bias_mode", .string(biasMode == .batch ? "batch" : "per-sample")),
            ("reweighting", .bool(effectiveReweighting)), ("kl_beta", d(klBeta)),
            ("advantage_scale", .string(advantageScale == .perGroup ? "per-group" : "global")),
            ("advantage_clip", d(advantageClip)), ("lora_rank", i(loraRank)), ("lora_alpha", d(loraAlpha)),
            ("lora_targets", .array(loraTargets.map { .string($0) })), ("learning_rate", learningRate.map(d) ?? .null),
            ("adam_beta1", d(adamBeta1)), ("adam_beta2", d(adamBeta2)), ("adam_epsilon", d(adamEpsilon)),
            ("weight_decay", d(weightDecay)), ("max_grad_norm", d(maxGradNorm)), ("ema_decay", d(emaDecay)),
            ("ema_interval", i(emaInterval)), ("ema", .bool(useEMA)), ("checkpoint_every", i(checkpointEvery)),
            ("checkpoint_xor", .bool(checkpointXOR)), ("keep_checkpoints", i(keepCheckpoints)),
            ("export_dtype", .string(Self.exportDTypeNames.first { $0.value == exportDType }?.key ?? "fp32")), ("threads", i(threads)),
        ])
    }

    /// The spellings of `export_dtype`.
    static let exportDTypeNames: [String: DType] = ["fp32": .f32, "bf16": .bf16, "fp16": .f16]

    /// The keys a resumed run must agree on with the checkpoint's run: everything but the output
    /// folder, the step count (a run may be extended), checkpoint cadence, reward transport
    /// settings, evaluation and threads (a different thread count still resumes, but bit-exactness
    /// is promised only for the same count). `base_adapters` (paths, scales, content hashes)
    /// counts when not empty: without entries the fingerprint is the one runs made before the key
    /// existed recorded.
    var fingerprintJSON: JSONValue {
        guard case let .object(members) = json else { return json }
        var ignored: Set<String> = ["output", "checkpoint_every", "checkpoint_xor", "keep_checkpoints", "export_dtype", "steps", "reward_timeout", "reward_on_failure", "eval_steps", "eval_prompts", "threads"]
        if baseAdapters.isEmpty { ignored.insert("base_adapters") }
        return .object(members.filter { !ignored.contains($0.key) })
    }
}

extension JSONValue {
    /// An integer payload (also a double with an integral value), if this is one.
    var integer: Int? {
        switch self {
        case let .int(v): return Int(v)
        case let .uint(v): return v <= UInt64(Int.max) ? Int(v) : nil
        case let .double(v): return v == v.rounded() && abs(v) < 1e15 ? Int(v) : nil
        default: return nil
        }
    }
}

/// One config value being read for `TrainingConfig.set(key:value:source:)`: typed readers whose
/// failures name the source and the key.
struct ConfigValue {
    let key: String
    let value: JSONValue
    let source: String

    func bad(_ reason: String) -> TrainingError { .badConfigValue(source: source, key: key, reason: reason) }

    func string() throws(TrainingError) -> String {
        // Numbers are accepted where a string is expected only for the reward spec's sake? No: strings only.
        guard let s = value.stringValue else { throw bad("must be a string, found \(value.compactText)") }
        return s
    }

    func optionalString() throws(TrainingError) -> String? { value == .null ? nil : try string() }

    func double(_ range: ClosedRange<Double>? = nil, open lower: Double? = nil) throws(TrainingError) -> Double {
        guard let d = value.doubleValue, d.isFinite else { throw bad("must be a number, found \(value.compactText)") }
        if let lower, !(d > lower) { throw bad("must be greater than \(lower), found \(d)") }
        if let range, !range.contains(d) { throw bad("must lie in \(range.lowerBound)…\(range.upperBound), found \(d)") }
        return d
    }

    func int(min: Int) throws(TrainingError) -> Int {
        guard let i = value.integer else { throw bad("must be an integer, found \(value.compactText)") }
        guard i >= min else { throw bad("must be at least \(min), found \(i)") }
        return i
    }

    func bool() throws(TrainingError) -> Bool {
        if case let .bool(b) = value { return b }
        if let s = value.stringValue, let b = ["true": true, "false": false, "on": true, "off": false][s.lowercased()] { return b }
        throw bad("must be true or false, found \(value.compactText)")
    }

    func choice<T: RawRepresentable>(_ type: T.Type, _ options: [String: T]) throws(TrainingError) -> T where T.RawValue == String {
        let s = try string()
        guard let v = options[s] else { throw bad("must be one of \(options.keys.sorted().joined(separator: ", ")), found \"\(s)\"") }
        return v
    }

    /// A command: a string, or an array of strings joined with spaces (not empty).
    func command() throws(TrainingError) -> String {
        guard let parts = value.arrayValue else { return try string() }
        var words: [String] = []
        for p in parts {
            guard let w = p.stringValue else { throw bad("a command given as an array must hold strings, found \(p.compactText)") }
            words.append(w)
        }
        guard !words.isEmpty else { throw bad("the command is empty") }
        return words.joined(separator: " ")
    }

    /// Module names: an array of non-empty strings, or one comma-separated string (at least one name).
    func moduleNames() throws(TrainingError) -> [String] {
        var targets: [String] = []
        if let items = value.arrayValue {
            for item in items {
                guard let s = item.stringValue, !s.isEmpty else { throw bad("must be a list of module names, found \(item.compactText)") }
                targets.append(s)
            }
        } else {
            targets = try string().split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        }
        guard !targets.isEmpty else { throw bad("names no module") }
        return targets
    }
}
