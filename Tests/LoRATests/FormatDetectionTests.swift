import Checkpoints
import Foundation
import LoRA
import SafeTensors
import Testing
import TestSupport

/// Dialect and family detection, rsLoRA and malformed inputs.
@Suite struct FormatDetectionTests {
    let dir = TemporaryDirectory()

    func write(_ name: String, _ tensors: [(String, [Int], [Float])], metadata: [String: String]? = nil) throws -> String {
        let path = dir.file(name)
        try SafeTensorsWriter.write(to: path, tensors: tensors.map { t in
            (TensorSpec(name: t.0, dtype: .f32, shape: t.1), t.2.withUnsafeBytes { Array($0) })
        }, metadata: metadata)
        return path
    }

    func filled(_ shape: [Int], _ v: Float = 0.5) -> [Float] { [Float](repeating: v, count: shape.reduce(1, *)) }

    @Test(arguments: LoRAFixture.allCases)
    func everyFormatIsDetected(fixture: LoRAFixture) throws {
        let arch = try fixture.architecture()
        let adapter = try LoRAReader.read(path: fixture.diffusersFile)
        #expect(adapter.family == arch.family)
        #expect(try LoRAReader.detectFormat(path: fixture.diffusersFile) == .diffusers)
        #expect(try LoRAReader.detectFormat(path: fixture.peftFolder) == .peft)
        #expect(try LoRAReader.detectFormat(path: fixture.peftFolder + "/adapter_model.safetensors") == .peft)
        for format in [LoRAFormat.kohya, .comfy] {
            let out = dir.file("\(fixture)_\(format).safetensors")
            try LoRAWriter.write(adapter, format: format, to: out, architecture: arch)
            #expect(try LoRAReader.detectFormat(path: out) == format)
            let back = try LoRAReader.read(path: out)
            #expect(back.family == arch.family && back.layout == .original)
        }
    }

    @Test func kohyaNamesResolveAgainstTheKnownModules() throws {
        let path = try write("k.safetensors", [
            ("lora_unet_joint_blocks_1_context_block_attn_qkv.lora_down.weight", [2, 8], filled([2, 8])),
            ("lora_unet_joint_blocks_1_context_block_attn_qkv.lora_up.weight", [24, 2], filled([24, 2])),
            ("lora_unet_joint_blocks_1_context_block_attn_qkv.alpha", [], [0]),
            ("lora_unet_joint_blocks_1_x_block_mlp_fc2.lora_down.weight", [2, 32], filled([2, 32])),
            ("lora_unet_joint_blocks_1_x_block_mlp_fc2.lora_up.weight", [8, 2], filled([8, 2])),
            ("lora_unet_joint_blocks_1_x_block_mlp_fc2.alpha", [], [1]),
        ], metadata: ["ss_network_dim": "2", "modelspec.title": "t"])
        let a = try LoRAReader.read(path: path)
        #expect(a.format == .kohya && a.family == .sd3 && a.layout == .original)
        #expect(a.modules.map(\.name) == ["joint_blocks.1.context_block.attn.qkv", "joint_blocks.1.x_block.mlp.fc2"])
        #expect(a.module("joint_blocks.1.context_block.attn.qkv")?.alpha == nil)   // 0 → α = r
        #expect(a.module("joint_blocks.1.x_block.mlp.fc2")?.scale(rsLoRA: false) == 0.5)
        #expect(a.extraMetadata["ss_network_dim"] == "2" && a.extraMetadata["modelspec.title"] == "t")
    }

    @Test func comfyWithoutAlphaHasScaleOne() throws {
        let path = try write("c.safetensors", [
            ("diffusion_model.double_blocks.0.img_attn.proj.lora_down.weight", [4, 8], filled([4, 8])),
            ("diffusion_model.double_blocks.0.img_attn.proj.lora_up.weight", [8, 4], filled([8, 4])),
        ])
        let a = try LoRAReader.read(path: path)
        #expect(a.format == .comfy && a.family == .flux)
        #expect(a.modules[0].scale(rsLoRA: false) == 1)
    }

