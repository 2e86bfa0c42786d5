import Foundation
import Testing
import SafeTensors
import TestSupport

/// `flowguard` on GGUF files: writing them as gguf-py does, reading them back into safetensors,
/// running, inspecting, verifying and diffing them, and wrong containers named for what they are.
@Suite struct GGUFCLITests {
    let dir = TemporaryDirectory()

    func flowguard(_ arguments: String...) throws -> ProcessResult {
        try runProcess(CLITests.binary, arguments)
    }

    /// Every tensor of a safetensors file, widened.
    func tensors(_ path: String) throws -> [String: (shape: [Int], values: [Float])] {
        let file = try SafeTensorsFile(path: path)
        var out: [String: (shape: [Int], values: [Float])] = [:]
        for info in file.header.tensors { out[info.name] = (info.shape, try file.floats(of: info)) }
        return out
    }

    /// SHA-256 of a file, by `sha256sum`.
    func sha256(_ path: String) throws -> String {
        let tool = try #require(which("sha256sum"))
        let result = try runProcess(tool, [path])
        return String(result.stdout.prefix(64))
    }

    /// The reference hashes: `tools/fixtures/gguf_writer_reference.py` (gguf-py's GGUFWriter and
    /// quantize) on the fixture checkpoints, one line per (checkpoint, type).
    func referenceHashes() throws -> [(hash: String, source: String, type: String)] {
        let text = try String(contentsOfFile: Repository.path("fixtures/gguf/writer_reference.sha256"), encoding: .utf8)
        return text.split(separator: "\n").map { line in
            let parts = line.split(separator: " ", omittingEmptySubsequences: true).map(String.init)
            return (parts[0], parts[1], parts[2])
        }
    }

    @Test func writtenGGUFHasTheBytesOfGGUFPy() throws {
        let references = try referenceHashes()
        #expect(references.count == 16)
        for reference in references {
            let output = dir.file("\(reference.source.split(separator: "/")[0])-\(reference.type).gguf")
            let result = try flowguard("convert", Repository.path("fixtures/" + reference.source), output, "--dtype", reference.type, "--quiet")
            #expect(result.status == 0, "\(result.stderr)")
            #expect(try sha256(output) == reference.hash, "\(reference.source) \(reference.type)")
        }
    }

