import Testing
import Foundation
import BLAS
import Checkpoints
import LoRA
import SafeTensors
import TestSupport

/// Helpers shared by the merge and extract tests.
enum MergeFixtures {
    static let sd35Diffusers = Repository.path("fixtures/sd35_tiny/diffusers")
    static let sd35Original = Repository.path("fixtures/sd35_tiny/original.safetensors")
    static let fluxOriginal = Repository.path("fixtures/flux_tiny/original.safetensors")
    static let fluxDiffusers = Repository.path("fixtures/flux_tiny/diffusers")

    static func random(_ shape: [Int], _ rng: inout SeededGenerator, scale: Float = 0.5) -> Matrix {
        Matrix(shape: shape, values: (0..<shape.reduce(1, *)).map { _ in Float.random(in: -scale...scale, using: &rng) })
    }

    /// A module of rank `rank` on an [out, in] linear.
    static func module(_ name: String, out: Int, in: Int, rank: Int, alpha: Float?, bias: Bool = false,
                       _ rng: inout SeededGenerator) -> LoRAModule {
        LoRAModule(name: name, down: random([rank, `in`], &rng), up: random([out, rank], &rng), alpha: alpha,
                   upBias: bias ? random([out], &rng) : nil)
    }

    /// A diffusers-named adapter on the tiny SD3.5 (hidden 32, MLP 128): attention projections
    /// (split, so they land in fused qkv rows in the original layout), a context projection, an
    /// attn2 projection, an MLP, a bias, and the two half-swapped modulations.
    static func sd35Adapter(seed: UInt64 = 7, rank: Int = 4) -> LoRAAdapter {
        var rng = SeededGenerator(seed: seed)
        let modules = [
            module("transformer_blocks.0.attn.to_q", out: 32, in: 32, rank: rank, alpha: 8, bias: true, &rng),
            module("transformer_blocks.0.attn.to_k", out: 32, in: 32, rank: rank, alpha: 8, &rng),
            module("transformer_blocks.1.attn.add_v_proj", out: 32, in: 32, rank: rank, alpha: nil, &rng),
            module("transformer_blocks.1.attn2.to_v", out: 32, in: 32, rank: rank, alpha: 2, &rng),
            module("transformer_blocks.2.ff.net.0.proj", out: 128, in: 32, rank: rank, alpha: 8, &rng),
            module("transformer_blocks.2.attn.to_out.0", out: 32, in: 32, rank: rank, alpha: 8, &rng),
            module("transformer_blocks.2.norm1_context.linear", out: 64, in: 32, rank: rank, alpha: 8, &rng),
            module("norm_out.linear", out: 64, in: 32, rank: rank, alpha: 8, &rng),
        ]
        return LoRAAdapter(modules: modules, layout: .diffusers, format: .diffusers, family: .sd3)
    }

    static func floats(_ path: String) throws -> [String: [Float]] {
        let collection = try TensorCollection(path: path)
        var out: [String: [Float]] = [:]
        for entry in collection.entries { out[entry.info.name] = try entry.file.floats(of: entry.info) }
        return out
    }

    /// Largest |a − b| / max(1, |b|).
    static func maxRelativeDifference(_ a: [Float], _ b: [Float]) -> Float {
        precondition(a.count == b.count)
        return zip(a, b).reduce(0) { max($0, abs($1.0 - $1.1) / max(1, abs($1.1))) }
    }
}

@Suite struct MergeTests {
    let dir = TemporaryDirectory()

    /// The expected merge in diffusers naming: base + scale·ΔW (and bias) per module, computed
    /// independently of the placement code.
    static func expectedDiffusersMerge(base: [String: [Float]], adapter: LoRAAdapter, scale: Float) -> [String: [Float]] {
        var out = base
        for module in adapter.modules {
            let delta = module.delta(rsLoRA: adapter.rsLoRA, extra: scale)
            out[module.name + ".weight"] = zip(out[module.name + ".weight"]!, delta.values).map { $0 + $1 }
            if let bias = module.upBias {
                let s = module.scale(rsLoRA: adapter.rsLoRA) * scale
                out[module.name + ".bias"] = zip(out[module.name + ".bias"]!, bias.values).map { $0 + s * $1 }
            }
        }
        return out
    }

