import Foundation
import Testing
import GRPOGuard
import LoRA
import SafeTensors
import TestSupport

/// Training on top of adapters (`base_adapters`): the config key, the model the trainer builds
/// (the base merged with the adapters, as `LoRAMerge` writes it), what a run records, exports and
/// refuses on resume.
@Suite struct BaseAdapterTests {
    let dir = TemporaryDirectory(prefix: "flowguard-base-adapters")

    static let lokr = Repository.path("fixtures/lora_dialects/sd3_lycoris_lokr.safetensors")
    static let loha = Repository.path("fixtures/lora_dialects/sd3_lycoris_loha.safetensors")
    static let lora = Repository.path("fixtures/sd35_tiny/lora/pytorch_lora_weights.safetensors")
    static let base = Repository.path("fixtures/sd35_tiny/diffusers")

    /// The tiny config of `TrainerTests`: 2 prompts × G = 2, T = 3, 8×8 latents, rank 4.
    func tinyConfig(_ name: String) -> TrainingConfig {
        var c = tinyTrainingConfig(output: dir.file(name))
        c.model = Self.base
        c.steps = 2
        c.evalPrompts = 1
        return c
    }

    // MARK: the config key

    @Test func theConfigReadsEntriesAndNamesBadOnes() throws {
        for name in ["a.safetensors", "c.safetensors"] { try writeBytes([0], to: dir.file(name)) }
        func load(_ adapters: String) -> Result<TrainingConfig, TrainingError> {
            let path = dir.file("config-\(abs(adapters.hashValue)).json")
            try! #"{"model":"m","prompts":"p","reward":"builtin:mean","output":"o","base_adapters":\#(adapters)}"#
                .write(toFile: path, atomically: true, encoding: .utf8)
            do { return .success(try TrainingConfig.load(path: path)) } catch { return .failure(error) }
        }
        func message(_ adapters: String) -> String {
            switch load(adapters) {
            case .success: return "no error"
            case .failure(let error): return error.description
            }
        }
        // Objects (scale optional) and "PATH[:SCALE]" strings; paths relative to the config's folder.
        let loaded = try load(#"[{"path":"a.safetensors","scale":0.8},{"path":"\#(Self.lora)"},"c.safetensors:-0.5"]"#).get()
        #expect(loaded.baseAdapters == [.init(path: dir.file("a.safetensors"), scale: 0.8), .init(path: Self.lora, scale: 1),
                                        .init(path: dir.file("c.safetensors"), scale: -0.5)])
        #expect(try load("[]").get().baseAdapters.isEmpty && load("null").get().baseAdapters.isEmpty)
        #expect(TrainingConfig().baseAdapters.isEmpty)