    @Test func ggufToSafeTensorsEqualsTheDequantizedValues() throws {
        // The fixture GGUF's values as gguf-py dequantizes them; read back through convert.
        let gguf = dir.file("sd3.gguf")
        #expect(try flowguard("convert", Repository.path("fixtures/sd35_tiny/original.safetensors"), gguf, "--dtype", "q4_1", "--quiet").status == 0)
        let back = dir.file("back.safetensors")
        let result = try flowguard("convert", gguf, back, "--layout", "original", "--dtype", "fp32", "--prefix", "sai")
        #expect(result.status == 0, "\(result.stderr)")
        let original = try tensors(Repository.path("fixtures/sd35_tiny/original.safetensors"))
        let values = try tensors(back)
        #expect(values.keys.sorted() == original.keys.sorted())
        let file = try SafeTensorsFile(path: back)
        #expect(file.tensors.allSatisfy { $0.dtype == .f32 })
        // Q4_1 is lossy but close; the small and 1-d tensors stay F32 and come back exactly.
        for (name, tensor) in original {
            let got = try #require(values[name])
            #expect(got.shape == tensor.shape)
            let scale = tensor.values.map { abs($0) }.max() ?? 1
            let worst = zip(got.values, tensor.values).map { abs($0 - $1) }.max() ?? 0
            if tensor.shape.count <= 1 || tensor.values.count <= 1024 { #expect(worst == 0, "\(name)") }
            else { #expect(worst <= scale / 8, "\(name)") }
        }
    }

    @Test func typesFixtureDecodesAsGGUFPyThroughDiff() throws {
        // Every type of fixtures/gguf/types.gguf against gguf-py's dequantization of it.
        let result = try flowguard("diff", Repository.path("fixtures/gguf/types.gguf"),
                                   Repository.path("fixtures/gguf/types.expected.safetensors"), "--json")
        #expect(result.status == 0 || result.status == 1, "\(result.stderr)")
        // Tolerance 0: every value of every type equals gguf-py's, nothing missing on either side.
        #expect(result.stdout.contains("\"differ_count\":0,\"only_in_a_count\":0,\"only_in_b_count\":0"), "\(result.stdout)")
        #expect(result.stdout.contains("\"name\":\"kquant.q6_k\",\"status\":\"equal\""))
    }

    @Test(arguments: [("sd35_tiny", nil as String?), ("flux_tiny", "fixtures/flux_tiny/diffusers/config.json")])
    func runOnGGUFEqualsRunOnItsDequantizedWeights(fixture: String, config: String?) throws {
        let extra = config.map { ["--config", Repository.path($0)] } ?? []
        for type in ["f32", "q8_0", "q5_1"] {
            let gguf = dir.file("\(fixture)-\(type).gguf")
            #expect(try flowguard("convert", Repository.path("fixtures/\(fixture)/original.safetensors"), gguf, "--dtype", type, "--quiet").status == 0)
            let dequantized = dir.file("\(fixture)-\(type).safetensors")
            #expect(try flowguard("convert", gguf, dequantized, "--layout", "original", "--dtype", "fp32", "--quiet").status == 0)
            let a = dir.file("a-\(fixture)-\(type).safetensors"), b = dir.file("b-\(fixture)-\(type).safetensors")
            let inputs = Repository.path("fixtures/\(fixture)/io.safetensors")
            let first = try runProcess(CLITests.binary, ["run", "--model", gguf, "--inputs", inputs, "--output", a, "--quiet"] + extra)
            #expect(first.status == 0, "\(first.stderr)")
            let second = try runProcess(CLITests.binary, ["run", "--model", dequantized, "--inputs", inputs, "--output", b, "--quiet"] + extra)
            #expect(second.status == 0, "\(second.stderr)")
            let x = try #require(try tensors(a)["output"]).values, y = try #require(try tensors(b)["output"]).values
            #expect(x == y, "\(fixture) \(type): run on the GGUF differs from run on its dequantized weights")
            if type == "f32" {
                // f32 weights are the fixture's own: diffusers' output from the fixture applies.
                let reference = try #require(try tensors(inputs)["output"]).values
                let scale = Double(reference.map { abs($0) }.max() ?? 1)
                let worst = zip(x, reference).map { Double(abs($0 - $1)) }.max() ?? 0
                #expect(worst / scale <= 1e-4, "\(fixture): \(worst / scale) relative to diffusers")
            }
        }
    }

    @Test func inspectShowsTypesBitsAndMetadata() throws {
        let gguf = dir.file("flux.gguf")
        #expect(try flowguard("convert", Repository.path("fixtures/flux_tiny/original.safetensors"), gguf, "--dtype", "q8_0", "--quiet").status == 0)
        let result = try flowguard("inspect", gguf)
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout.contains("architecture: FLUX"))
        #expect(result.stdout.contains("container: GGUF"))
        #expect(result.stdout.contains("general.architecture = \"flux\""))
        #expect(result.stdout.contains("general.file_type = 7"))
        #expect(result.stdout.contains("bits/weight"))
        let line = try #require(result.stdout.split(separator: "\n").first { $0.contains(" double_blocks.0.img_attn.qkv.weight ") })
        #expect(line.contains("Q8_0") && line.hasSuffix("8.5"), "\(line)")
        // stable-diffusion.cpp names (prefix kept, no architecture key) are recognised too.
        let sdcpp = try flowguard("inspect", Repository.path("fixtures/gguf/sdcpp_flux_q5_0.gguf"))
        #expect(sdcpp.status == 0)
        #expect(sdcpp.stdout.contains("Q5_0"))
        let stats = try flowguard("inspect", "--stats", gguf)
        #expect(stats.status == 0, "\(stats.stderr)")
        #expect(stats.stdout.contains("Q8_0"))
    }

    @Test func verifyChecksGGUFAndNamesTheProblem() throws {
        let gguf = dir.file("sd3.gguf")
        #expect(try flowguard("convert", Repository.path("fixtures/sd35_tiny/original.safetensors"), gguf, "--dtype", "q8_0", "--quiet").status == 0)
        let ok = try flowguard("verify", gguf)
        #expect(ok.status == 0)
        #expect(ok.stdout == "ok: \(gguf)\n")
        let bytes = try readBytes(gguf)
        let truncated = dir.file("truncated.gguf")
        try writeBytes(Array(bytes.prefix(3000)), to: truncated)
        let bad = try flowguard("verify", truncated)
        #expect(bad.status == 1)
        #expect(bad.stderr.contains("\(truncated) (byte 2996): truncated"), "\(bad.stderr)")
        // The same file is refused by convert with no output left behind.
        let out = dir.file("out.safetensors")
        let refused = try flowguard("convert", truncated, out, "--layout", "original")
        #expect(refused.status != 0)
        #expect(!FileManager.default.fileExists(atPath: out))
    }

    @Test func wrongContainersSayWhatTheyAre() throws {
        let gguf = Repository.path("fixtures/gguf/types.gguf")
        let lora = try flowguard("lora", "inspect", gguf)
        #expect(lora.status != 0)
        #expect(lora.stderr.contains("is a GGUF file"), "\(lora.stderr)")
        let pickle = dir.file("model.ckpt")
        try writeBytes([0x80, 0x02, 0x7D, 0x71, 0x00, 0x2E, 0, 0, 0, 0], to: pickle)
        let refused = try flowguard("inspect", pickle)
        #expect(refused.status == 1)
        #expect(refused.stderr.contains("pickle checkpoints are not read: convert them with"), "\(refused.stderr)")
        let zip = dir.file("model.pt")
        try writeBytes([0x50, 0x4B, 0x03, 0x04] + [UInt8](repeating: 0, count: 60), to: zip)
        #expect(try flowguard("convert", zip, dir.file("o.safetensors"), "--layout", "original").stderr.contains("pickle checkpoint"))
        // A .gguf output asked with a layout it cannot have, or a block type for safetensors: usage errors.
        #expect(try flowguard("convert", gguf, dir.file("o.gguf"), "--layout", "diffusers").status == 2)
        #expect(try flowguard("convert", gguf, dir.file("o.safetensors"), "--layout", "original", "--dtype", "q8_0").status == 2)
        #expect(try flowguard("convert", gguf, dir.file("o.gguf"), "--dtype", "q4_k").status == 2)
    }

    @Test func pipelineRootResolvesToItsTransformer() throws {
        let root = dir.file("pipeline")
        try FileManager.default.createDirectory(atPath: root + "/transformer", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: root + "/vae", withIntermediateDirectories: true)
        try writeBytes(Array("{\"_class_name\": \"StableDiffusion3Pipeline\"}".utf8), to: root + "/model_index.json")
        for name in ["config.json", "diffusion_pytorch_model.safetensors"] {
            try FileManager.default.copyItem(atPath: Repository.path("fixtures/sd35_tiny/diffusers/" + name), toPath: root + "/transformer/" + name)
        }
        let out = dir.file("original.safetensors")
        let result = try flowguard("convert", root, out, "--layout", "original")
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stderr.contains("diffusers pipeline folder: reading its transformer"))
        let direct = dir.file("direct.safetensors")
        #expect(try flowguard("convert", root + "/transformer", direct, "--layout", "original", "--quiet").status == 0)
        #expect(try readBytes(out) == readBytes(direct))
        let same = try flowguard("diff", out, Repository.path("fixtures/sd35_tiny/original.safetensors"))
        #expect(same.stdout.hasSuffix("95 identical (bytes), 0 equal within tolerance, 0 differ, 0 only in A, 0 only in B\n"), "\(same.stdout)")
        let other = dir.file("other")
        try FileManager.default.createDirectory(atPath: other, withIntermediateDirectories: true)
        try writeBytes([1], to: other + "/notes.txt")
        let refused = try flowguard("inspect", other)
        #expect(refused.status == 1)
        #expect(refused.stderr.contains("it holds: notes.txt"), "\(refused.stderr)")
    }

