import Checkpoints
import Foundation
import LoRA
import SafeTensors
import Testing
import TestSupport

/// Every pair of writable formats, on both fixture adapters: ΔW per base weight is unchanged.
@Suite struct FormatRoundTripTests {
    static let writable: [LoRAFormat] = [.peft, .diffusers, .kohya, .comfy]
    static let pairs: [(LoRAFixture, LoRAFormat, LoRAFormat)] = LoRAFixture.allCases.flatMap { fx in
        writable.flatMap { a in writable.map { b in (fx, a, b) } }
    }

    func path(_ dir: TemporaryDirectory, _ format: LoRAFormat, _ tag: String) -> String {
        dir.file(tag + (format == .peft ? "_peft" : "_\(format.rawValue).safetensors"))
    }

    @Test(arguments: pairs)
    func convertingKeepsEveryBaseDelta(fixture: LoRAFixture, from: LoRAFormat, to: LoRAFormat) throws {
        let dir = TemporaryDirectory()
        let arch = try fixture.architecture()
        let reference = try LoRAReader.read(path: fixture.diffusersFile)
        let expected = try reference.deltaWeights(architecture: arch)
        #expect(expected.count > 0)
        let first = path(dir, from, "a")
        try LoRAWriter.write(reference, format: from, to: first, architecture: arch)
        let middle = try LoRAReader.read(path: first)
        #expect(middle.format == from)
        #expect(middle.layout == LoRAWriter.layout(of: from))
        #expect(middle.family == arch.family)
        let second = path(dir, to, "b")
        try LoRAWriter.write(middle, format: to, to: second, architecture: arch)
        let last = try LoRAReader.read(path: second)
        #expect(last.format == to)
        #expect(maxRelativeDifference(expected, try last.deltaWeights(architecture: arch)) <= 1e-6)
    }

    @Test(arguments: LoRAFixture.allCases)
    func diffusersFileAndPEFTFolderAgree(fixture: LoRAFixture) throws {
        let arch = try fixture.architecture()
        let a = try LoRAReader.read(path: fixture.diffusersFile)
        let b = try LoRAReader.read(path: fixture.peftFolder)
        #expect(a.format == .diffusers && b.format == .peft)
        #expect(a.modules.count == 31 && b.modules.count == 31)
        #expect(a.modules.allSatisfy { $0.alpha == 8 && $0.rank == 4 })
        #expect(maxRelativeDifference(try a.deltaWeights(architecture: arch), try b.deltaWeights(architecture: arch)) == 0)
    }

