import Foundation
import SafeTensors
import Testing
import TestSupport

/// One adapter of fixtures/lora_dialects/manifest.json (made by the writers' own code where they
/// run here: LyCORIS, PEFT; see fixtures/README.md).
struct DialectFixture: Sendable, CustomTestStringConvertible {
    var name: String
    var adapter: String
    var family: String
    var base: String
    var dialect: String
    var components: [String]
    var kinds: [String]
    var expected: String
    var textEncoderExpected: String?

    var testDescription: String { name }

    static let all: [DialectFixture] = {
        let path = Repository.path("fixtures/lora_dialects/manifest.json")
        guard let data = FileManager.default.contents(atPath: path),
              let list = try? JSONSerialization.jsonObject(with: data) as? [[String: Any]] else { return [] }
        return list.map { e in
            DialectFixture(name: e["name"] as! String, adapter: e["adapter"] as! String, family: e["family"] as! String,
                           base: e["base"] as! String, dialect: e["dialect"] as! String, components: e["components"] as! [String],
                           kinds: e["kinds"] as! [String], expected: e["expected"] as! String,
                           textEncoderExpected: e["text_encoder_expected"] as? String)
        }
    }()

    /// Adapters holding only B·A transformer deltas (exact in every low-rank format).
    static let lowRank = all.filter { $0.kinds == ["lora"] }

    var adapterPath: String { Repository.path("fixtures/lora_dialects/" + adapter) }
    var basePath: String { Repository.path(base) }
    var expectedPath: String { Repository.path("fixtures/lora_dialects/" + expected) }
}

/// `flowguard lora inspect / merge / convert` on every dialect people share.
@Suite struct LoRADialectCLITests {
    let dir = TemporaryDirectory()

    func flowguard(_ arguments: String...) throws -> ProcessResult {
        try runProcess(CLITests.binary, arguments)
    }

    func floats(_ path: String) throws -> [String: [Float]] {
        let collection = try TensorCollection(path: path)
        var out: [String: [Float]] = [:]
        for e in collection.entries { out[e.info.name] = try e.file.floats(of: e.info) }
        return out
    }

    static func relativeL2(_ a: [Float], _ b: [Float]) -> Double {
        guard a.count == b.count else { return .infinity }
        var num = 0.0, den = 0.0
        for (x, y) in zip(a, b) { num += Double(x - y) * Double(x - y); den += Double(y) * Double(y) }
        return (num / max(den, 1e-30)).squareRoot()
    }

    /// Every tensor the reference changes equals the merge's (rel L2 ≤ 1e-5), and every other
    /// tensor is the base's, bit for bit.
    func expectMerged(_ output: String, _ fx: DialectFixture, tolerance: Double = 1e-5) throws {
        let got = try floats(output), expected = try floats(fx.expectedPath), base = try floats(fx.basePath)
        #expect(!expected.isEmpty)
        for (name, values) in expected {
            let err = Self.relativeL2(got[name] ?? [], values)
            #expect(err <= tolerance, "\(fx.name): \(name) rel L2 \(err)")
        }
        for (name, values) in base where expected[name] == nil {
            #expect(got[name] == values, "\(fx.name): \(name) changed")
        }
    }

    @Test func theManifestListsEveryDialect() {
        let dialects = Set(DialectFixture.all.map(\.dialect))
        #expect(dialects == ["lycoris", "peft", "kohya", "comfy", "onetrainer", "xlabs", "bfl-control", "fal-kontext"])
        #expect(Set(DialectFixture.all.flatMap(\.kinds)) == ["lora", "lokr", "loha", "full", "replace", "dora"])
    }

