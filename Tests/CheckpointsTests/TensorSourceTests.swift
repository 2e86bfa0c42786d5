import Testing
import Checkpoints
import GGUF
import SafeTensors
import TestSupport

/// The tensor source: GGUF files opened through `TensorCollection.checkpoint`, rows decoded as
/// gguf-py dequantizes them, and files of other containers named for what they are.
@Suite struct TensorSourceTests {
    @Test func ggufTensorsDecodeAsGGUFPy() throws {
        let collection = try TensorCollection.checkpoint(Repository.path("fixtures/gguf/types.gguf"))
        let expected = try SafeTensorsFile(path: Repository.path("fixtures/gguf/types.expected.safetensors"))
        #expect(collection.files[0].format == "GGUF")
        #expect(collection.entries.count == expected.tensors.count)
        for entry in collection.entries {
            let want = try expected.floats(of: try expected.info(entry.info.name))
            let got = try entry.floats()
            #expect(got.count == want.count)
            for (a, b) in zip(got, want) { #expect(a == b || (a.isNaN && b.isNaN), "\(entry.info.name)") }
            // Any run of rows decodes to the same values as the whole tensor.
            if entry.info.shape.count >= 2 && entry.rowCount >= 2 {
                var part = [Float](repeating: 0, count: entry.rowElements)
                try part.withUnsafeMutableBufferPointer { buffer in try entry.decodeRows(1..<2, into: buffer) }
                #expect(zip(part, want[entry.rowElements..<(2 * entry.rowElements)]).allSatisfy { $0 == $1 || ($0.isNaN && $1.isNaN) })
            }
        }
        let q8 = try #require(collection.entry("quant.q8_0"))
        #expect(q8.storageName == "Q8_0" && !q8.isPlain && q8.bitsPerWeight == 8.5)
        #expect(collection.entry("quant.f16")?.isPlain == true)
    }

    /// A one-block SD3 checkpoint (bf16, original layout) of width `hiddenSize` written by the
    /// synthetic writer into `dir`.
    static func syntheticSD3(hiddenSize: Int, posEmbedMaxSize: Int, seed: UInt64, in dir: TemporaryDirectory) throws -> TensorCollection {
        let architecture = try Architecture(config: .sd3(SD3Config(
            hiddenSize: hiddenSize, numLayers: 1, attentionHeadDim: hiddenSize / 4, dualAttentionLayers: [], qkNorm: false,
            patchSize: 2, inChannels: 4, outChannels: 4, jointAttentionDim: 16, pooledProjectionDim: 24, posEmbedMaxSize: posEmbedMaxSize)))
        let source = dir.file("sd3-\(hiddenSize)-\(posEmbedMaxSize).safetensors")
        try SyntheticWriter.write(architecture: architecture, layout: .original, dtype: .bf16, to: source,
                                  options: SyntheticOptions(seed: seed, scale: 0.5))
        return try TensorCollection(path: source)
    }

    /// A dim-0 row larger than a block of work (SD3's pos_embed is one row of 226 M values at
    /// SD3.5-Medium size) is streamed in runs of innermost rows: here [1, 36864, 32], 1.2 M values.
    /// Its values equal the whole tensor encoded at once, in every output type, on 1 and 3 threads.
    @Test func ggufOutputOfOneHugeRowStreamsInnermostRows() throws {
        let dir = TemporaryDirectory()
        let base = try Self.syntheticSD3(hiddenSize: 32, posEmbedMaxSize: 192, seed: 5, in: dir)
        let pos = try #require(base.entries.first { $0.info.name.hasSuffix("pos_embed") })
        #expect(pos.info.shape == [1, 36864, 32] && pos.rowElements > 1 << 20)
        let want = try pos.floats()
        for type in [GGUFType.q8_0, .bf16, .f32] {
            let stored = GGUFConventions.city96Type(shape: pos.info.shape, requested: type)
            var encoded = [UInt8](repeating: 0, count: stored.byteCount(elements: want.count)!)
            var expected = [Float](repeating: 0, count: want.count)
            want.withUnsafeBufferPointer { w in encoded.withUnsafeMutableBytes { _ = stored.quantize(w, into: $0) } }
            encoded.withUnsafeBytes { e in expected.withUnsafeMutableBufferPointer { stored.dequantize(e, into: $0) } }
            var files: [[UInt8]] = []
            for threads in [1, 3] {
                let path = dir.file("huge-row-\(type.name)-\(threads).gguf")
                try Converter(source: base, to: .original, prefix: KeyPrefix.none).writeGGUF(to: path, type: type, threads: threads)
                let entry = try #require(try TensorCollection.checkpoint(path).entry("pos_embed"))
                #expect(entry.storageName == stored.name)
                #expect(try entry.floats() == expected, "\(type.name) on \(threads) threads")
                files.append(try readBytes(path))
            }
            #expect(files[0] == files[1], "\(type.name)")
        }
    }

    /// Tensors whose encoded rows are larger than the output's write buffer (4 MiB): a
    /// [4096, 1024] MLP weight is 4.25 MiB as Q8_0 and 8 MiB as F16. FLUX-size conversions once
    /// stopped on such tensors; every type now writes them in pieces of whole blocks.
    @Test func ggufOutputOfTensorsLargerThanTheWriteBuffer() throws {
        let dir = TemporaryDirectory()
        let base = try Self.syntheticSD3(hiddenSize: 1024, posEmbedMaxSize: 4, seed: 3, in: dir)
        let mlp = try #require(base.entries.first { $0.info.shape == [4096, 1024] })
        let want = try mlp.floats()
        for type in [GGUFType.q8_0, .q4_0, .f16, .bf16, .f32] {
            let path = dir.file("wide-\(type.name).gguf")
            try Converter(source: base, to: .original, prefix: KeyPrefix.none).writeGGUF(to: path, type: type)
            let written = try TensorCollection.checkpoint(path)
            let name = mlp.info.name.replacingOccurrences(of: "model.diffusion_model.", with: "")
            let entry = try #require(written.entry(name), "\(type.name): \(name)")
            #expect(entry.storageName == type.name)
            let got = try entry.floats()
            #expect(got.count == want.count)
            if type.isBlockQuantized {
                // Quantized block by block: each block's error is bounded by its own scale.
                var error = 0.0, norm = 0.0
                for (a, b) in zip(got, want) { error += Double(a - b) * Double(a - b); norm += Double(b) * Double(b) }
                #expect((error / norm).squareRoot() < (type == .q8_0 ? 0.01 : 0.1), "\(type.name)")
            } else {
                #expect(got == want, "\(type.name)")  // bf16 values are exact in every float type
            }
        }
    }

    @Test func ggufWithoutItsReaderIsNamed() throws {
        let path = Repository.path("fixtures/gguf/types.gguf")
        #expect(throws: SafeTensorsError.self) { try TensorCollection(path: path) }
        do { _ = try TensorCollection(path: path) } catch {
            #expect(error.description.contains("is a GGUF file"))
        }
    }

    @Test func cityAndSDCppNamesAreDetected() throws {
        // city96 (no prefix) and stable-diffusion.cpp (prefix kept) names of partial fixtures:
        // detection reports the family even when tensors are missing.
        let city = try TensorCollection.checkpoint(Repository.path("fixtures/gguf/flux_city96_q8_0.gguf"))
        #expect(city.infos.contains { $0.name.hasPrefix("double_blocks.") })
        let sdcpp = try TensorCollection.checkpoint(Repository.path("fixtures/gguf/sdcpp_flux_q5_0.gguf"))
        #expect(sdcpp.infos.allSatisfy { $0.name.hasPrefix("model.diffusion_model.") })
    }
}
