import DeltaArchive
import Foundation
import JSON
import LoRA
import SafeTensors
import SystemSupport
import Transformers

/// What a finished (or deliberately stopped) run produced.
public struct TrainingReport: Sendable {
    /// The run folder.
    public var output: String
    /// Training steps completed.
    public var steps: Int
    /// Optimizer steps taken.
    public var optimizerSteps: Int
    /// The step the run resumed from (nil for a fresh start).
    public var resumedFrom: Int?
    /// Seconds spent in this process.
    public var seconds: Double
    /// The last rollout's mean reward.
    public var lastRewardMean: Double?
    /// `RUN/diagnostics.jsonl`.
    public var diagnostics: String
    /// Complete checkpoint folders, oldest first.
    public var checkpoints: [String]
    /// Exported files by kind (`peft`, `diffusers`, `kohya`, `archive`); empty when stopped early.
    public var exports: [(kind: String, path: String)]
    /// Noise-free evaluation reward without and with the adapter (when the run finished).
    public var evaluation: (base: Double, trained: Double)?
    /// The number of adapted modules.
    public var modules: Int
    /// The number of trainable values.
    public var parameters: Int
    /// The adapters applied to the frozen base before training (content hashes filled in); the
    /// trained adapter is a delta on top of the base so modified and does not contain them.
    public var baseAdapters: [TrainingConfig.BaseAdapter] = []
}

/// Runs `flowguard train`: loads the model, prompts and reward, creates or resumes the run folder,
/// trains with checkpoints, and exports the adapter. Layout of the run folder: `docs/training.md`.
public enum TrainingRun {
    /// Trains per `config`. With `resume` the newest complete checkpoint in the run folder is
    /// continued (bit-identical to an uninterrupted run); without it the folder must hold none.
    /// `stopAfter` ends the process's work after that many training steps in all (for tests of
    /// interruption: no export). With `replace`, an existing run folder is moved aside and removed
    /// once the model, prompts and reward have loaded, and the run starts afresh in a new one.
    /// `log` receives notes (`resuming …`); `progress` receives the status line of each training
    /// step (the caller decides how often to show it).
    ///
    /// The config's `baseAdapters` are applied to the frozen base first (`loadBase`): the policy,
    /// the KL reference and the evaluation's base all include them, the trained adapter is a delta
    /// on top, and their paths, scales and content hashes are part of the recorded config (a
    /// resume with other base adapters is refused).
    public static func run(config: TrainingConfig, resume: Bool, replace: Bool = false, stopAfter: Int? = nil,
                           log: (String) -> Void = { _ in },
                           progress: (String) -> Void = { _ in }) throws(TrainingError) -> TrainingReport {
        let started = Date()
        let trainer = try makeTrainer(config: config, log: log)
        defer { (trainer.reward as? ExternalReward)?.close() }
        let config = trainer.config
        let prompts = trainer.driver.prompts

        let run = config.output
        let checkpoints = run + "/checkpoints"
        let fingerprint = config.fingerprintJSON.compactText
        if replace && !resume { try removeRunFolder(run) }
        let (resumedFrom, diagnosticsLength) = try openRunFolder(trainer, resume: resume, fingerprint: fingerprint, log: log)
        let diagnosticsPath = run + "/diagnostics.jsonl"
        let diagnostics = try DiagnosticsLog(path: diagnosticsPath, truncateTo: diagnosticsLength)
        try writeFileAtomically(Array((config.json.compactText + "\n").utf8), to: run + "/config.json")

        let target = min(config.steps, stopAfter ?? config.steps)
        let lastReward = try train(trainer, until: target, diagnostics: diagnostics, fingerprint: fingerprint, progress: progress)
        var exports: [(kind: String, path: String)] = []
        var evaluation: (base: Double, trained: Double)?
        if trainer.step >= config.steps {
            (exports, evaluation) = try finish(trainer, promptCount: prompts.count, diagnostics: diagnostics, fingerprint: fingerprint)
        }
        return TrainingReport(output: run, steps: trainer.step, optimizerSteps: trainer.optimizerSteps, resumedFrom: resumedFrom,
                              seconds: Date().timeIntervalSince(started), lastRewardMean: lastReward, diagnostics: diagnosticsPath,
                              checkpoints: TrainingCheckpoint.list(in: checkpoints).map(\.path), exports: exports,
                              evaluation: evaluation, modules: trainer.modules.count,
                              parameters: trainer.parameters.variables.reduce(0) { $0 + $1.value.count },
                              baseAdapters: config.baseAdapters)
    }