    @Test func mergeIntoDiffusersBaseAddsDelta() throws {
        let adapter = MergeFixtures.sd35Adapter()
        let output = dir.file("merged.safetensors")
        let base = try TensorCollection(path: MergeFixtures.sd35Diffusers)
        let report = try LoRAMerge.merge(base: base, adapter: adapter, scale: 0.75, output: output)
        #expect(report.baseLayout == .diffusers && report.adapterLayout == .diffusers)
        #expect(report.modulesMerged == 8 && report.touchedTensors.count == 9)
        #expect(report.tensorsWritten == 127 && report.conversion.isClean)
        let expected = Self.expectedDiffusersMerge(base: try MergeFixtures.floats(MergeFixtures.sd35Diffusers),
                                                   adapter: adapter, scale: 0.75)
        let merged = try MergeFixtures.floats(output)
        #expect(Set(merged.keys) == Set(expected.keys))
        let touched = Set(report.touchedTensors)
        let baseValues = try MergeFixtures.floats(MergeFixtures.sd35Diffusers)
        for (name, values) in merged {
            #expect(MergeFixtures.maxRelativeDifference(values, expected[name]!) <= 1e-6, "\(name)")
            if !touched.contains(name) { #expect(values == baseValues[name]!, "\(name) must be copied unchanged") }
            else { #expect(values != baseValues[name]!, "\(name) must change") }
        }
    }

    /// The same diffusers-named adapter merged into the original-layout file (fused qkv,
    /// swapped modulation halves) gives exactly the conversion of the diffusers merge.
    @Test func mergeIntoOriginalBaseEqualsConvertedDiffusersMerge() throws {
        let adapter = MergeFixtures.sd35Adapter()
        let mergedDiffusers = dir.file("merged-diffusers.safetensors")
        let mergedOriginal = dir.file("merged-original.safetensors")
        let converted = dir.file("converted.safetensors")
        try LoRAMerge.merge(base: try TensorCollection(path: MergeFixtures.sd35Diffusers), adapter: adapter,
                            scale: 1.5, output: mergedDiffusers)
        let report = try LoRAMerge.merge(base: try TensorCollection(path: MergeFixtures.sd35Original), adapter: adapter,
                                         scale: 1.5, output: mergedOriginal)
        #expect(report.baseLayout == .original)
        #expect(report.touchedTensors.contains("model.diffusion_model.joint_blocks.0.x_block.attn.qkv.weight"))
        #expect(report.touchedTensors.contains("model.diffusion_model.joint_blocks.0.x_block.attn.qkv.bias"))
        #expect(report.touchedTensors.contains("model.diffusion_model.final_layer.adaLN_modulation.1.weight"))
        try Converter(source: try TensorCollection(path: mergedDiffusers), to: .original, prefix: .sai).write(to: converted)
        let a = try MergeFixtures.floats(converted), b = try MergeFixtures.floats(mergedOriginal)
        #expect(Set(a.keys) == Set(b.keys) && a.count == 95)
        for (name, values) in b {
            #expect(MergeFixtures.maxRelativeDifference(values, a[name]!) <= 1e-6, "\(name)")
        }
        // And the merge did something to the original file.
        let original = try MergeFixtures.floats(MergeFixtures.sd35Original)
        #expect(b["model.diffusion_model.joint_blocks.0.x_block.attn.qkv.weight"] != original["model.diffusion_model.joint_blocks.0.x_block.attn.qkv.weight"])
    }

    @Test func unmergeUndoesMerge() throws {
        let adapter = MergeFixtures.sd35Adapter(seed: 3)
        let merged = dir.file("merged.safetensors"), restored = dir.file("restored.safetensors")
        try LoRAMerge.merge(base: try TensorCollection(path: MergeFixtures.sd35Original), adapter: adapter, output: merged)
        let report = try LoRAMerge.merge(base: try TensorCollection(path: merged), adapter: adapter, output: restored, unmerge: true)
        #expect(report.unmerged)
        let a = try MergeFixtures.floats(restored), b = try MergeFixtures.floats(MergeFixtures.sd35Original)
        for (name, values) in b { #expect(MergeFixtures.maxRelativeDifference(a[name]!, values) <= 1e-6, "\(name)") }
    }

    /// FLUX single blocks: diffusers to_q/to_k/to_v/proj_mlp land in rows [H,H,H,4H] of linear1.
    @Test func fluxSingleBlockLinear1Placement() throws {
        var rng = SeededGenerator(seed: 21)
        let h = 32
        let names = ["to_q", "to_k", "to_v", "proj_mlp"].map { "single_transformer_blocks.1." + ($0 == "proj_mlp" ? $0 : "attn." + $0) }
        let modules = names.map { MergeFixtures.module($0, out: $0.hasSuffix("proj_mlp") ? 4 * h : h, in: h, rank: 2, alpha: 4, bias: true, &rng) }
        let adapter = LoRAAdapter(modules: modules, layout: .diffusers, format: .peft, family: .flux)
        let base = try TensorCollection(path: MergeFixtures.fluxOriginal)
        let detected = try Architecture.detect(base.infos)
        var shapes: [String: [Int]] = [:]
        for info in base.infos { shapes[info.name] = info.shape }
        let placement = try DeltaPlacement(adapter: adapter, base: detected, shapes: shapes)
        let slices = placement.slices["single_blocks.1.linear1.weight"]!
        #expect(slices.map(\.targetRows) == [0..<h, h..<(2 * h), (2 * h)..<(3 * h), (3 * h)..<(7 * h)])
        #expect(slices.map(\.sourceRows) == [0..<h, 0..<h, 0..<h, 0..<(4 * h)])
        #expect(placement.slices["single_blocks.1.linear1.bias"]?.count == 4)
        #expect(placement.touchedTensors == ["single_blocks.1.linear1.bias", "single_blocks.1.linear1.weight"])

        let output = dir.file("flux.safetensors")
        try LoRAMerge.merge(base: base, adapter: adapter, scale: 2, output: output)
        let merged = try MergeFixtures.floats(output)["single_blocks.1.linear1.weight"]!
        var expected = try base.entry("single_blocks.1.linear1.weight")!.file.floats(of: base.entry("single_blocks.1.linear1.weight")!.info)
        var row = 0
        for module in modules {
            let d = module.delta(rsLoRA: false, extra: 2).values
            for i in 0..<(module.outFeatures * h) { expected[row * h + i] += d[i] }
            row += module.outFeatures
        }
        #expect(MergeFixtures.maxRelativeDifference(merged, expected) <= 1e-6)

        // The diffusers FLUX base gives the same after conversion.
        let viaDiffusers = dir.file("flux-d.safetensors"), converted = dir.file("flux-c.safetensors")
        try LoRAMerge.merge(base: try TensorCollection(path: MergeFixtures.fluxDiffusers), adapter: adapter, scale: 2, output: viaDiffusers)
        try Converter(source: try TensorCollection(path: viaDiffusers), to: .original, prefix: KeyPrefix.none).write(to: converted)
        let a = try MergeFixtures.floats(converted), b = try MergeFixtures.floats(output)
        for (name, values) in b { #expect(MergeFixtures.maxRelativeDifference(values, a[name]!) <= 1e-6, "\(name)") }
    }

    /// A bf16 base stays bf16; merged values are FloatCodec's rounding of base + ΔW.
    @Test func bf16BaseKeepsBF16() throws {
        let bf16 = dir.file("base-bf16.safetensors"), output = dir.file("merged.safetensors")
        try Converter(source: try TensorCollection(path: MergeFixtures.sd35Diffusers), to: .diffusers, dtype: .bf16).write(to: bf16)
        let adapter = MergeFixtures.sd35Adapter()
        let report = try LoRAMerge.merge(base: try TensorCollection(path: bf16), adapter: adapter, output: output)
        #expect(report.tensorsByDType == [.bf16: 127])
        let collection = try TensorCollection(path: output)
        #expect(collection.infos.allSatisfy { $0.dtype == .bf16 })
        let expected = Self.expectedDiffusersMerge(base: try MergeFixtures.floats(bf16), adapter: adapter, scale: 1)
        var exact = 0, total = 0
        for entry in collection.entries where report.touchedTensors.contains(entry.info.name) {
            let bits = entry.file.withBytes(of: entry.info) { raw in (0..<entry.info.elementCount).map { raw.load(fromByteOffset: 2 * $0, as: UInt16.self) } }
            for (got, want) in zip(bits, expected[entry.info.name]!) {
                let rounded = FloatCodec.floatToBFloat16(want)
                total += 1
                if got == rounded { exact += 1 } else { #expect(abs(Int(got) - Int(rounded)) == 1, "\(entry.info.name)") }
            }
        }
        // gemm (β = 1) and a separate product + add may differ in the last fp32 bit, which can
        // flip a bf16 rounding tie; nearly every value must round identically.
        #expect(total > 10_000 && Double(exact) / Double(total) > 0.999)
    }

    @Test func narrowDTypeSaturationIsReported() throws {
        let output = dir.file("merged-f8.safetensors")
        let report = try LoRAMerge.merge(base: try TensorCollection(path: MergeFixtures.sd35Diffusers),
                                         adapter: MergeFixtures.sd35Adapter(), scale: 1e4, output: output, dtype: .f8e4m3)
        #expect(report.conversion.saturated > 0)
        #expect(try TensorCollection(path: output).infos.allSatisfy { $0.dtype == .f8e4m3 })
    }

    @Test func adapterForAnotherWidthIsRejected() throws {
        var rng = SeededGenerator(seed: 1)
        let output = dir.file("never.safetensors")
        let base = try TensorCollection(path: MergeFixtures.sd35Original)
        let wide = LoRAAdapter(modules: [MergeFixtures.module("transformer_blocks.0.attn.to_k", out: 32, in: 48, rank: 2, alpha: nil, &rng)],
                               layout: .diffusers, format: .diffusers)
        #expect {
            try LoRAMerge.merge(base: base, adapter: wide, output: output)
        } throws: { error in
            let text = "\(error)"
            return text.contains("transformer_blocks.0.attn.to_k") && text.contains("48 input features")
        }
        let tall = LoRAAdapter(modules: [MergeFixtures.module("transformer_blocks.0.attn.to_k", out: 40, in: 32, rank: 2, alpha: nil, &rng)],
                               layout: .diffusers, format: .diffusers)
        #expect { try LoRAMerge.merge(base: base, adapter: tall, output: output) } throws: { "\($0)".contains("40 output features") }
        let missing = LoRAAdapter(modules: [MergeFixtures.module("transformer_blocks.7.attn.to_q", out: 32, in: 32, rank: 2, alpha: nil, &rng)],
                                  layout: .diffusers, format: .diffusers)
        #expect { try LoRAMerge.merge(base: base, adapter: missing, output: output) } throws: { "\($0)".contains("transformer_blocks.7.attn.to_q") }
        // A FLUX module in an SD3 base (same layout: no tensor of that name).
        let flux = LoRAAdapter(modules: [MergeFixtures.module("single_transformer_blocks.0.proj_mlp", out: 128, in: 32, rank: 2, alpha: nil, &rng)],
                               layout: .diffusers, format: .diffusers)
        #expect { try LoRAMerge.merge(base: try TensorCollection(path: MergeFixtures.sd35Diffusers), adapter: flux, output: output) }
            throws: { "\($0)".contains("single_transformer_blocks.0.proj_mlp") }
        #expect(!FileManager.default.fileExists(atPath: output))
        #expect(dir.listing().isEmpty)
    }

    @Test func nonFiniteAdapterIsReported() throws {
        var adapter = MergeFixtures.sd35Adapter()
        adapter.modules[2].up.values[5] = .nan
        let output = dir.file("never.safetensors")
        #expect {
            try LoRAMerge.merge(base: try TensorCollection(path: MergeFixtures.sd35Diffusers), adapter: adapter, output: output)
        } throws: { error in
            guard case LoRAError.nonFinite(_, let key, _, let nan, _) = error else { return false }
            return key == "transformer_blocks.1.attn.add_v_proj.lora_B" && nan == 1
        }
        #expect(dir.listing().isEmpty)
    }

    @Test func outputMayNotOverwriteTheBase() throws {
        let copy = dir.file("base.safetensors")
        try FileManager.default.copyItem(atPath: MergeFixtures.sd35Original, toPath: copy)
        #expect(throws: LoRAMergeError.self) {
            try LoRAMerge.merge(base: try TensorCollection(path: copy), adapter: MergeFixtures.sd35Adapter(), output: copy)
        }
        #expect(throws: LoRAMergeError.self) {
            try LoRAMerge.merge(base: try TensorCollection(path: copy), adapter: MergeFixtures.sd35Adapter(), output: dir.path)
        }
    }

    /// The real diffusers-written fixture adapter (PEFT keys on to_q/to_k/to_v/to_out.0 …),
    /// read by LoRAReader, merges into both layouts consistently.
    @Test func realFixtureAdapterMergesIntoBothLayouts() throws {
        let adapter = try LoRAReader.read(path: Repository.path("fixtures/sd35_tiny/lora/pytorch_lora_weights.safetensors"))
        #expect(!adapter.modules.isEmpty)
        let d = dir.file("d.safetensors"), o = dir.file("o.safetensors"), c = dir.file("c.safetensors")
        let rd = try LoRAMerge.merge(base: try TensorCollection(path: MergeFixtures.sd35Diffusers), adapter: adapter, output: d)
        try LoRAMerge.merge(base: try TensorCollection(path: MergeFixtures.sd35Original), adapter: adapter, output: o)
        #expect(rd.touchedTensors.count >= adapter.modules.count)
        let expected = Self.expectedDiffusersMerge(base: try MergeFixtures.floats(MergeFixtures.sd35Diffusers), adapter: adapter, scale: 1)
        let merged = try MergeFixtures.floats(d)
        for (name, values) in merged { #expect(MergeFixtures.maxRelativeDifference(values, expected[name]!) <= 1e-6, "\(name)") }
        try Converter(source: try TensorCollection(path: d), to: .original, prefix: .sai).write(to: c)
        let a = try MergeFixtures.floats(c), b = try MergeFixtures.floats(o)
        for (name, values) in b { #expect(MergeFixtures.maxRelativeDifference(values, a[name]!) <= 1e-6, "\(name)") }
    }
}

/// A merge is computed in blocks of rows on several threads; every block boundary and thread
/// count gives the same bytes as the whole tensor on one thread.
@Suite struct RowBlockMergeTests {
    let dir = TemporaryDirectory()

    /// (adapter, base) of every adapter in fixtures/lora_dialects/manifest.json.
    static let fixtures: [(adapter: String, base: String)] = {
        let path = Repository.path("fixtures/lora_dialects/manifest.json")
        guard let data = FileManager.default.contents(atPath: path),
              let list = try? JSONSerialization.jsonObject(with: data) as? [[String: Any]] else { return [] }
        return list.map { (Repository.path("fixtures/lora_dialects/" + ($0["adapter"] as! String)), Repository.path($0["base"] as! String)) }
    }()

    /// A dialect fixture's base and its adapter, read for the base's architecture.
    static func load(adapter adapterPath: String, base basePath: String) throws -> (base: TensorCollection, adapter: LoRAAdapter) {
        let base = try TensorCollection(path: basePath)
        let detected = try Architecture.detect(base.infos)
        return (base, try LoRAReader.load(path: adapterPath, architecture: detected.architecture).adapter)
    }

    @Test func everyDialectMergesToTheSameBytesInBlocksOnThreads() throws {
        #expect(Self.fixtures.count >= 18)
        for (adapterPath, basePath) in Self.fixtures {
            let (base, adapter) = try Self.load(adapter: adapterPath, base: basePath)
            let whole = dir.path + "/whole.safetensors", blocks = dir.path + "/blocks.safetensors"
            try LoRAMerge.merge(base: base, adapter: adapter, scale: 0.7, output: whole, dtype: .f32)
            // 40 values a block: one row or a few per block, and blocks that cut fused slices.
            for (threads, blockValues) in [(1, 40), (3, 40), (2, 1000)] {
                try? FileManager.default.removeItem(atPath: blocks)
                let report = try LoRAMerge.merge(base: base, adapter: adapter, scale: 0.7, output: blocks, dtype: .f32,
                                                 threads: threads, blockValues: blockValues)
                #expect(!report.touchedTensors.isEmpty)
                #expect(FileManager.default.contents(atPath: blocks) == FileManager.default.contents(atPath: whole),
                        "\(adapterPath): \(threads) threads, \(blockValues) values a block")
            }
            try FileManager.default.removeItem(atPath: whole)
        }
    }

    @Test func blocksOfABF16BaseOnThreadsMatchOneThread() throws {
        // Rounding to the output dtype happens once per value, block or not.
        let adapter = MergeFixtures.sd35Adapter()
        let base = try TensorCollection(path: MergeFixtures.sd35Original)
        let one = dir.path + "/one.safetensors", many = dir.path + "/many.safetensors"
        try LoRAMerge.merge(base: base, adapter: adapter, output: one, dtype: .bf16)
        try LoRAMerge.merge(base: base, adapter: adapter, output: many, dtype: .bf16, threads: 4, blockValues: 100)
        #expect(FileManager.default.contents(atPath: one) == FileManager.default.contents(atPath: many))
    }
}