    @Test func rsLoRAIsHonouredAndSurvivesKohya() throws {
        let arch = try LoRAFixture.sd35.architecture()
        var adapter = try LoRAReader.read(path: LoRAFixture.sd35.diffusersFile)
        adapter.rsLoRA = true
        let peft = dir.file("rs_peft")
        try LoRAWriter.write(adapter, format: .peft, to: peft, architecture: arch)
        let back = try LoRAReader.read(path: peft)
        #expect(back.rsLoRA)
        #expect(back.modules[0].scale(rsLoRA: back.rsLoRA) == 4)   // 8/√4
        let expected = try adapter.deltaWeights(architecture: arch)
        #expect(maxRelativeDifference(expected, try back.deltaWeights(architecture: arch)) <= 1e-6)
        let kohya = dir.file("rs.safetensors")
        try LoRAWriter.write(adapter, format: .kohya, to: kohya, architecture: arch)
        let k = try LoRAReader.read(path: kohya)
        #expect(!k.rsLoRA)
        #expect(maxRelativeDifference(expected, try k.deltaWeights(architecture: arch)) <= 1e-6)
        let fused = try adapter.converted(to: .original, architecture: arch)
        #expect(maxRelativeDifference(expected, try fused.deltaWeights(architecture: arch)) <= 1e-6)
    }

    @Test func rankAndAlphaPatternsApply() throws {
        let folder = dir.file("pat")
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        _ = try write("pat/adapter_model.safetensors", [
            ("base_model.model.transformer_blocks.0.attn.to_q.lora_A.weight", [2, 8], filled([2, 8])),
            ("base_model.model.transformer_blocks.0.attn.to_q.lora_B.weight", [8, 2], filled([8, 2])),
            ("base_model.model.transformer_blocks.0.attn.to_k.lora_A.weight", [4, 8], filled([4, 8])),
            ("base_model.model.transformer_blocks.0.attn.to_k.lora_B.weight", [8, 4], filled([8, 4])),
        ])
        try #"{"r": 4, "lora_alpha": 8, "rank_pattern": {"to_q": 2}, "alpha_pattern": {"transformer_blocks.0.attn.to_q": 1}, "use_rslora": false}"#
            .write(toFile: folder + "/adapter_config.json", atomically: true, encoding: .utf8)
        let a = try LoRAReader.read(path: folder)
        #expect(a.module("transformer_blocks.0.attn.to_q")?.alpha == 1)
        #expect(a.module("transformer_blocks.0.attn.to_k")?.alpha == 8)
    }

    // MARK: malformed inputs

    func error(_ body: () throws -> Void) -> LoRAError? {
        do { try body(); return nil } catch let e as LoRAError { return e } catch { return nil }
    }

    @Test func unknownKeysAreNamed() throws {
        let path = try write("u.safetensors", [("foo.weight", [2], [1, 2]), ("bar.weight", [2], [1, 2])])
        let e = error { _ = try LoRAReader.read(path: path) }
        #expect(e?.description == "\(path): not a LoRA adapter in any known dialect (PEFT, diffusers, kohya, ComfyUI, OneTrainer, LyCORIS, XLabs, BFL Control, fal Kontext); 2 unexplained keys: \"bar.weight\", \"foo.weight\".")
        let mixed = try write("m.safetensors", [
            ("lora_unet_joint_blocks_0_x_block_attn_qkv.lora_down.weight", [2, 8], filled([2, 8])),
            ("lora_unet_joint_blocks_0_x_block_attn_qkv.lora_up.weight", [24, 2], filled([24, 2])),
            ("lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_down.weight", [2, 8], filled([2, 8])),
        ])
        // Text-encoder modules are kept now (issue 17): a lone factor is a missing partner.
        let e2 = error { _ = try LoRAReader.read(path: mixed) }
        #expect(e2?.description == "\(mixed): \"lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_down.weight\" has no partner \"lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_up.weight\".")
        let stray = try write("s.safetensors", [
            ("lora_unet_joint_blocks_0_x_block_attn_qkv.lora_down.weight", [2, 8], filled([2, 8])),
            ("lora_unet_joint_blocks_0_x_block_attn_qkv.lora_up.weight", [24, 2], filled([24, 2])),
            ("lora_te1_text_model_nonsense.lora_down.weight", [2, 8], filled([2, 8])),
        ])
        let e3 = error { _ = try LoRAReader.read(path: stray) }
        #expect(e3?.description.contains("1 key not part of a kohya adapter: \"lora_te1_text_model_nonsense.lora_down.weight\"") == true)
    }