    @Test func loraMergeIntoGGUFEqualsMergeIntoItsDequantizedWeights() throws {
        let gguf = dir.file("base.gguf"), dequantized = dir.file("base.safetensors")
        let lora = Repository.path("fixtures/sd35_tiny/lora/pytorch_lora_weights.safetensors")
        #expect(try flowguard("convert", Repository.path("fixtures/sd35_tiny/original.safetensors"), gguf, "--dtype", "q8_0", "--quiet").status == 0)
        #expect(try flowguard("convert", gguf, dequantized, "--layout", "original", "--dtype", "fp32", "--quiet").status == 0)
        let merged = dir.file("merged.safetensors"), reference = dir.file("reference.safetensors")
        #expect(try flowguard("lora", "merge", gguf, lora, merged, "--dtype", "fp32").status == 0)
        #expect(try flowguard("lora", "merge", dequantized, lora, reference).status == 0)
        #expect(try readBytes(merged) == readBytes(reference))
        // GGUF out: the same types, re-quantized by the same rule (= converting the merged file).
        let mergedGGUF = dir.file("merged.gguf"), expected = dir.file("expected.gguf")
        let result = try flowguard("lora", "merge", gguf, lora, mergedGGUF)
        #expect(result.status == 0, "\(result.stderr)")
        #expect(try flowguard("convert", reference, expected, "--dtype", "q8_0", "--quiet").status == 0)
        #expect(try readBytes(mergedGGUF) == readBytes(expected))
        #expect(dir.listing().allSatisfy { !$0.hasPrefix(".flowguard-merge") })
    }