        let key = #"key "base_adapters": "#
        #expect(message(#"{"path":"a.safetensors"}"#).contains(key + "must be a list of adapters"))
        #expect(message(#"[{"path":"a.safetensors","scale":"big"}]"#).contains(key + #"entry 1: "scale" must be a finite number, found "big""#))
        #expect(message(#"["a.safetensors",{"path":"a.safetensors","weight":1}]"#)
            .contains(key + #"entry 2: "weight" is not an entry key (an entry holds "path", "scale" and optionally "content_hash")"#))
        #expect(message(#"[{"scale":1}]"#).contains(key + #"entry 1: "path" is required"#))
        #expect(message(#"[{"path":""}]"#).contains(key + #"entry 1: "path" must be a non-empty string"#))
        #expect(message(#"[7]"#).contains(key + "entry 1 must be"))
        #expect(message(#"["a.safetensors:nan"]"#)
            .contains(key + #"entry 1 ("a.safetensors:nan"): the scale after the last ':' must be a finite number, found "nan""#))
        #expect(message(#"["a.safetensors:"]"#).contains("nothing follows the last ':'"))
        #expect(message(#"[{"path":"a.safetensors","content_hash":"md5:00"}]"#).contains(#""content_hash" must be "xxh64:""#))
        #expect(message(#"[{"path":"missing.safetensors"}]"#)
            .contains(key + #"entry 1: no file or folder "\#(dir.file("missing.safetensors"))""#))
        #expect(message(#"["a.safetensors:heavy"]"#)
            .contains(key + #"entry 1: "heavy" after the last ':' is not a number (the scale of "\#(dir.file("a.safetensors"))")"#))

        // Command-line text: a JSON array of entries (what --base-lora gives), or one entry.
        var scratch = TrainingConfig()
        try scratch.set(key: "base_adapters", text: #"["x.safetensors:0.25","y/peft"]"#, source: "--base-lora")
        #expect(scratch.baseAdapters == [.init(path: "x.safetensors", scale: 0.25), .init(path: "y/peft", scale: 1)])
        try scratch.set(key: "base_adapters", text: "z.safetensors:2", source: "--base-lora")
        #expect(scratch.baseAdapters == [.init(path: "z.safetensors", scale: 2)])
    }

    @Test func pathSyntaxTakesTheScaleAfterTheLastColon() {
        func parse(_ text: String) -> String {
            switch TrainingConfig.BaseAdapter.parse(text) {
            case .success(let a): return "\(a.path) @ \(a.scale)"
            case .failure(let e): return "error: " + e.message
            }
        }
        #expect(parse("style.safetensors") == "style.safetensors @ 1.0")
        #expect(parse("style.safetensors:0.8") == "style.safetensors @ 0.8")
        #expect(parse("a:b/style.safetensors:-1e-1") == "a:b/style.safetensors @ -0.1")
        #expect(parse("a:b/style.safetensors") == "a:b/style.safetensors @ 1.0")
        #expect(parse(":0.5") == "error: the path is empty (write PATH or PATH:SCALE)")
        #expect(parse("s.safetensors:inf").hasPrefix("error: the scale after the last ':' must be a finite number"))
    }

    // MARK: the model

    /// The largest |a − b| over the largest |b| (at least 1).
    func relativeMaxError(_ a: [Float], _ b: [Float]) -> Double {
        precondition(a.count == b.count)
        let scale = max(1, b.map { abs(Double($0)) }.max() ?? 0)
        return zip(a, b).map { abs(Double($0) - Double($1)) }.max()! / scale
    }

    @Test func theTrainersBaseIsTheBaseMergedWithItsAdapters() throws {
        // The reference: the LoKr at 0.8, then the plain LoRA at 1, merged into the file by LoRAMerge.
        let half = dir.file("lokr-merged.safetensors"), merged = dir.file("merged.safetensors")
        let weights = Self.base + "/diffusion_pytorch_model.safetensors"
        try LoRAMerge.merge(base: try TensorCollection(path: weights), adapter: try LoRAReader.load(path: Self.lokr).adapter,
                            scale: 0.8, output: half)
        try LoRAMerge.merge(base: try TensorCollection(path: half), adapter: try LoRAReader.load(path: Self.lora).adapter, output: merged)

        var adapted = tinyConfig("adapted")
        adapted.baseAdapters = [.init(path: Self.lokr, scale: 0.8), .init(path: Self.lora)]
        var onMerged = tinyConfig("merged")
        onMerged.model = merged
        onMerged.modelConfig = Self.base + "/config.json"
        let trainer = try TrainingRun.makeTrainer(config: adapted)
        let reference = try TrainingRun.makeTrainer(config: onMerged)
        let plain = try TrainingRun.makeTrainer(config: tinyConfig("plain"))
        // The LoKr went into the weights, the LoRA stays frozen branches beside the trained ones.
        #expect(trainer.frozen?.modules.count == 31 && reference.frozen == nil)
        #expect(trainer.parameters.variables.count == plain.parameters.variables.count)

        // One forward (a single Euler step from σ = 1 to 0 is x₀ − v), then two; base and adapted
        // (at step 0 the trained LoRA's B is zero).
        for (steps, isAdapted) in [(1, false), (1, true), (2, false)] {
            let x = trainer.sample(promptIDs: [0, 1], steps: steps, seed: 9, adapted: isAdapted).scalars
            let y = reference.sample(promptIDs: [0, 1], steps: steps, seed: 9, adapted: isAdapted).scalars
            #expect(relativeMaxError(x, y) <= 1e-6, "steps \(steps), adapted \(isAdapted): \(relativeMaxError(x, y))")
            // The adapters change the model: not the plain base.
            let z = plain.sample(promptIDs: [0, 1], steps: steps, seed: 9, adapted: isAdapted).scalars
            #expect(relativeMaxError(x, z) > 1e-3)
        }
        // The policy's rollout (SDE steps with the trained LoRA on top) agrees too.
        let a = try trainer.rollout(promptIDs: [0, 1]), b = try reference.rollout(promptIDs: [0, 1])
        #expect(relativeMaxError(a.latents.last!.scalars, b.latents.last!.scalars) <= 1e-6)
        #expect(zip(a.logProbabilities.joined(), b.logProbabilities.joined()).allSatisfy { abs($0 - $1) <= 1e-6 * max(1, abs($1)) })
    }

    @Test func adaptersThatDoNotFitOrWidenTheInputsAreRefused() throws {
        var flux = tinyConfig("lokr-on-sd3")
        flux.baseAdapters = [.init(path: Repository.path("fixtures/lora_dialects/flux_lycoris_lokr.safetensors"))]
        do { _ = try TrainingRun.makeTrainer(config: flux); Issue.record("accepted a FLUX adapter on SD3") } catch {
            #expect(error.description.hasPrefix("base_adapters: \(Repository.path("fixtures/lora_dialects/flux_lycoris_lokr.safetensors")): "),
                    "\(error)")
            #expect(error.description.contains("FLUX"), "\(error)")
        }
        // A BFL Control LoRA widens x_embedder to take the control image: not a base to train on.
        var control = tinyConfig("control")
        control.model = Repository.path("fixtures/flux_tiny/original.safetensors")
        control.modelConfig = Repository.path("fixtures/flux_tiny/diffusers/config.json")
        control.baseAdapters = [.init(path: Repository.path("fixtures/lora_dialects/flux_bfl_control.safetensors"))]
        do { _ = try TrainingRun.makeTrainer(config: control); Issue.record("accepted a Control LoRA") } catch {
            #expect(error.description.hasPrefix("base_adapters: an adapter widens \"x_embedder.weight\""), "\(error)")
        }
    }

    // MARK: the run

    @Test func aRunRecordsItsBaseAdaptersExportsOnlyItsLoRAAndRefusesOtherBases() throws {
        let style = dir.file("style.safetensors")
        try writeBytes(try readBytes(Self.lokr), to: style)
        var c = tinyConfig("run")
        c.baseAdapters = [.init(path: style, scale: 0.8), .init(path: Self.lora)]
        let hash = try TrainingConfig.BaseAdapter.contentHash(of: style)
        let other = try TrainingConfig.BaseAdapter.contentHash(of: Self.loha)
        #expect(hash.hasPrefix("xxh64:") && hash.count == 22 && hash != other)
        let stopped = try TrainingRun.run(config: c, resume: false, stopAfter: 1)
        let loraHash = try TrainingConfig.BaseAdapter.contentHash(of: Self.lora)
        #expect(stopped.baseAdapters.map(\.contentHash) == [hash, loraHash])

        // config.json names each adapter, its scale and content hash.
        let json = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: c.output + "/config.json"))) as! [String: Any]
        let recorded = json["base_adapters"] as! [[String: Any]]
        #expect(recorded.count == 2 && recorded[0]["path"] as? String == style && recorded[0]["scale"] as? Double == 0.8)
        #expect(recorded[0]["content_hash"] as? String == hash)

        func refusal(_ config: TrainingConfig) -> String {
            do { _ = try TrainingRun.run(config: config, resume: true); return "resumed" } catch { return error.description }
        }
        var otherScale = c
        otherScale.baseAdapters[0].scale = 0.5
        let scaleMessage = refusal(otherScale)
        #expect(scaleMessage.hasPrefix("checkpoint \(c.output)/checkpoints/step-000001: it was trained on a base with other adapters applied (base_adapters was ["),
                "\(scaleMessage)")
        #expect(scaleMessage.hasSuffix("; resume with the same settings or train into a new output folder"))
        var otherAdapter = c
        otherAdapter.baseAdapters[0].path = Self.loha
        #expect(refusal(otherAdapter).contains("other adapters applied"))
        var without = c
        without.baseAdapters = []
        #expect(refusal(without).contains("other adapters applied") && refusal(without).contains("now absent"))
        // The same path with other bytes: the content hash tells.
        try writeBytes(try readBytes(Self.loha), to: style)
        #expect(refusal(c).contains("other adapters applied"))