    @Test(arguments: LoRAFixture.allCases.flatMap { fx in writable.map { (fx, $0) } })
    func everyWrittenFileReadsBackInPython(fixture: LoRAFixture, format: LoRAFormat) throws {
        guard ReferencePeer.python != nil else { return }
        let dir = TemporaryDirectory()
        let arch = try fixture.architecture()
        let adapter = try LoRAReader.read(path: fixture.diffusersFile)
        let out = path(dir, format, "x")
        try LoRAWriter.write(adapter, format: format, to: out, architecture: arch)
        let file = format == .peft ? out + "/adapter_model.safetensors" : out
        let dump = try ReferencePeer.dump(file)
        let tensors = dump["tensors"] as? [[String: Any]] ?? []
        let ours = try SafeTensorsFile(path: file)
        #expect(tensors.count == ours.tensors.count)
        for t in tensors {
            let name = t["name"] as? String ?? ""
            let info = try ours.info(name)
            #expect(t["shape"] as? [Int] == info.shape)
            #expect(t["hex"] as? String == (try ours.bytes(of: name)).hex)
        }
        let metadata = dump["metadata"] as? [String: String] ?? [:]
        #expect(metadata["format"] == "pt")
        if format == .diffusers { #expect(metadata["lora_adapter_metadata"] != nil) }
        if format == .kohya {
            // fused q/k/v modules have rank 12 (3 × 4) beside rank-4 modules: no one network dim or
            // alpha is true of every module, so none is written; the fused modules are named.
            #expect(metadata["ss_network_dim"] == nil && metadata["ss_network_alpha"] == nil)
            #expect(metadata["flowguard.fused_block_diagonal"]?.contains("\"ranks\":[4,4,4]") == true)
            #expect(metadata["ss_network_module"] == (fixture == .sd35 ? "networks.lora_sd3" : "networks.lora_flux"))
        }
        if format == .peft {
            let config = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: out + "/adapter_config.json"))) as? [String: Any] ?? [:]
            #expect(config["r"] as? Int == 4)
            #expect(config["lora_alpha"] as? Int == 8)
            #expect(config["peft_type"] as? String == "LORA")
            #expect(config["task_type"] is NSNull)
            #expect(config["base_model_name_or_path"] is NSNull)
            #expect((config["target_modules"] as? [String])?.count == 31)
        }
    }

    @Test func xlabsFileReadsAsSplitExactly() throws {
        let dir = TemporaryDirectory()
        let arch = try LoRAFixture.flux.architecture()
        let h = arch.config.hiddenSize, r = 2
        var rng = SeededGenerator(seed: 7)
        func random(_ shape: [Int]) -> Matrix {
            Matrix(shape: shape, values: (0..<shape.reduce(1, *)).map { _ in Float.random(in: -1...1, using: &rng) })
        }
        let parts: [(String, Matrix)] = [
            ("double_blocks.0.processor.qkv_lora1.down.weight", random([r, h])), ("double_blocks.0.processor.qkv_lora1.up.weight", random([3 * h, r])),
            ("double_blocks.0.processor.proj_lora2.down.weight", random([r, h])), ("double_blocks.0.processor.proj_lora2.up.weight", random([h, r])),
            ("single_blocks.1.processor.qkv_lora.down.weight", random([r, h])), ("single_blocks.1.processor.qkv_lora.up.weight", random([3 * h, r])),
            ("single_blocks.1.processor.proj_lora.down.weight", random([r, 5 * h])), ("single_blocks.1.processor.proj_lora.up.weight", random([h, r])),
        ]
        let file = dir.file("xlabs.safetensors")
        try SafeTensorsWriter.write(to: file, tensors: parts.map { (TensorSpec(name: $0.0, dtype: .f32, shape: $0.1.shape), $0.1.values.withUnsafeBytes { Array($0) }) })
        #expect(try LoRAReader.detectFormat(path: file) == .xlabs)
        let adapter = try LoRAReader.read(path: file)
        #expect(adapter.format == .xlabs && adapter.family == .flux && adapter.layout == .original)
        let byName = Dictionary(uniqueKeysWithValues: parts)
        let split = try adapter.converted(to: .diffusers, architecture: arch)
        let toK = try #require(split.module("single_transformer_blocks.1.attn.to_k"))
        #expect(toK.down == byName["single_blocks.1.processor.qkv_lora.down.weight"])
        #expect(toK.up == byName["single_blocks.1.processor.qkv_lora.up.weight"]!.rows(h..<(2 * h)))
        #expect(toK.scale(rsLoRA: false) == 1)
        let mlp = try #require(split.module("single_transformer_blocks.1.proj_mlp"))
        #expect(mlp.up.values.allSatisfy { $0 == 0 })
        #expect(split.module("transformer_blocks.0.attn.to_add_out")?.up == byName["double_blocks.0.processor.proj_lora2.up.weight"])
        #expect(split.module("transformer_blocks.0.attn.to_v")?.up == byName["double_blocks.0.processor.qkv_lora1.up.weight"]!.rows((2 * h)..<(3 * h)))
        for format in Self.writable {
            let out = path(dir, format, "from_xlabs")
            try LoRAWriter.write(adapter, format: format, to: out, architecture: arch)
            let back = try LoRAReader.read(path: out)
            #expect(maxRelativeDifference(try adapter.deltaWeights(architecture: arch), try back.deltaWeights(architecture: arch)) <= 1e-6)
        }
    }
}