    @Test(arguments: DialectFixture.all)
    func inspectNamesDialectAndComponents(_ fx: DialectFixture) throws {
        let result = try flowguard("lora", "inspect", fx.adapterPath, "--json")
        #expect(result.status == 0, "\(result.stderr)")
        let json = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any] ?? [:]
        #expect(json["dialect"] as? String == fx.dialect)
        #expect(json["components"] as? [String] == fx.components)
        #expect(Set(json["kinds"] as? [String] ?? []) == Set(fx.kinds))
        let text = try flowguard("lora", "inspect", fx.adapterPath)
        #expect(text.status == 0)
        #expect(text.stdout.contains("components: " + fx.components.joined(separator: ", ")))
    }

    @Test(arguments: DialectFixture.all)
    func mergeEqualsTheReference(_ fx: DialectFixture) throws {
        let out = dir.file(fx.name + ".safetensors")
        let result = try flowguard("lora", "merge", fx.basePath, fx.adapterPath, out, "--json")
        #expect(result.status == 0, "\(result.stderr)")
        try expectMerged(out, fx)
        let json = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any] ?? [:]
        let te = json["skipped_text_encoder_module_count"] as? Int ?? -1
        #expect(fx.components.contains { $0.hasPrefix("text_encoder") } ? te > 0 : te == 0)
        if te > 0 {
            #expect(result.stderr.contains("\(te) text-encoder module"))
            #expect(result.stderr.contains("left out"))
        }
    }

    /// The same adapters merged into the other layout: converting the merged file to the
    /// expectation's layout gives the same tensors (norm scales, biases, a widened input and
    /// fused or split targets included).
    @Test(arguments: DialectFixture.all)
    func mergeIntoTheOtherLayoutAgrees(_ fx: DialectFixture) throws {
        let toOriginal = fx.base.contains("/diffusers/")
        let other = toOriginal
            ? fx.basePath.replacingOccurrences(of: "diffusers/diffusion_pytorch_model.safetensors", with: "original.safetensors")
            : fx.basePath.replacingOccurrences(of: "original.safetensors", with: "diffusers/diffusion_pytorch_model.safetensors")
        let merged = dir.file(fx.name + ".other.safetensors"), back = dir.file(fx.name + ".back.safetensors")
        let result = try flowguard("lora", "merge", other, fx.adapterPath, merged)
        #expect(result.status == 0, "\(result.stderr)")
        #expect(try flowguard("convert", merged, back, "--layout", toOriginal ? "diffusers" : "original").status == 0)
        let got = try floats(back), expected = try floats(fx.expectedPath)
        for (name, values) in expected {
            let err = Self.relativeL2(got[name] ?? [], values)
            #expect(err <= 1e-5, "\(fx.name): \(name) rel L2 \(err)")
        }
    }

    @Test(arguments: DialectFixture.lowRank)
    func lowRankDialectsConvertAndMergeTheSame(_ fx: DialectFixture) throws {
        let hasTE = fx.components != ["transformer"]
        let familyBase = Repository.path(fx.family == "flux" ? "fixtures/flux_tiny/original.safetensors" : "fixtures/sd35_tiny/original.safetensors")
        for format in ["diffusers", "kohya", "comfy", "peft"] {
            let converted = dir.file("\(fx.name).\(format)" + (format == "peft" ? "" : ".safetensors"))
            let result = try flowguard("lora", "convert", fx.adapterPath, converted, "--to", format, "--base", familyBase)
            if format == "peft" && hasTE {
                #expect(result.status == 1)
                #expect(result.stderr.contains("text-encoder modules"))
                #expect(!FileManager.default.fileExists(atPath: converted))
                continue
            }
            #expect(result.status == 0, "\(fx.name) → \(format): \(result.stderr)")
            let out = dir.file("\(fx.name).\(format).merged.safetensors")
            let merge = try flowguard("lora", "merge", fx.basePath, converted, out)
            #expect(merge.status == 0, "\(fx.name) via \(format): \(merge.stderr)")
            try expectMerged(out, fx)
        }
    }

    /// Text-encoder modules survive `--to diffusers` as `<component>.<module>.lora_A/B.weight` with
    /// ΔW equal to the kohya file's (the expectation names them as transformers does).
    @Test(arguments: DialectFixture.all.filter { $0.textEncoderExpected != nil })
    func textEncoderModulesSurviveConversion(_ fx: DialectFixture) throws {
        let out = dir.file(fx.name + ".te.safetensors")
        let familyBase = Repository.path(fx.family == "flux" ? "fixtures/flux_tiny/original.safetensors" : "fixtures/sd35_tiny/original.safetensors")
        let result = try flowguard("lora", "convert", fx.adapterPath, out, "--to", "diffusers", "--base", familyBase)
        #expect(result.status == 0, "\(result.stderr)")
        let got = try floats(out)
        let expected = try floats(Repository.path("fixtures/lora_dialects/" + fx.textEncoderExpected!))
        let shapes = try TensorCollection(path: out).infos.reduce(into: [String: [Int]]()) { $0[$1.name] = $1.shape }
        for (key, delta) in expected {
            let module = String(key.dropLast(".delta".count))
            guard let a = got[module + ".lora_A.weight"], let b = got[module + ".lora_B.weight"],
                  let aShape = shapes[module + ".lora_A.weight"], let bShape = shapes[module + ".lora_B.weight"] else {
                Issue.record("\(module) missing from the diffusers file"); continue
            }
            let r = aShape[0], inF = aShape[1], outF = bShape[0]
            let alpha = got[module + ".alpha"]?.first ?? Float(r)
            var d = [Float](repeating: 0, count: outF * inF)
            for i in 0..<outF { for j in 0..<inF { for k in 0..<r { d[i * inF + j] += b[i * r + k] * a[k * inF + j] } } }
            d = d.map { $0 * alpha / Float(r) }
            #expect(Self.relativeL2(d, delta) <= 1e-5, "\(module)")
        }
        // …and read back as the same components.
        let inspect = try flowguard("lora", "inspect", out, "--json")
        let json = try JSONSerialization.jsonObject(with: Data(inspect.stdout.utf8)) as? [String: Any] ?? [:]
        #expect(json["components"] as? [String] == fx.components)
    }

    @Test func nonLowRankConvertWithoutRankNamesTheKind() throws {
        let fx = DialectFixture.all.first { $0.name == "flux_lycoris_lokr" }!
        let out = dir.file("never.safetensors")
        let result = try flowguard("lora", "convert", fx.adapterPath, out, "--to", "diffusers")
        #expect(result.status == 1)
        #expect(result.stderr.contains("lokr"))
        #expect(result.stderr.contains("--rank"))
        #expect(!FileManager.default.fileExists(atPath: out))
    }

    /// LoKr, LoHa and DoRA adapters become LoRAs with `--rank`: at full rank the LoRA merges to
    /// the reference (≤ 1e-4), with and without --base where the kind allows it.
    @Test(arguments: DialectFixture.all.filter { !$0.kinds.contains("full") && !$0.kinds.contains("replace") && $0.kinds != ["lora"] })
    func fullRankConversionReproducesTheMerge(_ fx: DialectFixture) throws {
        let needsBase = fx.kinds.contains("dora")
        for withBase in needsBase ? [true] : [true, false] {
            let lora = dir.file("\(fx.name).rank\(withBase).safetensors"), out = dir.file("\(fx.name).rank\(withBase).merged.safetensors")
            let args = ["lora", "convert", fx.adapterPath, lora, "--to", "diffusers", "--rank", "256", "--json"] + (withBase ? ["--base", fx.basePath] : [])
            let result = try runProcess(CLITests.binary, args)
            #expect(result.status == 0, "\(result.stderr)")
            let json = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any] ?? [:]
            let energy = json["retained_energy"] as? [String: Any]
            #expect(abs((energy?["overall"] as? Double ?? 0) - 1) < 1e-6)
            #expect((energy?["modules"] as? [Any])?.isEmpty == false)
            let merge = try flowguard("lora", "merge", fx.basePath, lora, out)
            #expect(merge.status == 0, "\(merge.stderr)")
            try expectMerged(out, fx, tolerance: 1e-4)
        }
    }

    @Test func lowerRankReportsItsRetainedEnergy() throws {
        let fx = DialectFixture.all.first { $0.name == "flux_lycoris_loha" }!
        let lora = dir.file("r2.safetensors")
        let result = try flowguard("lora", "convert", fx.adapterPath, lora, "--to", "kohya", "--rank", "2")
        #expect(result.status == 0, "\(result.stderr)")
        let line = result.stdout.split(separator: "\n").first { $0.hasPrefix("retained energy at rank 2: ") }
        let value = line.flatMap { Double($0.dropFirst("retained energy at rank 2: ".count).prefix(8)) } ?? 1
        #expect(value > 0.05 && value < 0.999)
        #expect(result.stdout.contains("transformer_blocks.0.attn.to_q: rank 2, "))
    }

    @Test func doraConversionNeedsTheBase() throws {
        let fx = DialectFixture.all.first { $0.name == "flux_peft_dora" }!
        let out = dir.file("never.safetensors")
        let result = try flowguard("lora", "convert", fx.adapterPath, out, "--to", "diffusers", "--rank", "8")
        #expect(result.status == 1)
        #expect(result.stderr.contains("DoRA") && result.stderr.contains("--base"))
        #expect(!FileManager.default.fileExists(atPath: out))
    }

    /// Issue 17 Build 6: a diffusers FLUX LoRA on `proj_out` of a model whose out_channels is not
    /// 64 converts without --base, the sizes taken from the adapter itself, and merges the same.
    @Test func adapterOnlyConversionTakesSizesFromTheAdapter() throws {
        var rng = SeededGenerator(seed: 3)
        func values(_ n: Int) -> [Float] { (0..<n).map { _ in Float.random(in: -0.5...0.5, using: &rng) } }
        var tensors: [(String, [Int], [Float])] = []
        for (m, o, i) in [("transformer_blocks.0.attn.to_q", 32, 32), ("proj_out", 16, 32), ("x_embedder", 32, 16),
                          ("context_embedder", 32, 24), ("time_text_embed.text_embedder.linear_1", 32, 20)] {
            tensors.append(("transformer.\(m).lora_A.weight", [2, i], values(2 * i)))
            tensors.append(("transformer.\(m).lora_B.weight", [o, 2], values(2 * o)))
        }
        let adapter = try write("proj_out.safetensors", tensors)
        let kohya = dir.file("proj_out_kohya.safetensors")
        let result = try flowguard("lora", "convert", adapter, kohya, "--to", "kohya")
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stderr.contains("16 output channels (from the output projection)"))
        let base = Repository.path("fixtures/flux_tiny/original.safetensors")
        let a = dir.file("a.safetensors"), b = dir.file("b.safetensors")
        #expect(try flowguard("lora", "merge", base, adapter, a).status == 0)
        #expect(try flowguard("lora", "merge", base, kohya, b).status == 0)
        let x = try floats(a), y = try floats(b)
        #expect(x.keys.sorted() == y.keys.sorted())
        for (name, v) in x { #expect(Self.relativeL2(y[name]!, v) <= 1e-6, "\(name)") }
        #expect(x["final_layer.linear.weight"] != (try floats(base))["final_layer.linear.weight"])
    }

    /// `run --lora` applies LoKr, LoHa and DoRA exactly at load (low-rank parts stay branches):
    /// the output equals a run of the merged checkpoint.
    @Test(arguments: ["flux_lycoris_lokr_dora", "flux_peft_dora", "sd3_lycoris_loha", "sd3_lycoris_lora_dora", "flux_kohya_te"])
    func runWithTheAdapterEqualsRunningTheMerge(_ name: String) throws {
        let fx = DialectFixture.all.first { $0.name == name }!
        let folder = fx.family == "flux" ? "fixtures/flux_tiny" : "fixtures/sd35_tiny"
        let original = Repository.path(folder + "/original.safetensors"), merged = dir.file(name + ".m.safetensors")
        #expect(try flowguard("lora", "merge", original, fx.adapterPath, merged).status == 0)
        let common = ["--config", Repository.path(folder + "/diffusers/config.json"), "--inputs", Repository.path(folder + "/io.safetensors"), "--quiet"]
        let a = dir.file(name + ".a.safetensors"), b = dir.file(name + ".b.safetensors")
        let withAdapter = try runProcess(CLITests.binary, ["run", "--model", original, "--output", a, "--lora", fx.adapterPath] + common)
        #expect(withAdapter.status == 0, "\(withAdapter.stderr)")
        let onMerged = try runProcess(CLITests.binary, ["run", "--model", merged, "--output", b] + common)
        #expect(onMerged.status == 0, "\(onMerged.stderr)")
        let x = try floats(a), y = try floats(b)
        #expect(!x.isEmpty)
        for (k, v) in y { #expect(Self.relativeL2(x[k] ?? [], v) <= 1e-5, "\(k)") }
    }

    // MARK: bad inputs: a clear error naming file, key and byte offset; no output

    func write(_ name: String, _ tensors: [(String, [Int], [Float])]) throws -> String {
        let path = dir.file(name)
        try SafeTensorsWriter.write(to: path, tensors: tensors.map { (TensorSpec(name: $0.0, dtype: .f32, shape: $0.1), $0.2.withUnsafeBytes { Array($0) }) })
        return path
    }

    func expectRefused(_ adapter: String, mentions: [String], base: String = Repository.path("fixtures/flux_tiny/diffusers/diffusion_pytorch_model.safetensors")) throws {
        let out = dir.file("refused.safetensors")
        let result = try flowguard("lora", "merge", base, adapter, out)
        #expect(result.status == 1, "\(result.stdout)")
        #expect(result.stderr.hasPrefix("error: "))
        for m in mentions { #expect(result.stderr.contains(m), "\(result.stderr) should mention \(m)") }
        #expect(!FileManager.default.fileExists(atPath: out))
    }

    @Test func lokrWhoseProductDoesNotFitTheWeight() throws {
        let path = try write("lokr_bad.safetensors", [
            ("lycoris_transformer_blocks_0_attn_to_q.lokr_w1", [4, 4], [Float](repeating: 0.1, count: 16)),
            ("lycoris_transformer_blocks_0_attn_to_q.lokr_w2", [8, 4], [Float](repeating: 0.1, count: 32)),
        ])
        try expectRefused(path, mentions: [path, "lycoris_transformer_blocks_0_attn_to_q.lokr_w1", "byte", "[32, 16]", "[32, 32]"])
    }

    @Test func lokrWithANonFiniteFactor() throws {
        var w2 = [Float](repeating: 0.1, count: 64)
        w2[5] = .infinity
        let path = try write("lokr_inf.safetensors", [
            ("lycoris_transformer_blocks_0_attn_to_q.lokr_w1", [4, 4], [Float](repeating: 0.1, count: 16)),
            ("lycoris_transformer_blocks_0_attn_to_q.lokr_w2", [8, 8], w2),
        ])
        try expectRefused(path, mentions: [path, "lycoris_transformer_blocks_0_attn_to_q.lokr_w2", "byte", "infinite"])
    }

    @Test func doraMagnitudeOfTheWrongLength() throws {
        let path = try write("dora_bad.safetensors", [
            ("lycoris_transformer_blocks_0_attn_to_q.lora_down.weight", [2, 32], [Float](repeating: 0.1, count: 64)),
            ("lycoris_transformer_blocks_0_attn_to_q.lora_up.weight", [32, 2], [Float](repeating: 0.1, count: 64)),
            ("lycoris_transformer_blocks_0_attn_to_q.dora_scale", [31, 1], [Float](repeating: 1, count: 31)),
        ])
        try expectRefused(path, mentions: [path, "lycoris_transformer_blocks_0_attn_to_q.dora_scale", "byte", "31 values", "32 output rows"])
    }

    @Test func fullDeltaOfTheWrongShape() throws {
        let path = try write("diff_bad.safetensors", [
            ("diffusion_model.single_blocks.0.linear2.diff", [32, 159], [Float](repeating: 0.1, count: 32 * 159)),
        ])
        try expectRefused(path, mentions: [path, "diffusion_model.single_blocks.0.linear2.diff", "byte", "[32, 159]", "[32, 160]"],
                          base: Repository.path("fixtures/flux_tiny/original.safetensors"))
    }

    @Test func textEncoderOnlyAdapterHasNothingToMerge() throws {
        let path = try write("te_only.safetensors", [
            ("lora_te1_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight", [2, 16], [Float](repeating: 0.1, count: 32)),
            ("lora_te1_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight", [16, 2], [Float](repeating: 0.1, count: 32)),
        ])
        try expectRefused(path, mentions: [path, "nothing to merge", "text encoders", "text_encoder"])
        let inspect = try flowguard("lora", "inspect", path, "--json")
        let json = try JSONSerialization.jsonObject(with: Data(inspect.stdout.utf8)) as? [String: Any] ?? [:]
        #expect(json["components"] as? [String] == ["text_encoder"])
    }

    @Test func keysOfTwoDialectsMixedAreListed() throws {
        let path = try write("mixed.safetensors", [
            ("lora_unet_double_blocks_0_img_attn_proj.lora_down.weight", [2, 32], [Float](repeating: 0.1, count: 64)),
            ("lora_unet_double_blocks_0_img_attn_proj.lora_up.weight", [32, 2], [Float](repeating: 0.1, count: 64)),
            ("transformer.transformer_blocks.0.attn.to_q.lora_A.weight", [2, 32], [Float](repeating: 0.1, count: 64)),
            ("transformer.transformer_blocks.0.attn.to_q.lora_B.weight", [32, 2], [Float](repeating: 0.1, count: 64)),
        ])
        try expectRefused(path, mentions: [path, "2 keys not part of a kohya adapter",
                                           "transformer.transformer_blocks.0.attn.to_q.lora_A.weight",
                                           "transformer.transformer_blocks.0.attn.to_q.lora_B.weight"])
    }
}
