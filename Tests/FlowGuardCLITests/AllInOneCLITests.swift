import Foundation
import Testing
import SafeTensors
import TestSupport

/// One tiny all-in-one checkpoint (tools/fixtures/make_allinone_fixture.py) with its plain
/// transformer twin and oracle: diffusers' `from_single_file` on the all-in-one file equals
/// `fixtures/<model>/diffusers` (the script asserts it).
struct AllInOneFixture: Sendable, CustomTestStringConvertible {
    /// `sd35_tiny` or `flux_tiny`.
    var model: String
    /// The original-layout prefix of `fixtures/<model>/original.safetensors` (SAI's for SD3, none for BFL).
    var originalPrefix: String
    /// What convert/run say they left out.
    var leftOut: String
    /// The lines `inspect` prints for the components, and the start of its architecture line.
    var inspectLines: [String]
    /// Options `run` needs for the tiny model (FLUX's RoPE axes are not in the weights).
    var runOptions: [String]

    var testDescription: String { model }
    var allInOne: String { Repository.path("fixtures/\(model)/allinone.safetensors") }
    var original: String { Repository.path("fixtures/\(model)/original.safetensors") }
    var diffusers: String { Repository.path("fixtures/\(model)/diffusers/diffusion_pytorch_model.safetensors") }
    var lora: String { Repository.path("fixtures/\(model)/lora/pytorch_lora_weights.safetensors") }
    var inputs: String { Repository.path("fixtures/\(model)/io.safetensors") }

    /// The name in `original.safetensors` (and in a merge into it) of an all-in-one transformer key.
    func originalName(_ name: String) -> String { originalPrefix + name.dropFirst(AllInOneCLITests.transformerPrefix.count) }

    static let sd3 = AllInOneFixture(
        model: "sd35_tiny", originalPrefix: "model.diffusion_model.",
        leftOut: "left out text encoder CLIP-L (text_encoders.clip_l.*, 5 tensors), text encoder CLIP-G (text_encoders.clip_g.*, 5 tensors), "
            + "text encoder T5-XXL (text_encoders.t5xxl.*, 2 tensors), VAE (first_stage_model.*, 3 tensors)",
        inspectLines: ["all-in-one checkpoint, 5 components:",
                       "transformer                      model.diffusion_model.*      95 tensors         141,056 parameters  (F32 141,056)",
                       "text encoder CLIP-L              text_encoders.clip_l.*        5 tensors             264 parameters  (F16 264)",
                       "text encoder CLIP-G              text_encoders.clip_g.*        5 tensors             444 parameters  (F16 444)",
                       "text encoder T5-XXL              text_encoders.t5xxl.*         2 tensors             192 parameters  (F16 192)",
                       "VAE                              first_stage_model.*           3 tensors           3,464 parameters  (F32 3,464)",
                       "transformer architecture: SD3-style (3 blocks"],
        runOptions: [])

    static let flux = AllInOneFixture(
        model: "flux_tiny", originalPrefix: "",
        leftOut: "left out text encoder CLIP-L (text_encoders.clip_l.*, 6 tensors), text encoder T5-XXL (text_encoders.t5xxl.*, 5 tensors), "
            + "VAE (vae.*, 6 tensors)",
        inspectLines: ["all-in-one checkpoint, 4 components:",
                       "transformer                      model.diffusion_model.*      92 tensors         147,280 parameters  (F32 147,280)",
                       "text encoder CLIP-L              text_encoders.clip_l.*        6 tensors             328 parameters  (F16 328)",
                       "text encoder T5-XXL              text_encoders.t5xxl.*         5 tensors             360 parameters  (BF16 360)",
                       "VAE                              vae.*                         6 tensors           3,960 parameters  (F32 3,960)",
                       "transformer architecture: FLUX-style (2 double + 3 single blocks"],
        runOptions: ["--config", Repository.path("fixtures/flux_tiny/diffusers/config.json")])

    static let all = [sd3, flux]
}

/// All-in-one checkpoints (transformer + text encoders + VAE in one file) of both families: inspect
/// lists the components, convert/run/diff read the transformer and say what they left out, lora
/// merge keeps every other component byte for byte.
@Suite struct AllInOneCLITests {
    static let transformerPrefix = "model.diffusion_model."
    let dir = TemporaryDirectory()

    func flowguard(_ arguments: String...) throws -> ProcessResult {
        try runProcess(CLITests.binary, arguments)
    }

    func flowguard(_ arguments: [String]) throws -> ProcessResult {
        try runProcess(CLITests.binary, arguments)
    }

    /// Every tensor of `theirs` is in `ours` (under `name`'s mapping) with the same dtype, shape and bytes, and nothing else is.
    func expectSameTensors(_ ours: SafeTensorsFile, _ theirs: SafeTensorsFile, name: (String) -> String = { $0 }) throws {
        #expect(Set(ours.tensors.map(\.name)) == Set(theirs.tensors.map { name($0.name) }))
        for info in theirs.tensors {
            let mine = try ours.info(name(info.name))
            #expect(mine.dtype == info.dtype && mine.shape == info.shape, "\(info.name)")
            #expect(ours.withBytes(of: mine) { Array($0) } == theirs.withBytes(of: info) { Array($0) }, "\(info.name)")
        }
    }

    @Test(arguments: AllInOneFixture.all)
    func inspectListsComponentsAndTheTransformersArchitecture(fixture: AllInOneFixture) throws {
        let result = try flowguard("inspect", fixture.allInOne)
        #expect(result.status == 0)
        for line in fixture.inspectLines {
            #expect(result.stdout.contains(line), "\(line)")
        }
        #expect(result.stdout.contains("original layout, key prefix 'model.diffusion_model.'"))
    }