    /// The trainer `run` trains with, before any run folder is touched: the model at
    /// `config.model` with `config.baseAdapters` applied (`loadBase`), the prompts, the reward
    /// and a fresh adapter. Its `config` is `config` with the base adapters' paths made absolute
    /// and their content hashes filled in. Close an external reward (`trainer.reward`) when done.
    public static func makeTrainer(config: TrainingConfig, log: (String) -> Void = { _ in }) throws(TrainingError) -> Trainer {
        let (config, base) = try loadBase(config, log: log)
        let model: any DiffusionTransformer
        do { model = try TransformerModel.load(base.weights) } catch {
            throw .model(path: config.model, reason: error.description)
        }
        let prompts = try TrainingPrompts.load(path: config.prompts, architecture: base.weights.architecture)
        let reward = try makeReward(config)
        do {
            return try Trainer(config: config, weights: base.weights, model: model, prompts: prompts, reward: reward,
                               baseBranches: base.branches)
        } catch {
            (reward as? ExternalReward)?.close()
            throw error
        }
    }

    /// Removes an earlier run folder: renamed aside in one step (so it is whole or gone), then
    /// deleted.
    static func removeRunFolder(_ run: String) throws(TrainingError) {
        let folder = FileSystem.trimmingTrailingSlashes(run)
        guard FileSystem.exists(folder) else { return }
        let aside = FileSystem.parentFolder(of: folder) + "/." + FileSystem.lastComponent(of: folder) + ".old-\(ProcessControl.currentID)"
        FileSystem.removeTree(aside)
        do { try FileSystem.rename(folder, to: aside, operation: "replace the run folder") } catch {
            throw .io(path: folder, reason: "cannot replace the run folder: \(error)")
        }
        FileSystem.removeTree(aside)
    }

    /// Creates `RUN/checkpoints` (removing a killed run's leftovers) and, with `resume`, restores
    /// the trainer from the newest checkpoint, which must have been made with the same config
    /// (`fingerprint`); without `resume` the folder must hold no checkpoint. Returns the step
    /// resumed from and the diagnostics file's length at that step (0 for a new run).
    static func openRunFolder(_ trainer: Trainer, resume: Bool, fingerprint: String,
                              log: (String) -> Void) throws(TrainingError) -> (resumedFrom: Int?, diagnosticsLength: Int) {
        let run = trainer.config.output
        let checkpoints = run + "/checkpoints"
        do { try FileManager.default.createDirectory(atPath: checkpoints, withIntermediateDirectories: true) } catch {
            throw .io(path: checkpoints, reason: "cannot create the run folder: \(error.localizedDescription)")
        }
        TrainingCheckpoint.removeStale(in: checkpoints)
        let existing = TrainingCheckpoint.list(in: checkpoints)
        if resume, let newest = existing.last {
            let (state, stored) = try TrainingCheckpoint.readState(at: newest.path)
            guard stored == fingerprint else {
                let differs = difference(stored, fingerprint)
                let what = differs.hasPrefix("base_adapters ")
                    ? "it was trained on a base with other adapters applied (\(differs))"
                    : "it was made with a different config (\(differs))"
                throw .badCheckpoint(path: newest.path, reason: what + "; resume with the same settings or train into a new output folder")
            }
            try trainer.restore(state, source: newest.path)
            log("resuming \(run) from step \(state.step)")
            return (state.step, newest.diagnosticsBytes)
        } else if !resume, !existing.isEmpty {
            throw .io(path: run, reason: "the run folder already holds checkpoints (up to step \(existing.last!.step)); "
                      + "pass --resume to continue it, or choose another output folder")
        }
        return (nil, 0)
    }

    /// Trains until step `target`: each step's records go to the diagnostics log and a status
    /// line to `progress`; a checkpoint every `checkpointEvery` steps and at the last step. Returns the
    /// last step's mean reward (nil when no step ran).
    static func train(_ trainer: Trainer, until target: Int, diagnostics: DiagnosticsLog, fingerprint: String,
                      progress: (String) -> Void) throws(TrainingError) -> Double? {
        let config = trainer.config
        let checkpoints = config.output + "/checkpoints"
        var lastReward: Double?
        while trainer.step < target {
            let t0 = Date()
            let records = try trainer.trainStep()
            for r in records { try diagnostics.append(r.json) }
            let seconds = Date().timeIntervalSince(t0)
            lastReward = records.last?.rewardMean
            if let r = records.last { progress(progressLine(r, total: config.steps, secondsPerStep: seconds, done: trainer.step)) }
            let due = config.checkpointEvery > 0 && trainer.step % config.checkpointEvery == 0
            if due || trainer.step == config.steps {
                try checkpoint(trainer, diagnostics: diagnostics, fingerprint: fingerprint, folder: checkpoints)
            }
        }
        return lastReward
    }