    @Test func rankMismatchNamesBothKeys() throws {
        let path = try write("r.safetensors", [
            ("transformer.transformer_blocks.0.attn.to_q.lora_A.weight", [4, 8], filled([4, 8])),
            ("transformer.transformer_blocks.0.attn.to_q.lora_B.weight", [8, 3], filled([8, 3])),
        ])
        let e = error { _ = try LoRAReader.read(path: path) }
        #expect(e == .rankMismatch(file: path, downKey: "transformer.transformer_blocks.0.attn.to_q.lora_A.weight", downShape: [4, 8],
                                   upKey: "transformer.transformer_blocks.0.attn.to_q.lora_B.weight", upShape: [8, 3]))
        #expect(e?.description.contains("has shape [4, 8] but") == true)
    }

    @Test func missingPartnerIsNamed() throws {
        let path = try write("p.safetensors", [("transformer.transformer_blocks.0.attn.to_q.lora_A.weight", [4, 8], filled([4, 8]))])
        let e = error { _ = try LoRAReader.read(path: path) }
        #expect(e?.description == "\(path): \"transformer.transformer_blocks.0.attn.to_q.lora_A.weight\" has no partner \"transformer.transformer_blocks.0.attn.to_q.lora_B.weight\".")
    }

    @Test func nonFiniteValuesAreCountedAndReported() throws {
        var values = filled([4, 8])
        values[0] = .nan; values[3] = .nan; values[5] = .infinity
        let path = try write("n.safetensors", [
            ("transformer.transformer_blocks.0.attn.to_q.lora_A.weight", [4, 8], values),
            ("transformer.transformer_blocks.0.attn.to_q.lora_B.weight", [8, 4], filled([8, 4])),
        ])
        let result = try LoRAReader.load(path: path)
        #expect(result.nonFinite.count == 1)
        #expect(result.nonFinite.first?.nanCount == 2 && result.nonFinite.first?.infCount == 1)
        #expect(result.adapter.nonFiniteFactors().first?.nan == 2)
        let e = error { _ = try LoRAReader.load(path: path, rejectNonFinite: true) }
        #expect(e?.description.hasPrefix("\(path): tensor \"transformer.transformer_blocks.0.attn.to_q.lora_A.weight\" (data at byte") == true)
        #expect(e?.description.hasSuffix("holds 2 NaN and 1 infinite values.") == true)
    }

    @Test func badConfigNamesTheField() throws {
        let folder = dir.file("bad")
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        _ = try write("bad/adapter_model.safetensors", [
            ("base_model.model.transformer_blocks.0.attn.to_q.lora_A.weight", [4, 8], filled([4, 8])),
            ("base_model.model.transformer_blocks.0.attn.to_q.lora_B.weight", [8, 4], filled([8, 4])),
        ])
        for (json, field) in [(#"{"r": "four", "lora_alpha": 8}"#, "r"), (#"{"r": 4, "lora_alpha": "x"}"#, "lora_alpha"),
                              (#"{"r": 4, "use_rslora": 1}"#, "use_rslora"), (#"{"r": 4, "rank_pattern": []}"#, "rank_pattern"),
                              (#"{"r": 2}"#, "r")] {
            try json.write(toFile: folder + "/adapter_config.json", atomically: true, encoding: .utf8)
            let e = error { _ = try LoRAReader.read(path: folder) }
            guard case let .badConfig(_, f, _)? = e else { Issue.record("no badConfig for \(json): \(String(describing: e))"); continue }
            #expect(f == field)
        }
    }

    @Test func anAdapterForAnotherArchitectureIsRejected() throws {
        let sd3 = try LoRAReader.read(path: LoRAFixture.sd35.diffusersFile)
        let flux = try LoRAFixture.flux.architecture()
        let e = error { _ = try sd3.converted(to: .original, architecture: flux) }
        guard case let .moduleNotInArchitecture(module, _, _)? = e else { Issue.record("expected moduleNotInArchitecture, got \(String(describing: e))"); return }
        #expect(module.contains("attn2"))
        // the same names at another width
        var wide = try LoRAFixture.sd35.architecture().config
        if var c = wide.typed(SD3Config.self) { c.hiddenSize = 64; c.attentionHeadDim = 16; wide = .sd3(c) }
        let e2 = error { _ = try sd3.converted(to: .original, architecture: try Architecture(config: wide)) }
        #expect(e2?.description.contains("the adapter is [32 out × 32 in] but the model's weight is [64, 64]") == true)
    }
}
