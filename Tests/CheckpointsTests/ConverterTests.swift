import Foundation
import Testing
import Checkpoints
import SafeTensors
import TestSupport

/// The streaming converter on the committed fixtures: exact agreement with diffusers' own files,
/// bit-identical round trips, dtype conversion, shards, and failures that leave nothing behind.
@Suite struct ConverterTests {
    let dir = TemporaryDirectory()

    static let sd3Original = Repository.path("fixtures/sd35_tiny/original.safetensors")
    static let sd3Diffusers = Repository.path("fixtures/sd35_tiny/diffusers")
    static let fluxOriginal = Repository.path("fixtures/flux_tiny/original.safetensors")
    static let fluxComfy = Repository.path("fixtures/flux_tiny/original_comfy.safetensors")
    static let fluxDiffusers = Repository.path("fixtures/flux_tiny/diffusers")

    /// Converts `input` to `layout` at `output`.
    @discardableResult
    func convert(_ input: String, _ output: String, _ layout: KeyLayout, dtype: DType? = nil,
                 prefix: KeyPrefix? = nil, shardSize: Int? = nil) throws -> ConversionResult {
        let converter = try Converter(source: try TensorCollection(path: input), to: layout, prefix: prefix, dtype: dtype)
        return try converter.write(to: output, shardSize: shardSize)
    }

    /// Expects the same tensor names, dtypes, shapes and bytes in both checkpoints.
    func expectSameTensors(_ a: String, _ b: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let x = try TensorCollection(path: a), y = try TensorCollection(path: b)
        #expect(Set(x.infos.map(\.name)) == Set(y.infos.map(\.name)), sourceLocation: sourceLocation)
        var mismatched: [String] = []
        for e in x.entries {
            guard let f = y.entry(e.info.name) else { continue }
            let same = e.info.dtype == f.info.dtype && e.info.shape == f.info.shape
                && e.file.withBytes(of: e.info, { p in f.file.withBytes(of: f.info, { q in p.elementsEqual(q) }) })
            if !same { mismatched.append(e.info.name) }
        }
        #expect(mismatched.isEmpty, "tensors differ: \(mismatched.prefix(5))", sourceLocation: sourceLocation)
    }

    // (a) original → diffusers equals diffusers' own file.

    @Test(arguments: [(sd3Original, sd3Diffusers), (fluxOriginal, fluxDiffusers), (fluxComfy, fluxDiffusers)])
    func originalToDiffusersMatchesDiffusers(_ input: String, _ expected: String) throws {
        let out = dir.file("out.safetensors")
        let result = try convert(input, out, .diffusers)
        try expectSameTensors(out, expected)
        #expect(result.outputPaths == [out])
        #expect(result.sourceLayout == .original && result.targetLayout == .diffusers)
        #expect(result.tensorsWritten == (try TensorCollection(path: expected)).entries.count)
        #expect(result.tensorsByDType == [.f32: result.tensorsWritten])
        #expect(result.saturated == 0)
        #expect(result.fileBytes == (try readBytes(out)).count)
        // The source has no __metadata__: the output says it is PyTorch's, as diffusers writes.
        #expect(try SafeTensorsFile(path: out).header.metadataValue("format") == "pt")
    }