    /// After the last step: its checkpoint (if not written yet), the exports in `RUN/final/`, and
    /// the evaluation of base and trained model on the first `evalPrompts` prompts (nil for none),
    /// also saved as `RUN/evaluation.json`.
    static func finish(_ trainer: Trainer, promptCount: Int, diagnostics: DiagnosticsLog, fingerprint: String) throws(TrainingError)
        -> (exports: [(kind: String, path: String)], evaluation: (base: Double, trained: Double)?) {
        let config = trainer.config
        let checkpoints = config.output + "/checkpoints"
        if TrainingCheckpoint.list(in: checkpoints).last?.step != trainer.step {
            try checkpoint(trainer, diagnostics: diagnostics, fingerprint: fingerprint, folder: checkpoints)
        }
        let exports = try export(trainer, run: config.output)
        let ids = Array(0..<min(promptCount, config.evalPrompts))
        guard !ids.isEmpty else { return (exports, nil) }
        let base = try trainer.evaluate(promptIDs: ids, steps: config.evalSteps, seed: config.seed &+ 1, adapted: false)
        let trained = try trainer.evaluate(promptIDs: ids, steps: config.evalSteps, seed: config.seed &+ 1, adapted: true)
        try writeFileAtomically(Array((evaluationJSON(base: base, adapted: trained, prompts: ids.count, config: config).compactText + "\n").utf8),
                                to: config.output + "/evaluation.json")
        return (exports, (base, trained))
    }

    /// `RUN/evaluation.json`: the noise-free evaluation's mean reward without (`base`) and with
    /// (`adapted`) the exported adapter, and how it was taken (prompts, Euler steps, noise seed).
    public static func evaluationJSON(base: Double, adapted: Double, prompts: Int, config: TrainingConfig) -> JSONValue {
        func number(_ x: Double) -> JSONValue { x.isFinite ? .double(x) : .null }
        return .object([
            ("base", number(base)), ("adapted", number(adapted)), ("prompts", .int(Int64(prompts))),
            ("steps", .int(Int64(config.evalSteps))), ("seed", .uint(config.seed &+ 1)),
            ("exported", .string(config.useEMA ? "ema" : "raw")), ("reward", .string(config.reward)),
        ])
    }

    /// The reward a config names: `builtin:…` or an external command line.
    public static func makeReward(_ config: TrainingConfig) throws(TrainingError) -> any Reward {
        if config.reward.hasPrefix(BuiltinRewards.prefix) {
            do { return try BuiltinRewards.make(spec: config.reward) } catch { throw .reward(error.description) }
        }
        let words = config.reward.split(separator: " ").map(String.init)
        guard let command = words.first else { throw .reward("the reward command is empty") }
        let policy = RewardFailurePolicy(config.rewardOnFailure) ?? .fail
        do {
            return try ExternalReward(config: ExternalRewardConfig(command: command, arguments: Array(words.dropFirst()),
                                                                   timeout: config.rewardTimeout, onFailure: policy))
        } catch {
            throw .reward(error.description)
        }
    }

    /// Writes the exported adapter as a diffusers file to `path` (factors in `dtype`).
    static func writeAdapter(_ trainer: Trainer, to path: String, dtype: DType = .f32) throws(TrainingError) {
        let adapter = AdapterInitialization.adapter(modules: trainer.modules, values: trainer.exportedFactors,
                                                    alpha: trainer.config.loraAlpha, family: trainer.weights.architecture.family)
        do { try LoRAWriter.write(adapter, format: .diffusers, to: path, architecture: trainer.weights.architecture, dtype: dtype) } catch {
            throw .io(path: path, reason: "cannot write the adapter: \(error)")
        }
    }

