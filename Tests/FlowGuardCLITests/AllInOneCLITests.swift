import Foundation
import Testing
import SafeTensors
import TestSupport

/// All-in-one checkpoints (transformer + text encoders + VAE in one file): inspect lists the
/// components, convert/run/diff read the transformer and say what they left out, lora merge
/// keeps every other component byte for byte. Oracle: diffusers' `from_single_file` on the
/// fixture equals `fixtures/sd35_tiny/diffusers` (tools/fixtures/make_allinone_fixture.py).
@Suite struct AllInOneCLITests {
    let dir = TemporaryDirectory()
    let allInOne = Repository.path("fixtures/sd35_tiny/allinone.safetensors")

    func flowguard(_ arguments: String...) throws -> ProcessResult {
        try runProcess(CLITests.binary, arguments)
    }

    func flowguard(_ arguments: [String]) throws -> ProcessResult {
        try runProcess(CLITests.binary, arguments)
    }

    @Test func inspectListsComponentsAndTheTransformersArchitecture() throws {
        let result = try flowguard("inspect", allInOne)
        #expect(result.status == 0)
        #expect(result.stdout.contains("all-in-one checkpoint, 5 components:"))
        for line in ["transformer                      model.diffusion_model.*      95 tensors         141,056 parameters  (F32 141,056)",
                     "text encoder CLIP-L              text_encoders.clip_l.*        5 tensors             264 parameters  (F16 264)",
                     "text encoder T5-XXL              text_encoders.t5xxl.*         2 tensors             192 parameters  (F16 192)",
                     "VAE                              first_stage_model.*           3 tensors           3,464 parameters  (F32 3,464)"] {
            #expect(result.stdout.contains(line), "\(line)")
        }
        #expect(result.stdout.contains("transformer architecture: SD3-style (3 blocks"))
    }

    @Test func convertToDiffusersEqualsDiffusersOwnConversion() throws {
        let out = dir.file("transformer")
        let result = try flowguard("convert", allInOne, out, "--layout", "diffusers")
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stderr.contains("left out text encoder CLIP-L (text_encoders.clip_l.*, 5 tensors), text encoder CLIP-G"))
        #expect(result.stderr.contains("VAE (first_stage_model.*, 3 tensors)"))
        let ours = try SafeTensorsFile(path: out + "/diffusion_pytorch_model.safetensors")
        let theirs = try SafeTensorsFile(path: Repository.path("fixtures/sd35_tiny/diffusers/diffusion_pytorch_model.safetensors"))
        #expect(Set(ours.tensors.map(\.name)) == Set(theirs.tensors.map(\.name)))
        for info in theirs.tensors {
            let mine = try ours.info(info.name)
            #expect(mine.dtype == info.dtype && mine.shape == info.shape)
            #expect(ours.withBytes(of: mine) { Array($0) } == theirs.withBytes(of: info) { Array($0) }, "\(info.name)")
        }
    }

    @Test func runReadsTheTransformer() throws {
        let a = dir.file("a.safetensors"), b = dir.file("b.safetensors")
        let inputs = Repository.path("fixtures/sd35_tiny/io.safetensors")
        let first = try flowguard("run", "--model", allInOne, "--inputs", inputs, "--output", a)
        #expect(first.status == 0, "\(first.stderr)")
        #expect(first.stderr.contains("all-in-one checkpoint: reading its transformer"))
        #expect(try flowguard("run", "--model", Repository.path("fixtures/sd35_tiny/original.safetensors"), "--inputs", inputs, "--output", b, "--quiet").status == 0)
        let x = try SafeTensorsFile(path: a), y = try SafeTensorsFile(path: b)
        #expect(try x.floats(of: "output") == y.floats(of: "output"))
    }

    /// With or without `--dtype`: the transformer is merged (and converted), every other
    /// component is copied byte for byte.
    @Test(arguments: [[], ["--dtype", "bf16"]])
    func loraMergeKeepsEveryOtherComponentByteIdentical(dtype: [String]) throws {
        let lora = Repository.path("fixtures/sd35_tiny/lora/pytorch_lora_weights.safetensors")
        let merged = dir.file("merged\(dtype.count).safetensors"), reference = dir.file("reference\(dtype.count).safetensors")
        let result = try flowguard(["lora", "merge", allInOne, lora, merged] + dtype)
        #expect(result.status == 0, "\(result.stderr)")
        #expect(try flowguard(["lora", "merge", Repository.path("fixtures/sd35_tiny/original.safetensors"), lora, reference] + dtype).status == 0)
        let base = try SafeTensorsFile(path: allInOne), out = try SafeTensorsFile(path: merged), ref = try SafeTensorsFile(path: reference)
        #expect(out.tensors.count == base.tensors.count)
        for info in base.tensors {
            let got = try out.info(info.name)
            let bytes = out.withBytes(of: got) { Array($0) }
            if info.name.hasPrefix("model.diffusion_model.") {
                let want = try ref.info(info.name)
                #expect(got.dtype == want.dtype && (dtype.isEmpty || got.dtype == .bf16 || !info.dtype.isFloatingPoint))
                #expect(bytes == ref.withBytes(of: want) { Array($0) }, "\(info.name)")
            } else {
                #expect(got.dtype == info.dtype && got.shape == info.shape)
                #expect(bytes == base.withBytes(of: info) { Array($0) }, "\(info.name)")
            }
        }
    }
}