        // The same adapters again: the run continues, bit-identical to an uninterrupted one.
        try writeBytes(try readBytes(Self.lokr), to: style)
        let resumed = try TrainingRun.run(config: c, resume: true)
        #expect(resumed.resumedFrom == 1 && resumed.steps == 2 && !resumed.exports.isEmpty)
        var whole = c
        whole.output = dir.file("whole")
        _ = try TrainingRun.run(config: whole, resume: false)
        for file in ["pytorch_lora_weights.safetensors", "adapter_kohya.safetensors", "adapter.fgdelta"] {
            #expect(try readBytes(c.output + "/final/" + file) == readBytes(whole.output + "/final/" + file), "\(file)")
        }

        // The exports are the trained LoRA only: its modules' factors, nothing of the base adapters.
        let exported = try SafeTensorsFile(path: c.output + "/final/pytorch_lora_weights.safetensors")
        #expect(exported.header.tensors.count == 2 * resumed.modules)
        #expect(exported.header.tensors.allSatisfy { $0.name.hasSuffix(".lora_A.weight") || $0.name.hasSuffix(".lora_B.weight") })
        let trainedOnPlain = try LoRAReader.load(path: c.output + "/final/pytorch_lora_weights.safetensors").adapter
        #expect(trainedOnPlain.deltas.isEmpty && trainedOnPlain.magnitudes.isEmpty)

        // config.json reads back as a config that pins the adapters' bytes.
        let reloaded = try TrainingConfig.load(path: c.output + "/config.json")
        #expect(reloaded.baseAdapters.map(\.contentHash) == resumed.baseAdapters.map(\.contentHash))
        try writeBytes(try readBytes(Self.loha), to: style)
        do { _ = try TrainingRun.makeTrainer(config: reloaded); Issue.record("accepted a changed adapter") } catch {
            #expect(error.description.hasPrefix("base_adapters: \(style): its content hash is "), "\(error)")
            #expect(error.description.hasSuffix("but the config expects \(hash) (the file changed)"))
        }
    }
}