    /// Checkpoints the trainer's current state.
    static func checkpoint(_ trainer: Trainer, diagnostics: DiagnosticsLog, fingerprint: String, folder: String) throws(TrainingError) {
        diagnostics.sync()
        let scratch = folder + "/.tmp-adapter-\(ProcessControl.currentID).safetensors"
        defer { FileSystem.removeFile(scratch) }
        try writeAdapter(trainer, to: scratch)
        _ = try TrainingCheckpoint.write(state: trainer.state, diagnosticsBytes: diagnostics.length, fingerprint: fingerprint,
                                         modules: trainer.modules, adapterFile: scratch, useXOR: trainer.config.checkpointXOR,
                                         threads: trainer.config.threads, in: folder)
        TrainingCheckpoint.prune(in: folder, keep: trainer.config.keepCheckpoints)
    }

    /// Exports the adapter into `RUN/final/` (written in a temporary folder, then renamed).
    static func export(_ trainer: Trainer, run: String) throws(TrainingError) -> [(kind: String, path: String)] {
        let final = run + "/final"
        let staging: AtomicFolder
        do { staging = try AtomicFolder(destination: final, placement: .replace(staging: ".final-tmp", aside: ".final-old")) } catch {
            throw .io(path: run + "/.final-tmp", reason: "cannot create: \(error.message)")
        }
        let temp = staging.stagingPath
        let dtype = trainer.config.exportDType
        try writeAdapter(trainer, to: temp + "/pytorch_lora_weights.safetensors", dtype: dtype)
        let adapter = AdapterInitialization.adapter(modules: trainer.modules, values: trainer.exportedFactors,
                                                    alpha: trainer.config.loraAlpha, family: trainer.weights.architecture.family)
        do {
            try LoRAWriter.write(adapter, format: .peft, to: temp + "/peft", architecture: trainer.weights.architecture, dtype: dtype)
            try LoRAWriter.write(adapter, format: .kohya, to: temp + "/adapter_kohya.safetensors", architecture: trainer.weights.architecture,
                                 dtype: dtype)
        } catch {
            throw .io(path: temp, reason: "cannot export the adapter: \(error)")
        }
        do {
            try DeltaArchive.pack(input: temp + "/pytorch_lora_weights.safetensors", output: temp + "/adapter.fgdelta",
                                  options: PackOptions(threads: trainer.config.threads))
        } catch {
            throw .io(path: temp + "/adapter.fgdelta", reason: error.description)
        }
        do { try staging.commit() } catch { throw .io(path: final, reason: "cannot \(error.operation): \(error.message)") }
        return [("diffusers", final + "/pytorch_lora_weights.safetensors"), ("peft", final + "/peft"),
                ("kohya", final + "/adapter_kohya.safetensors"), ("archive", final + "/adapter.fgdelta")]
    }

    /// The progress line of a training step.
    static func progressLine(_ r: UpdateRecord, total: Int, secondsPerStep: Double, done: Int) -> String {
        func f(_ x: Double, _ digits: Int = 4) -> String { String(format: "%.\(digits)f", x) }
        let ratioStd = r.mean(\.ratioStd), normStd = r.mean(\.normalizedRatioStd)
        let eta = Double(total - done) * secondsPerStep
        return "step \(done)/\(total)  reward \(f(r.rewardMean)) ± \(f(r.rewardStd))  r \(f(r.mean(\.ratioMean), 6)) ± \(f(ratioStd, 6))"
            + "  r̂ \(f(r.mean(\.normalizedRatioMean), 6)) ± \(f(normStd, 6))  clip +\(f(r.mean(\.clipFractionAbove), 2))/-\(f(r.mean(\.clipFractionBelow), 2))"
            + " (A>0 \(f(r.mean(\.clipFractionPositive), 2)), A<0 \(f(r.mean(\.clipFractionNegative), 2)))"
            + "  loss \(String(format: "%.3e", r.loss))  \(f(secondsPerStep, 2)) s/step  ETA \(Int(eta.rounded())) s"
    }

    /// The first config key whose value differs between two fingerprints (a key only the newer
    /// one holds, such as `base_adapters`, counts as absent before).
    static func difference(_ a: String, _ b: String) -> String {
        guard let x = try? JSONValue.parse(Array(a.utf8)).objectMembers, let y = try? JSONValue.parse(Array(b.utf8)),
              let yMembers = y.objectMembers else { return "settings differ" }
        for (key, value) in x where y[key] != value {
            return "\(key) was \(value.compactText), now \(y[key]?.compactText ?? "absent")"
        }
        for (key, value) in yMembers where !x.contains(where: { $0.key == key }) {
            return "\(key) was absent, now \(value.compactText)"
        }
        return "settings differ"
    }
}