    @Test(arguments: AllInOneFixture.all)
    func convertToDiffusersEqualsDiffusersOwnConversion(fixture: AllInOneFixture) throws {
        let out = dir.file("transformer-\(fixture.model)")
        let result = try flowguard("convert", fixture.allInOne, out, "--layout", "diffusers")
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stderr.contains("is an all-in-one checkpoint: reading its transformer (model.diffusion_model.*); " + fixture.leftOut))
        try expectSameTensors(SafeTensorsFile(path: out + "/diffusion_pytorch_model.safetensors"), SafeTensorsFile(path: fixture.diffusers))
    }

    /// `--layout original` writes the transformer alone: under the source's own prefix
    /// (`model.diffusion_model.`) by default, or the one `--prefix` asks for, bytes unchanged.
    @Test(arguments: AllInOneFixture.all, [nil, "none", "sai", "comfy"])
    func convertToOriginalWritesTheTransformerUnderTheAskedPrefix(fixture: AllInOneFixture, prefix: String?) throws {
        let keys = ["none": "", "sai": "model.diffusion_model.", "comfy": "diffusion_model."][prefix ?? "sai"]!
        let out = dir.file("original-\(fixture.model)-\(prefix ?? "default").safetensors")
        let result = try flowguard(["convert", fixture.allInOne, out, "--layout", "original"] + (prefix.map { ["--prefix", $0] } ?? []))
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stderr.contains(fixture.leftOut))
        try expectSameTensors(SafeTensorsFile(path: out), SafeTensorsFile(path: fixture.original)) {
            keys + $0.dropFirst(fixture.originalPrefix.count)
        }
    }

    @Test(arguments: AllInOneFixture.all)
    func runReadsTheTransformer(fixture: AllInOneFixture) throws {
        let a = dir.file("a-\(fixture.model).safetensors"), b = dir.file("b-\(fixture.model).safetensors")
        let first = try flowguard(["run", "--model", fixture.allInOne, "--inputs", fixture.inputs, "--output", a] + fixture.runOptions)
        #expect(first.status == 0, "\(first.stderr)")
        #expect(first.stderr.contains("all-in-one checkpoint: reading its transformer"))
        #expect(try flowguard(["run", "--model", fixture.original, "--inputs", fixture.inputs, "--output", b, "--quiet"] + fixture.runOptions).status == 0)
        let x = try SafeTensorsFile(path: a), y = try SafeTensorsFile(path: b)
        #expect(try x.floats(of: "output") == y.floats(of: "output"))
    }

    /// Merges `lora` into the all-in-one file and into the plain original file (with `options`):
    /// the transformer tensors of the first equal the second's, every other component is the
    /// base's byte for byte, and the file holds the same tensors.
    func expectMergeKeepsOtherComponents(_ fixture: AllInOneFixture, lora: String, options: [String], tag: String) throws {
        let merged = dir.file("merged-\(tag).safetensors"), reference = dir.file("reference-\(tag).safetensors")
        let result = try flowguard(["lora", "merge", fixture.allInOne, lora, merged] + options)
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stderr.contains("is an all-in-one checkpoint: merging into its transformer; every other component is copied byte for byte"))
        #expect(try flowguard(["lora", "merge", fixture.original, lora, reference] + options).status == 0)
        let base = try SafeTensorsFile(path: fixture.allInOne), out = try SafeTensorsFile(path: merged), ref = try SafeTensorsFile(path: reference)
        #expect(Set(out.tensors.map(\.name)) == Set(base.tensors.map(\.name)))
        var changed = 0
        for info in base.tensors {
            let got = try out.info(info.name)
            let bytes = out.withBytes(of: got) { Array($0) }
            if info.name.hasPrefix(Self.transformerPrefix) {
                let want = try ref.info(fixture.originalName(info.name))
                #expect(got.dtype == want.dtype && got.shape == want.shape)
                #expect(options.isEmpty || got.dtype == .bf16 || !info.dtype.isFloatingPoint)
                #expect(bytes == ref.withBytes(of: want) { Array($0) }, "\(info.name)")
                if bytes != base.withBytes(of: info, { Array($0) }) { changed += 1 }
            } else {
                #expect(got.dtype == info.dtype && got.shape == info.shape)
                #expect(bytes == base.withBytes(of: info) { Array($0) }, "\(info.name)")
            }
        }
        #expect(changed > 0, "the merge changed no transformer tensor")
    }

    /// With or without `--dtype`: the transformer is merged (and converted), every other
    /// component is copied byte for byte.
    @Test(arguments: AllInOneFixture.all, [[], ["--dtype", "bf16"]])
    func loraMergeKeepsEveryOtherComponentByteIdentical(fixture: AllInOneFixture, dtype: [String]) throws {
        try expectMergeKeepsOtherComponents(fixture, lora: fixture.lora, options: dtype, tag: "\(fixture.model)-\(dtype.count)")
    }

    /// Every FLUX adapter dialect (BFL, kohya, XLabs, ComfyUI, LyCORIS, … names and prefixes) merges
    /// into the FLUX all-in-one exactly as into the plain file, other components untouched.
    @Test(arguments: DialectFixture.all.filter { $0.family == "flux" })
    func everyFluxDialectMergesIntoTheAllInOneTransformer(dialect: DialectFixture) throws {
        try expectMergeKeepsOtherComponents(.flux, lora: dialect.adapterPath, options: [], tag: dialect.name)
    }
}