    /// `lora merge BASE tiny-lora OUT.gguf` with `options`; its bytes must equal merging into a
    /// float32 file and converting that to Q8_0. Returns the merge's output.
    func mergeIntoGGUFEqualsMergeThenConvert(_ base: String, _ name: String, _ options: [String]) throws -> ProcessResult {
        let lora = Repository.path("fixtures/sd35_tiny/lora/pytorch_lora_weights.safetensors")
        let out = dir.file("\(name).gguf"), merged = dir.file("\(name)-merged.safetensors"), expected = dir.file("\(name)-expected.gguf")
        let result = try runProcess(CLITests.binary, ["lora", "merge", base, lora, out] + options)
        #expect(result.status == 0, "\(result.stderr)")
        #expect(try flowguard("lora", "merge", base, lora, merged, "--dtype", "fp32", "--quiet").status == 0)
        #expect(try flowguard("convert", merged, expected, "--dtype", "q8_0", "--quiet").status == 0)
        #expect(try readBytes(out) == readBytes(expected), "\(name)")
        return result
    }

    /// An all-in-one base merged into a GGUF file: the transformer alone is written (stderr says
    /// what was left out); `--json` describes it.
    @Test func loraMergeOfAllInOneIntoGGUF() throws {
        let result = try mergeIntoGGUFEqualsMergeThenConvert(Repository.path("fixtures/sd35_tiny/allinone.safetensors"), "aio",
                                                             ["--dtype", "q8_0", "--json"])
        #expect(result.stderr.contains("left out text encoder CLIP-L"), "\(result.stderr)")
        #expect(result.stderr.contains("a GGUF output holds the merged transformer only"))
        #expect(result.stdout.contains("\"container\":\"gguf\",\"gguf_type\":\"Q8_0\""), "\(result.stdout)")
    }

    /// A scaled-fp8 base merged into GGUF without --dtype is written as Q8_0 (its weights are 8-bit).
    @Test func loraMergeOfScaledFP8IntoGGUFDefaultsToQ8_0() throws {
        let result = try mergeIntoGGUFEqualsMergeThenConvert(Repository.path("fixtures/sd35_tiny/scaled_fp8.safetensors"), "fp8", [])
        #expect(result.stdout.contains("(GGUF Q8_0, 95 tensors)"), "\(result.stdout)")
    }

    @Test func diffAcrossContainersAndLayouts() throws {
        let gguf = dir.file("sd3-f32.gguf")
        #expect(try flowguard("convert", Repository.path("fixtures/sd35_tiny/original.safetensors"), gguf, "--dtype", "f32", "--quiet").status == 0)
        // city96 names (no prefix) against the diffusers folder: every tensor byte-identical.
        let result = try flowguard("diff", "--map-layouts", gguf, Repository.path("fixtures/sd35_tiny/diffusers"))
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout.hasSuffix("95 identical (bytes), 0 equal within tolerance, 0 differ, 0 only in A, 0 only in B\n"), "\(result.stdout)")
        // A Q8_0 file differs from its source by at most half a quantization step.
        let q8 = dir.file("sd3-q8.gguf")
        #expect(try flowguard("convert", Repository.path("fixtures/sd35_tiny/original.safetensors"), q8, "--dtype", "q8_0", "--quiet").status == 0)
        let lossy = try flowguard("diff", "--map-layouts", q8, Repository.path("fixtures/sd35_tiny/original.safetensors"))
        #expect(lossy.status == 1)
        #expect(lossy.stdout.contains(" 0 only in A, 0 only in B"))
    }
}