    @Test func diffusersFolderOutputHasConfig() throws {
        let out = dir.file("transformer")
        let result = try convert(Self.sd3Original, out, .diffusers)
        #expect(result.outputPaths == [out + "/diffusion_pytorch_model.safetensors", out + "/config.json"])
        try expectSameTensors(out, Self.sd3Diffusers)
        let config = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: out + "/config.json"))) as! [String: Any]
        #expect(config["_class_name"] as? String == "SD3Transformer2DModel")
        #expect(config["num_layers"] as? Int == 3)
        #expect(dir.listing() == ["transformer"])
        #expect(try FileManager.default.contentsOfDirectory(atPath: out).sorted() == ["config.json", "diffusion_pytorch_model.safetensors"])
    }

    @Test func trailingSlashMeansFolderEvenForOriginal() throws {
        let out = dir.file("orig/")
        let result = try convert(Self.fluxDiffusers, out, .original)
        #expect(result.outputPaths == [dir.file("orig") + "/diffusion_pytorch_model.safetensors"])
        try expectSameTensors(dir.file("orig"), Self.fluxOriginal)
    }

    // (b) round trips are bit-identical.

    @Test(arguments: [(sd3Original, sd3Diffusers), (fluxOriginal, fluxDiffusers), (fluxComfy, fluxDiffusers)])
    func roundTripsAreBitIdentical(_ original: String, _ diffusers: String) throws {
        let back = dir.file("back.safetensors"), again = dir.file("again.safetensors")
        try convert(diffusers, back, .original, prefix: KeyPrefix.of(try SafeTensorsFile(path: original).tensors[0].name))
        try expectSameTensors(back, original)
        try convert(back, again, .diffusers)
        try expectSameTensors(again, diffusers)

        let there = dir.file("there.safetensors"), home = dir.file("home.safetensors")
        try convert(original, there, .diffusers)
        try convert(there, home, .original, prefix: KeyPrefix.of(try SafeTensorsFile(path: original).tensors[0].name))
        try expectSameTensors(home, original)
    }

    @Test func originalToOriginalChangesOnlyThePrefix() throws {
        let out = dir.file("comfy.safetensors")
        try convert(Self.fluxOriginal, out, .original, prefix: .comfy)
        try expectSameTensors(out, Self.fluxComfy)
    }

    @Test func diffusersMetadataIsKept() throws {
        let out = dir.file("copy.safetensors")
        try convert(Self.sd3Diffusers, out, .diffusers)
        let meta = try SafeTensorsFile(path: out).header.metadata
        #expect(meta?.map(\.key) == ["format"] && meta?.map(\.value) == ["pt"])
    }

    // (c) dtype conversion.

    @Test func fp32ToBF16RoundsEachValueLikeFloatCodec() throws {
        let out = dir.file("bf16.safetensors")
        let result = try convert(Self.sd3Diffusers, out, .diffusers, dtype: .bf16)
        #expect(result.tensorsByDType == [.bf16: result.tensorsWritten])
        let source = try TensorCollection(path: Self.sd3Diffusers), converted = try SafeTensorsFile(path: out)
        var wrong: [String] = []
        for entry in source.entries {
            let info = try converted.info(entry.info.name)
            #expect(info.dtype == .bf16 && info.shape == entry.info.shape)
            let expected = try entry.file.floats(of: entry.info).map(FloatCodec.floatToBFloat16)
            let actual = converted.withBytes(of: info) { raw in (0..<info.elementCount).map { raw.load(fromByteOffset: 2 * $0, as: UInt16.self) } }
            if expected != actual { wrong.append(entry.info.name) }
        }
        #expect(wrong.isEmpty, "\(wrong.prefix(5))")
        #expect(result.dataBytes == source.dataBytes / 2)
    }

    @Test func f8E4M3ReportsSaturation() throws {
        // A copy of the FLUX fixture with every value scaled by 10,000: most exceed 448.
        let source = try SafeTensorsFile(path: Self.fluxOriginal)
        var tensors: [(spec: TensorSpec, bytes: [UInt8])] = []
        var large = 0
        for info in source.tensors {
            let scaled = try source.floats(of: info).map { $0 * 10_000 }
            large += scaled.filter { abs($0) > 464 }.count // beyond the rounding range of 448
            tensors.append((TensorSpec(name: info.name, dtype: .f32, shape: info.shape),
                            scaled.withUnsafeBytes { Array($0) }))
        }
        let scaledPath = dir.file("scaled.safetensors")
        try SafeTensorsWriter.write(to: scaledPath, tensors: tensors)
        let out = dir.file("fp8.safetensors")
        let result = try convert(scaledPath, out, .diffusers, dtype: .f8e4m3)
        #expect(large > 0 && result.saturated == large)
        #expect(result.tensorsByDType == [.f8e4m3: result.tensorsWritten])
        let values = try SafeTensorsFile(path: out).floats(of: "x_embedder.weight")
        #expect(values.allSatisfy { abs($0) <= 448 } && values.contains { abs($0) == 448 })
    }

    // (d) shards.

    @Test func tinyShardsReopenAndVerify() throws {
        let out = dir.file("sharded")
        var steps: [(Int, Int)] = []
        let converter = try Converter(source: try TensorCollection(path: Self.fluxOriginal), to: .diffusers)
        let result = try converter.write(to: out, shardSize: 100_000) { steps.append(($0, $1)) }
        #expect(result.outputPaths.count > 3)
        #expect(result.outputPaths.suffix(2) == [out + "/diffusion_pytorch_model.safetensors.index.json", out + "/config.json"])
        #expect(result.outputPaths.first == out + "/diffusion_pytorch_model-00001-of-0000\(result.outputPaths.count - 2).safetensors")
        let reopened = try TensorCollection(path: out)
        #expect(reopened.index != nil && reopened.files.count == result.outputPaths.count - 2)
        try expectSameTensors(out, Self.fluxDiffusers)
        // Progress rises to the total.
        #expect(steps.last.map { $0.0 == $0.1 && $0.1 == result.dataBytes } == true)
        #expect(zip(steps, steps.dropFirst()).allSatisfy { $0.0 <= $1.0 })
    }

    @Test func shardedInputConverts() throws {
        let out = dir.file("from-shards.safetensors")
        try convert(Repository.path("fixtures/sd35_tiny/diffusers_sharded"), out, .original)
        try expectSameTensors(out, Self.sd3Original)
    }

    // (e) bad inputs: clear errors, nothing left behind.

    @Test func integerOutputDTypeIsACheckpointErrorWithTheSameSentence() throws {
        let source = try TensorCollection(path: Self.sd3Original)
        let expected = CheckpointError.notFloatingPoint(file: Self.sd3Original, dtype: .i32, writing: "tensors")
        #expect(throws: expected) { try Converter(source: source, to: .diffusers, dtype: .i32) }
        let before = SafeTensorsError.conversion(file: Self.sd3Original, tensor: "*",
                                                 reason: "cannot write tensors as I32: not a floating-point dtype")
        #expect(expected.description == before.description)
    }

    @Test func unknownArchitectureLeavesNothing() throws {
        let input = dir.file("random.safetensors")
        try SafeTensorsWriter.write(to: input, tensors: [(TensorSpec(name: "encoder.random_tensor.weight", dtype: .f32, shape: [2]), [UInt8](repeating: 0, count: 8))])
        #expect(throws: CheckpointError.self) { try convert(input, dir.file("out.safetensors"), .diffusers) }
        #expect(throws: CheckpointError.self) { try convert(input, dir.file("outdir"), .diffusers) }
        #expect(dir.listing() == ["random.safetensors"])
    }

    @Test func truncatedSourceLeavesNothing() throws {
        let input = dir.file("truncated.safetensors")
        var bytes = try readBytes(Self.sd3Original)
        bytes.removeLast(100)
        try writeBytes(bytes, to: input)
        do {
            try convert(input, dir.file("out/"), .diffusers)
            Issue.record("expected an error")
        } catch let error as SafeTensorsError {
            guard case .incompleteBuffer(let file, _, _) = error else { Issue.record("unexpected \(error)"); return }
            #expect(file == input)
        }
        #expect(dir.listing() == ["truncated.safetensors"])
    }

    @Test func unusableOutputFolderIsAnIOErrorAndLeavesNothing() throws {
        let blocker = dir.file("blocker")
        try writeBytes([1, 2, 3], to: blocker)
        for out in [blocker + "/out.safetensors", blocker + "/out/", blocker + "/out"] {
            do {
                try convert(Self.sd3Original, out, .diffusers)
                Issue.record("expected an error for \(out)")
            } catch let error as CheckpointError {
                guard case .file(.io(let file, _, let message)) = error else { Issue.record("unexpected \(error)"); continue }
                #expect(file.hasPrefix(blocker + "/out"))
                #expect(message == "Not a directory")
            }
        }
        #expect(dir.listing() == ["blocker"])
        #expect(try readBytes(blocker) == [1, 2, 3])
    }

    @Test func refusesToOverwriteTheInput() throws {
        let input = dir.file("model.safetensors")
        try FileManager.default.copyItem(atPath: Self.fluxOriginal, toPath: input)
        let before = try readBytes(input)
        for out in [input, dir.path + "/./model.safetensors"] {
            do {
                try convert(input, out, .original, dtype: .bf16)
                Issue.record("expected an error")
            } catch let error as CheckpointError {
                guard case .file = error else { Issue.record("unexpected \(error)"); continue }
                #expect(error.description.contains("it is the input file"))
            }
        }
        // Writing the folder form into the folder that holds the input is refused too.
        #expect(throws: CheckpointError.self) { try convert(input, dir.path, .diffusers) }
        #expect(try readBytes(input) == before)
        #expect(dir.listing() == ["model.safetensors"])
    }

    /// An existing output folder is replaced whole (the CLI asks for --force first): nothing of the
    /// old folder stays beside the new files, and no staging or old folder is left beside it.
    @Test func existingFolderIsReplacedWhole() throws {
        let out = dir.file("existing")
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: false)
        try writeBytes([7], to: out + "/README")
        try writeBytes([7], to: out + "/diffusion_pytorch_model-00001-of-00002.safetensors")
        try convert(Self.fluxComfy, out, .diffusers)
        #expect(try FileManager.default.contentsOfDirectory(atPath: out).sorted() == ["config.json", "diffusion_pytorch_model.safetensors"])
        #expect(dir.listing() == ["existing"])
        try expectSameTensors(out + "/diffusion_pytorch_model.safetensors", Self.fluxDiffusers)
    }

    @Test func outputFormChoice() {
        #expect(!Converter.writesFolder("a.safetensors", layout: .diffusers, shardSize: nil))
        #expect(Converter.writesFolder("a.safetensors", layout: .diffusers, shardSize: 10))
        #expect(Converter.writesFolder("transformer", layout: .diffusers, shardSize: nil))
        #expect(!Converter.writesFolder("model.bin", layout: .original, shardSize: nil))
        #expect(Converter.writesFolder("out/", layout: .original, shardSize: nil))
    }

    @Test func byteSizes() {
        #expect(Converter.parseByteSize("5GB") == 5_000_000_000)
        #expect(Converter.parseByteSize("500MB") == 500_000_000)
        #expect(Converter.parseByteSize("1.5G") == 1_500_000_000)
        #expect(Converter.parseByteSize("2GiB") == 2 << 30)
        #expect(Converter.parseByteSize("10kb") == 10_000)
        #expect(Converter.parseByteSize("1048576") == 1_048_576)
        #expect(Converter.parseByteSize("0") == nil)
        #expect(Converter.parseByteSize("GB") == nil)
        #expect(Converter.parseByteSize("5XB") == nil)
        #expect(Converter.parseByteSize("1.2.3G") == nil)
        #expect(Converter.parseByteSize("-5GB") == nil)
    }
}
