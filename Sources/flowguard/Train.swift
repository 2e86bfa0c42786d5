import ArgumentParser
import Foundation
import GRPOGuard
import JSON
import SafeTensors
import Transformers

/// `flowguard train`: fine-tunes a LoRA adapter with GRPO-Guard (or Flow-GRPO) on the CPU.
struct Train: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train",
        abstract: "Fine-tune a LoRA adapter of an SD3.5/FLUX transformer with GRPO-Guard on the CPU.",
        discussion: """
        The config is a JSON object whose keys are the flags below with dashes written as underscores (docs/training.md); every flag overrides the config's value. Relative paths in the config file are relative to its folder. Required: model, prompts, reward, output.

        --prompts is a prompt-embedding file: FlowGuard runs no text encoder, so encode your prompts once with diffusers, python3 tools/prompts/encode_prompts.py --model-dir PIPELINE ... (format and options: tools/prompts/README.md).

        The run folder receives diagnostics.jsonl (one JSON line per optimizer step), config.json, checkpoints/step-NNNNNN/ (written atomically) and, at the end, final/ with the adapter in diffusers (pytorch_lora_weights.safetensors), PEFT (peft/) and kohya (adapter_kohya.safetensors) form and as a delta archive (adapter.fgdelta).

        --base-lora PATH[:SCALE] (repeatable; config key base_adapters) applies an adapter of any dialect to the frozen base before training, exactly as run --lora does: the policy, the KL reference and the final evaluation's base all include it, and the trained LoRA is a delta on top of that modified base. The exports hold only the trained LoRA: apply the base adapters again (same scales) wherever you use it. Given as flags, --base-lora replaces the config's list.

        --resume continues from the newest complete checkpoint and gives exactly the bits of an uninterrupted run. A run folder that holds anything needs --resume (continue it) or --force (replace it with a new run). --keep-checkpoints N keeps the newest N checkpoints and every older one their XOR chains need.

        Examples:
          flowguard train --config fixtures/train/sd35_tiny_demo.json
          flowguard train --config train.json --group-size 8 --steps 50 --output runs/a
          flowguard train --config train.json --output runs/a --resume --json
          flowguard train --config train.json --base-lora style_lokr.safetensors:0.8
        """
    )

    @Option(help: "The training config (JSON).")
    var config: String?

    @Flag(help: "Continue from the newest complete checkpoint in the run folder.")
    var resume = false

    @OptionGroup var overwrite: OutputOptions

    @OptionGroup var style: JSONOutput

    @OptionGroup var log: LogOptions

    @Option(name: .customLong("stop-after"), help: ArgumentHelp("Stop after this many training steps in all, without exporting (for tests).", visibility: .hidden))
    var stopAfter: Int?

    @Option(name: .customLong("model"), help: "The transformer checkpoint (file, shard index or diffusers folder).")
    var model: String?

    @Option(name: .customLong("model-config"), help: "A diffusers config.json for the model.")
    var modelConfig: String?

    @Option(name: .customLong("base-lora"), parsing: .unconditionalSingleValue,
            help: ArgumentHelp("An adapter applied to the frozen base before training, at SCALE times its own (default 1); repeatable.",
                               valueName: "PATH[:SCALE]"))
    var baseLora: [String] = []

    @Option(name: .customLong("prompts"), help: "The prompt-embedding safetensors file.")
    var prompts: String?

    @Option(name: .customLong("reward"), help: "builtin:NAME[:options] or an external reward command line.")
    var reward: String?

    @Option(name: .customLong("reward-timeout"), help: "Seconds an external reward may take per batch (300).")
    var rewardTimeout: String?

    @Option(name: .customLong("reward-on-failure"), help: "External reward failure policy: fail or retry(N).")
    var rewardOnFailure: String?

    @Option(name: .customLong("output"), help: "The run folder.")
    var output: String?

    @Option(name: .customLong("seed"), help: "Seed of every random draw (0).")
    var seed: String?

    @Option(name: .customLong("steps"), help: "Training steps, each one rollout (100).")
    var steps: String?

    @Option(name: .customLong("prompts-per-step"), help: "Prompts per rollout (1).")
    var promptsPerStep: String?

    @Option(name: .customLong("group-size"), help: "Samples per prompt G (24).")
    var groupSize: String?

    @Option(name: .customLong("batch-size"), help: "Samples per forward pass; 0 = the whole rollout (0).")
    var batchSize: String?

    @Option(name: .customLong("updates-per-rollout"), help: "Optimizer steps per rollout (1).")
    var updatesPerRollout: String?

    @Option(name: .customLong("sampling-steps"), help: "Denoising steps T of a rollout (10).")
    var samplingSteps: String?

    @Option(name: .customLong("eval-steps"), help: "Noise-free evaluation steps (40).")
    var evalSteps: String?

    @Option(name: .customLong("eval-prompts"), help: "Prompts evaluated noise-free at the end, with and without the adapter; 0 = none (4).")
    var evalPrompts: String?

    @Option(name: .customLong("shift"), help: "Schedule shift (3).")
    var shift: String?

    @Option(name: .customLong("noise-level"), help: "SDE noise level a (0.7).")
    var noiseLevel: String?

    @Option(name: .customLong("timestep-fraction"), help: "Fraction of the T steps trained (0.99).")
    var timestepFraction: String?

    @Option(name: .customLong("cfg-scale"), help: "Classifier-free guidance scale; 1 = off (1).")
    var cfgScale: String?

    @Option(name: .customLong("guidance"), help: "FLUX guidance input (3.5).")
    var guidance: String?

    @Option(name: .customLong("latent-size"), help: "Latent height and width (64).")
    var latentSize: String?

    @Option(name: .customLong("objective"), help: "The policy objective (default: grpo-guard).")
    var objective: ObjectiveKind?

    @Option(name: .customLong("clip-range"), help: "Clip range ε (2e-6 guard, 1e-4 flow-grpo).")
    var clipRange: String?

    @Option(name: .customLong("bias-mode"), help: "RatioNorm bias (default: batch).")
    var biasMode: RatioBiasMode?

    @Option(name: .customLong("reweighting"), help: "1/|dt| reweighting of each step's loss: true or false (default: on for grpo-guard, off for flow-grpo).")
    var reweighting: String?

    @Option(name: .customLong("kl-beta"), help: "KL coefficient β (0).")
    var klBeta: String?

    @Option(name: .customLong("advantage-scale"), help: "Standard deviation advantages are divided by (default: per-group).")
    var advantageScale: AdvantageScale?

    @Option(name: .customLong("advantage-clip"), help: "Advantage clamp (5).")
    var advantageClip: String?

    @Option(name: .customLong("lora-rank"), help: "LoRA rank r (32).")
    var loraRank: String?

    @Option(name: .customLong("lora-alpha"), help: "LoRA α (64).")
    var loraAlpha: String?

    @Option(name: .customLong("lora-targets"), help: "Comma-separated module names in every attention.")
    var loraTargets: String?

    @Option(name: .customLong("learning-rate"), help: "AdamW learning rate (1e-4 SD3, 2e-4 FLUX).")
    var learningRate: String?

    @Option(name: .customLong("adam-beta1"), help: "AdamW β1 (0.9).")
    var adamBeta1: String?

    @Option(name: .customLong("adam-beta2"), help: "AdamW β2 (0.999).")
    var adamBeta2: String?

    @Option(name: .customLong("adam-epsilon"), help: "AdamW ε (1e-8).")
    var adamEpsilon: String?

    @Option(name: .customLong("weight-decay"), help: "AdamW weight decay (1e-4).")
    var weightDecay: String?

    @Option(name: .customLong("max-grad-norm"), help: "Gradient-norm clip (1.0).")
    var maxGradNorm: String?

    @Option(name: .customLong("ema-decay"), help: "EMA decay (0.9).")
    var emaDecay: String?

    @Option(name: .customLong("ema-interval"), help: "EMA update interval in optimizer steps (8).")
    var emaInterval: String?

    @Option(name: .customLong("ema"), help: "Export the EMA adapter: true or false (true).")
    var ema: String?

    @Option(name: .customLong("checkpoint-every"), help: "Checkpoint every N training steps; 0 = only at the end (10).")
    var checkpointEvery: String?

    @Option(name: .customLong("checkpoint-xor"), help: "Store checkpoints as XOR deltas of the previous one (true).")
    var checkpointXor: String?

    @Option(name: .customLong("export-dtype"), help: "Dtype of the exported adapters' factors: fp32, bf16 or fp16 (fp32).")
    var exportDtype: String?

    @Option(name: .customLong("keep-checkpoints"), help: "Keep the newest N checkpoints and the older ones their XOR chains need; 0 = all (0).")
    var keepCheckpoints: String?

    @OptionGroup var compute: ThreadOptions

    /// The flags given, as config overrides.
    var overrides: [(key: String, value: String)] {
        let all: [(String, String?)] = [
            ("model", model),
            ("model_config", modelConfig),
            ("base_adapters", baseLora.isEmpty ? nil : JSONValue.array(baseLora.map { .string($0) }).compactText),
            ("prompts", prompts),
            ("reward", reward),
            ("reward_timeout", rewardTimeout),
            ("reward_on_failure", rewardOnFailure),
            ("output", output),
            ("seed", seed),
            ("steps", steps),
            ("prompts_per_step", promptsPerStep),
            ("group_size", groupSize),
            ("batch_size", batchSize),
            ("updates_per_rollout", updatesPerRollout),
            ("sampling_steps", samplingSteps),
            ("eval_steps", evalSteps),
            ("eval_prompts", evalPrompts),
            ("shift", shift),
            ("noise_level", noiseLevel),
            ("timestep_fraction", timestepFraction),
            ("cfg_scale", cfgScale),
            ("guidance", guidance),
            ("latent_size", latentSize),
            ("objective", objective?.rawValue),
            ("clip_range", clipRange),
            ("bias_mode", biasMode?.configName),
            ("reweighting", reweighting),
            ("kl_beta", klBeta),
            ("advantage_scale", advantageScale?.configName),
            ("advantage_clip", advantageClip),
            ("lora_rank", loraRank),
            ("lora_alpha", loraAlpha),
            ("lora_targets", loraTargets),
            ("learning_rate", learningRate),
            ("adam_beta1", adamBeta1),
            ("adam_beta2", adamBeta2),
            ("adam_epsilon", adamEpsilon),
            ("weight_decay", weightDecay),
            ("max_grad_norm", maxGradNorm),
            ("ema_decay", emaDecay),
            ("ema_interval", emaInterval),
            ("ema", ema),
            ("checkpoint_every", checkpointEvery),
            ("checkpoint_xor", checkpointXor),
            ("keep_checkpoints", keepCheckpoints),
            ("export_dtype", exportDtype),
            ("threads", compute.threads.map(String.init))
        ]
        return all.compactMap { key, value in value.map { (key, $0) } }
    }

    /// The flag that sets config `key` (`group_size` → `--group-size`; `base_adapters` → `--base-lora`).
    static func flag(_ key: String) -> String {
        key == "base_adapters" ? "--base-lora" : "--" + key.replacingOccurrences(of: "_", with: "-")
    }

    /// Every flag's value checked as the config checks it, so a bad value is a usage error naming
    /// the flag before any work starts; without --config, the flags must also form a whole config.
    func validate() throws {
        var scratch = TrainingConfig()
        for (key, text) in overrides {
            do { try scratch.set(key: key, text: text, source: Self.flag(key)) } catch { throw Self.usageError(error) }
        }
        if let reward, reward.hasPrefix(BuiltinRewards.prefix) {
            do { _ = try BuiltinRewards.make(spec: reward) } catch { throw ValidationError("--reward: \(error.description)") }
        }
        do { try scratch.checkBaseAdapterPaths(source: Self.flag("base_adapters")) } catch { throw Self.usageError(error) }
        if config == nil {
            do { _ = try TrainingConfig.from(overrides: overrides) } catch { throw Self.usageError(error) }
        }
        try checkRunFolder()
        try checkTargets()
    }

    /// A `--lora-targets` name that matches no attention module of the model is a usage error
    /// naming it (the model's headers are read; nothing else). A config or model that cannot be
    /// read is left for run() to report as bad input.
    func checkTargets() throws {
        guard loraTargets != nil else { return }
        let settings: TrainingConfig
        if let config {
            guard let loaded = try? TrainingConfig.load(path: config, overrides: overrides) else { return }
            settings = loaded
        } else {
            guard let built = try? TrainingConfig.from(overrides: overrides) else { return }
            settings = built
        }
        guard let weights = try? TransformerWeights(path: settings.model, configPath: settings.modelConfig) else { return }
        do { try AdapterInitialization.checkTargets(weights, targets: settings.loraTargets) } catch {
            throw ValidationError("--lora-targets: " + error.description.dropFirst("lora_targets: ".count))
        }
    }

    /// The run folder's usage rules: a folder that already holds anything is continued with
    /// `--resume` or replaced with `--force` (not both); an empty or missing one is started in.
    func checkRunFolder() throws {
        if resume && overwrite.force {
            throw ValidationError("--resume continues the run folder and --force replaces it: give one of them.")
        }
        // The folder named by --output, or by the config file (a config that cannot be read is
        // reported by run(), as bad input).
        guard let folder = output ?? config.flatMap({ try? TrainingConfig.load(path: $0, overrides: []).output }) else { return }
        var isFolder: ObjCBool = false
        guard FileManager.default.fileExists(atPath: folder, isDirectory: &isFolder) else { return }
        guard isFolder.boolValue else {
            throw ValidationError("The run folder '\(folder)' is a file; give a folder name.")
        }
        let contents = (try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []
        if !contents.isEmpty && !resume && !overwrite.force {
            throw ValidationError("The run folder '\(folder)' is not empty; pass --resume to continue its run, "
                                  + "or --force to replace it with a new run.")
        }
    }

    /// A config error about a flag, as the usage error naming that flag.
    static func usageError(_ error: TrainingError) -> Error {
        switch error {
        case let .badConfigValue(_, key, reason):
            return ValidationError("\(flag(key)): \(reason)")
        case let .missingConfigValue(_, key):
            return ValidationError("\(flag(key)) is required without --config")
        default:
            return ValidationError(error.description)
        }
    }

    func run() throws {
        let settings: TrainingConfig
        let report: TrainingReport
        do {
            if let config {
                settings = try TrainingConfig.load(path: config, overrides: overrides)
            } else {
                settings = try TrainingConfig.from(overrides: overrides)
            }
            let status = log.statusLine()
            defer { status?.finish() }
            report = try TrainingRun.run(config: settings, resume: resume, replace: overwrite.force, stopAfter: stopAfter,
                                         log: { log.note($0) }, progress: { status?.update($0) })
        } catch {
            throw CommandFailure(message: "error: \(error.description)")
        }
        print(style.json ? Self.json(report).compactText : Self.summary(report))
    }

    /// The human summary printed at the end.
    static func summary(_ r: TrainingReport) -> String {
        var lines = ["trained \(r.steps) steps (\(r.optimizerSteps) optimizer steps) of \(r.modules) LoRA modules (\(r.parameters) values) in \(String(format: "%.1f", r.seconds)) s"
                     + (r.resumedFrom.map { ", resumed from step \($0)" } ?? "")]
        for a in r.baseAdapters {
            lines.append("  base adapter: \(a.path) at scale \(String(format: "%g", a.scale)) (\(a.contentHash ?? "not hashed")), applied to the frozen base")
        }
        if !r.baseAdapters.isEmpty {
            lines.append("  the trained LoRA is a delta on top of the base with these adapters; its exports do not contain them")
        }
        if let reward = r.lastRewardMean { lines.append("  last rollout reward mean: \(String(format: "%.6g", reward))") }
        if let e = r.evaluation {
            lines.append("  noise-free evaluation reward: base \(String(format: "%.6g", e.base)) → adapted \(String(format: "%.6g", e.trained))")
        }
        lines.append("  diagnostics: \(r.diagnostics)")
        if let last = r.checkpoints.last { lines.append("  checkpoints: \(r.checkpoints.count), newest \(last)") }
        if r.exports.isEmpty {
            lines.append("  stopped before the last step: nothing exported (continue with --resume)")
        }
        for e in r.exports { lines.append("  \(e.kind): \(e.path)") }
        return lines.joined(separator: "\n")
    }

    /// The `--json` object.
    static func json(_ r: TrainingReport) -> JSONValue {
        .object([
            ("output", .string(r.output)),
            ("step_count", .int(Int64(r.steps))),
            ("optimizer_step_count", .int(Int64(r.optimizerSteps))),
            ("resumed_from", r.resumedFrom.map { .int(Int64($0)) } ?? .null),
            ("elapsed_seconds", .double(r.seconds)),
            ("last_reward_mean", r.lastRewardMean.map { .double($0) } ?? .null),
            ("module_count", .int(Int64(r.modules))),
            ("base_adapters", .array(r.baseAdapters.map {
                .object([("path", .string($0.path)), ("scale", .double($0.scale)), ("content_hash", $0.contentHash.map { .string($0) } ?? .null)])
            })),
            ("parameter_count", .int(Int64(r.parameters))),
            ("diagnostics", .string(r.diagnostics)),
            ("checkpoints", .array(r.checkpoints.map { .string($0) })),
            ("exports", .object(r.exports.map { ($0.kind, .string($0.path)) })),
            ("evaluation", r.evaluation.map { .object([("base", .double($0.base)), ("adapted", .double($0.trained))]) } ?? .null),
        ])
    }
}
