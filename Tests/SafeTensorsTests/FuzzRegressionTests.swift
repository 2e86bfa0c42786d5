import Testing
import SafeTensors
import TestSupport

/// Inputs the libFuzzer targets (tools/fuzz) made crash, kept in tools/fuzz/regressions/: each
/// must now be refused with an error instead.
@Suite struct FuzzRegressionTests {
    func input(_ name: String) throws -> [UInt8] { try readBytes(Repository.path("tools/fuzz/regressions/" + name)) }

    /// A zero-sized tensor whose other dimensions multiply past Int.max ([2^62, 2, 0]) passed
    /// every check; `elementCount` and `Matrix` then overflowed Int (a trap in LoRA reading).
    @Test func zeroSizedTensorWithHugeDimensionsIsRefused() throws {
        let bytes = try input("zero-size-huge-shape.safetensors")
        let error = bytes.withUnsafeBytes { raw -> SafeTensorsError? in
            do throws(SafeTensorsError) { _ = try SafeTensorsHeader.parse(raw, fileSize: raw.count, file: "x.safetensors"); return nil } catch { return error }
        }
        #expect(error == .invalidHeader(file: "x.safetensors", tensor: "w", reason: "the non-zero dimensions multiply past 2^63-1", offset: 9))
        #expect(error?.description.contains("(byte 9)") == true, "\(String(describing: error))")
    }

    /// Zero-sized tensors with large dimensions whose product fits are still read, as the
    /// reference reads them.
    @Test func zeroSizedTensorWithLargeDimensionsThatFitIsRead() throws {
        let bytes = rawSafeTensors(header: #"{"w":{"dtype":"F32","shape":[4611686018427387903,2,0],"data_offsets":[0,0]}}"#)
        let header = try bytes.withUnsafeBytes { raw in
            try Result { () throws(SafeTensorsError) in try SafeTensorsHeader.parse(raw, fileSize: raw.count, file: "x") }.get()
        }
        #expect(header.tensors.first?.shape == [4611686018427387903, 2, 0])
        #expect(header.tensors.first?.elementCount == 0)
    }
}
