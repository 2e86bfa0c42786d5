import Foundation
import Testing
import GRPOGuard
import SafeTensors
import TestSupport

/// Training runs on the tiny SD3.5-style fixture: on-policy ratios, learning, determinism,
/// checkpoint/resume bit-exactness and config errors.
@Suite struct TrainerTests {
    let dir = TemporaryDirectory(prefix: "flowguard-trainer")

    /// A tiny config: 2 prompts × G = 2, T = 3, 8×8 latents, rank 4, checkpoints every step.
    func tinyConfig(_ name: String, reward: String = "builtin:target:seed=3,scale=0.5") -> TrainingConfig {
        tinyTrainingConfig(output: dir.file(name), reward: reward)
    }

    /// The diagnostics lines as JSON objects.
    func diagnostics(_ run: String) throws -> [[String: Any]] {
        let text = try String(contentsOfFile: run + "/diagnostics.jsonl", encoding: .utf8)
        return try text.split(separator: "\n").map { try JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any] }
    }

    @Test func onPolicyPassHasRatiosExactlyOne() throws {
        var c = tinyConfig("onpolicy")
        c.steps = 1
        c.batchSize = 2
        c.updatesPerRollout = 2   // the second update is off-policy
        _ = try TrainingRun.run(config: c, resume: false)
        let lines = try diagnostics(c.output)
        #expect(lines.count == 2)
        let first = lines[0]["timesteps"] as! [[String: Any]]
        #expect(first.count == 2)   // ⌊3·0.99⌋ trained of 3
        for t in first {
            #expect(t["ratio_mean"] as? Double == 1 && t["ratio_std"] as? Double == 0)
            #expect(t["normalized_ratio_mean"] as? Double == 1 && t["normalized_ratio_std"] as? Double == 0)
            #expect(t["clip_fraction_above"] as? Double == 0 && t["clip_fraction_below"] as? Double == 0)
            #expect(t["approx_kl"] as? Double == 0)
            #expect((t["grad_norm"] as? Double ?? 0) > 0)
            // Every sample's ratio is 1, so are its quantiles.
            #expect(t["ratio_quantiles"] as? [Double] == [1, 1, 1, 1, 1])
            #expect(t["normalized_ratio_quantiles"] as? [Double] == [1, 1, 1, 1, 1])
        }
        let second = lines[1]["timesteps"] as! [[String: Any]]
        #expect(second.contains { ($0["ratio_mean"] as? Double) != 1 })
        // Off-policy: ordered quantiles over the update's samples (both minibatches), spread out.
        for t in second {
            let q = try #require(t["ratio_quantiles"] as? [Double])
            #expect(q.count == 5 && zip(q, q.dropFirst()).allSatisfy { $0 <= $1 })
        }
        #expect(second.contains { ($0["ratio_quantiles"] as! [Double]).first! < ($0["ratio_quantiles"] as! [Double]).last! })
        // The run finished: its evaluation is saved beside the diagnostics.
        let evaluation = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: c.output + "/evaluation.json"))) as! [String: Any]
        #expect(evaluation["base"] is Double && evaluation["adapted"] is Double)
        #expect(evaluation["prompts"] as? Int == 4 && evaluation["steps"] as? Int == 3)
    }

    @Test func trainingMovesTheAdapterDeterministicallyAndResumesBitExactly() throws {
        let a = tinyConfig("a"), b = tinyConfig("b"), c = tinyConfig("c")
        let report = try TrainingRun.run(config: a, resume: false)
        #expect(report.steps == 3 && report.exports.count == 4 && report.checkpoints.count == 3)
        // The LoRA moved: every B (up) factor started at zero.
        let (state, _) = try TrainingCheckpoint.readState(at: report.checkpoints.last!)
        let ups = stride(from: 1, to: state.parameters.count, by: 2).map { state.parameters[$0] }
        #expect(ups.filter { $0.scalars.contains { $0 != 0 } }.count >= ups.count - 1)   // the last block's add_q_proj gets no gradient
        for line in try diagnostics(a.output) { #expect((line["grad_norm"] as? Double ?? 0) > 0) }

        // The same seed gives the same bits.
        _ = try TrainingRun.run(config: b, resume: false)
        for file in ["pytorch_lora_weights.safetensors", "adapter_kohya.safetensors", "adapter.fgdelta", "peft/adapter_model.safetensors"] {
            #expect(try readBytes(a.output + "/final/" + file) == readBytes(b.output + "/final/" + file), "\(file)")
        }

        // Interrupted after step 1 (a checkpoint), then resumed: the same bits again.
        let stopped = try TrainingRun.run(config: c, resume: false, stopAfter: 1)
        #expect(stopped.steps == 1 && stopped.exports.isEmpty)
        // Lines written after the checkpoint must go: simulate a crash that left an extra line and a stale temp folder.
        let handle = FileHandle(forWritingAtPath: c.output + "/diagnostics.jsonl")!
        handle.seekToEndOfFile()
        handle.write(Data("{\"partial\":true}\n".utf8))
        try handle.close()
        try FileManager.default.createDirectory(atPath: c.output + "/checkpoints/.tmp-step-000002", withIntermediateDirectories: true)
        let resumed = try TrainingRun.run(config: c, resume: true)
        #expect(resumed.resumedFrom == 1 && resumed.steps == 3)
        #expect(!FileManager.default.fileExists(atPath: c.output + "/checkpoints/.tmp-step-000002"))
        for file in ["pytorch_lora_weights.safetensors", "adapter_kohya.safetensors", "adapter.fgdelta"] {
            #expect(try readBytes(a.output + "/final/" + file) == readBytes(c.output + "/final/" + file), "\(file)")
        }
        for step in 1...3 {
            let name = "/checkpoints/step-00000\(step)/"
            for file in ["state.safetensors", "adapter.fgdelta"] {
                #expect(try readBytes(a.output + name + file) == readBytes(c.output + name + file), "\(name)\(file)")
            }
            try TrainingCheckpoint.validate(at: c.output + name)
        }
        // The diagnostics agree line by line apart from wall-clock seconds.
        func strip(_ lines: [[String: Any]]) -> [String] {
            lines.map { var l = $0; l["seconds"] = nil; return String(decoding: try! JSONSerialization.data(withJSONObject: l, options: .sortedKeys), as: UTF8.self) }
        }
        #expect(strip(try diagnostics(a.output)) == strip(try diagnostics(c.output)))
    }

    @Test func guidanceAndFLUXTrainOnPolicy() throws {
        // Classifier-free guidance on SD3 (the fixture has a shared negative prompt).
        var guided = tinyConfig("cfg")
        guided.steps = 1
        guided.cfgScale = 4
        guided.evalPrompts = 1
        _ = try TrainingRun.run(config: guided, resume: false)
        // FLUX: the same embeddings re-labelled for the FLUX fixture (same text widths).
        let source = try SafeTensorsFile(path: guided.prompts)
        let prompts = dir.file("flux_prompts.safetensors")
        try SafeTensorsWriter.write(to: prompts, tensors: try source.tensors.map { info in
            (TensorSpec(name: info.name, dtype: info.dtype, shape: info.shape), try source.bytes(of: info.name))
        }, metadata: ["flowguard.prompts": source.header.metadataValue("flowguard.prompts")!, "flowguard.model_family": "flux"])
        var flux = tinyConfig("flux")
        flux.model = Repository.path("fixtures/flux_tiny/diffusers")
        flux.prompts = prompts
        flux.steps = 1
        flux.evalPrompts = 1
        let report = try TrainingRun.run(config: flux, resume: false)
        #expect(report.exports.count == 4 && report.modules > 0)
        for run in [guided.output, flux.output] {
            let line = try diagnostics(run)[0]
            for t in line["timesteps"] as! [[String: Any]] {
                #expect(t["ratio_mean"] as? Double == 1 && t["normalized_ratio_std"] as? Double == 0, "\(run)")
                #expect((t["grad_norm"] as? Double ?? 0) > 0, "\(run)")
            }
        }
    }

    @Test func checkpointsChainXORDeltasAndValidate() throws {
        var c = tinyConfig("chain")
        c.steps = 2
        let report = try TrainingRun.run(config: c, resume: false)
        let infos = TrainingCheckpoint.list(in: c.output + "/checkpoints")
        #expect(infos.map(\.step) == [1, 2])
        #expect(infos[0].reference == nil && infos[1].reference == "step-000001/adapter.fgdelta")
        for path in report.checkpoints { try TrainingCheckpoint.validate(at: path) }
        // A finished run resumed again does no work and exports the same files.
        let before = try readBytes(c.output + "/final/adapter.fgdelta")
        let again = try TrainingRun.run(config: c, resume: true)
        #expect(again.resumedFrom == 2 && again.steps == 2)
        #expect(try readBytes(c.output + "/final/adapter.fgdelta") == before)
    }

    @Test func configErrorsNameTheFileAndKey() throws {
        func load(_ text: String) -> String {
            let path = dir.file("bad-\(abs(text.hashValue)).json")
            try! text.write(toFile: path, atomically: true, encoding: .utf8)
            do { _ = try TrainingConfig.load(path: path); return "no error" } catch { return "\(error)" }
        }
        let required = #""model":"m","prompts":"p","reward":"builtin:mean","output":"o""#
        #expect(load("{\(required),\"group_sise\":4}").contains(#"key "group_sise": is not a config key (did you mean "group_size"?)"#))
        #expect(load("{\(required),\"group_size\":\"four\"}").contains(#"key "group_size": must be an integer, found "four""#))
        #expect(load("{\(required),\"group_size\":1}").contains("must be at least 2"))
        #expect(load("{\(required),\"objective\":\"ppo\"}").contains("must be one of flow-grpo, grpo-guard"))
        #expect(load("{\(required),\"reward\":\"builtin:shiny\"}").contains(#"key "reward": "#))
        #expect(load("{\(required),\"group_size\":3,\"batch_size\":2}").contains("does not divide the 3 samples"))
        #expect(load(#"{"model":"m","prompts":"p","reward":"builtin:mean"}"#).contains(#"key "output" is required"#))
        #expect(load("[1,2]").contains("is not a JSON object"))
        #expect(load("{").contains("is not valid JSON"))
        let path = dir.file("ok.json")
        try "{\(required)}".write(toFile: path, atomically: true, encoding: .utf8)
        // CLI overrides are checked the same way and named by their flag.
        do { _ = try TrainingConfig.load(path: path, overrides: [("steps", "0")]); Issue.record("accepted steps 0") } catch {
            #expect("\(error)" == #"config --steps: key "steps": must be at least 1, found 0"#)
        }
        // Relative paths are relative to the config file.
        let loaded = try TrainingConfig.load(path: path)
        #expect(loaded.model == dir.path + "/m" && loaded.output == dir.path + "/o")
    }

    @Test func runErrorsAreClear() throws {
        var missing = tinyConfig("missing")
        missing.model = dir.file("nope")
        #expect(throws: TrainingError.self) { try TrainingRun.run(config: missing, resume: false) }
        do { _ = try TrainingRun.run(config: missing, resume: false) } catch { #expect("\(error)".hasPrefix("model \(dir.file("nope")):")) }

        // Prompts encoded for another text width.
        let prompts = dir.file("wide.safetensors")
        let values = [Float](repeating: 0.5, count: 2 * 3 * 16)
        try SafeTensorsWriter.write(to: prompts, tensors: [
            (TensorSpec(name: "prompt_embeds", dtype: .f32, shape: [2, 3, 16]), values.withUnsafeBytes { [UInt8]($0) }),
            (TensorSpec(name: "pooled_prompt_embeds", dtype: .f32, shape: [2, 20]), [Float](repeating: 0, count: 40).withUnsafeBytes { [UInt8]($0) }),
        ], metadata: ["flowguard.prompts": #"["a","b"]"#, "flowguard.model_family": "sd3"])
        var wrong = tinyConfig("wrong")
        wrong.prompts = prompts
        do { _ = try TrainingRun.run(config: wrong, resume: false); Issue.record("accepted mismatched prompts") } catch {
            #expect("\(error)".hasPrefix("prompts \(prompts):") && "\(error)".contains("24"), "\(error)")
        }

        // Guidance without negatives.
        var cfg = tinyConfig("cfg")
        cfg.prompts = prompts
        cfg.cfgScale = 4
        #expect(throws: TrainingError.self) { try TrainingRun.run(config: cfg, resume: false) }

        // An existing run is not overwritten without --resume; a resume with other settings is refused.
        var c = tinyConfig("twice")
        c.steps = 1
        _ = try TrainingRun.run(config: c, resume: false)
        do { _ = try TrainingRun.run(config: c, resume: false); Issue.record("overwrote a run") } catch {
            #expect("\(error)".contains("pass --resume"))
        }
        c.groupSize = 4
        do { _ = try TrainingRun.run(config: c, resume: true); Issue.record("resumed with other settings") } catch {
            #expect("\(error)".contains("group_size was 2, now 4"), "\(error)")
        }
    }
}

/// The tiny SD3.5 training config the trainer tests share: 2 prompts × G = 2, 3 steps, T = 3,
/// 8×8 latents, rank 4, checkpoints every step, writing to `output`.
func tinyTrainingConfig(output: String, reward: String = "builtin:target:seed=3,scale=0.5") -> TrainingConfig {
    var c = TrainingConfig()
    c.model = Repository.path("fixtures/sd35_tiny/diffusers")
    c.prompts = Repository.path("fixtures/prompts/sd35_tiny_prompts.safetensors")
    c.reward = reward
    c.output = output
    c.seed = 5
    c.steps = 3
    c.promptsPerStep = 2
    c.groupSize = 2
    c.samplingSteps = 3
    c.evalSteps = 3
    c.latentSize = 8
    c.loraRank = 4
    c.loraAlpha = 8
    c.learningRate = 1e-2
    c.emaInterval = 1
    c.checkpointEvery = 1
    return c
}
