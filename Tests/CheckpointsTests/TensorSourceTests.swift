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
