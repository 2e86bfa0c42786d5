import Testing
import SafeTensors
import TestSupport

/// The black-box cases of the reference implementation's own test suite (safetensors 0.8,
/// `safetensors/src/tensor.rs`), ported: same inputs, same accept/reject, our typed errors.
@Suite struct ReferenceSuiteTests {
    let dir = TemporaryDirectory()

    func open(_ bytes: [UInt8], _ name: String = "t.safetensors") throws -> SafeTensorsFile {
        let path = dir.file(name)
        try writeBytes(bytes, to: path)
        return try SafeTensorsFile(path: path)
    }

    func openError(_ bytes: [UInt8]) throws -> SafeTensorsError {
        if let error = try openingError(bytes, at: dir.file("bad.safetensors")) { return error }
        Issue.record("expected the file to be rejected")
        throw PeerUnavailable(reason: "accepted a bad file")
    }

    static let f32Data: [UInt8] = [0, 1, 2, 3, 4, 5].flatMap { (v: Float) in withUnsafeBytes(of: v.bitPattern.littleEndian, Array.init) }

    @Test func serialization() throws {
        let out = try SafeTensorsWriter.serialize(tensors: [(TensorSpec(name: "attn.0", dtype: .f32, shape: [1, 2, 3]), Self.f32Data)])
        #expect(out == [64, 0, 0, 0, 0, 0, 0, 0, 123, 34, 97, 116, 116, 110, 46, 48, 34, 58, 123, 34, 100,
                        116, 121, 112, 101, 34, 58, 34, 70, 51, 50, 34, 44, 34, 115, 104, 97, 112, 101, 34,
                        58, 91, 49, 44, 50, 44, 51, 93, 44, 34, 100, 97, 116, 97, 95, 111, 102, 102, 115,
                        101, 116, 115, 34, 58, 91, 48, 44, 50, 52, 93, 125, 125, 0, 0, 0, 0, 0, 0, 128, 63,
                        0, 0, 0, 64, 0, 0, 64, 64, 0, 0, 128, 64, 0, 0, 160, 64])
        let file = try open(out)
        #expect(try file.floats(of: "attn.0") == [0, 1, 2, 3, 4, 5])
    }

    @Test func serializationFP4() throws {
        let out = try SafeTensorsWriter.serialize(tensors: [(TensorSpec(name: "attn.0", dtype: .f4, shape: [1, 2]), [0])])
        #expect(out == [64, 0, 0, 0, 0, 0, 0, 0, 123, 34, 97, 116, 116, 110, 46, 48, 34, 58, 123, 34, 100,
                        116, 121, 112, 101, 34, 58, 34, 70, 52, 34, 44, 34, 115, 104, 97, 112, 101, 34, 58,
                        91, 49, 44, 50, 93, 44, 34, 100, 97, 116, 97, 95, 111, 102, 102, 115, 101, 116,
                        115, 34, 58, 91, 48, 44, 49, 93, 125, 125, 32, 32, 32, 32, 0])
        let file = try open(out)
        #expect(file.tensors == [TensorInfo(name: "attn.0", dtype: .f4, shape: [1, 2], dataRange: 0..<1)])
    }

    @Test func serializationFP4Misaligned() throws {
        #expect(throws: SafeTensorsError.invalidSpec(file: "<output>", tensor: "attn.0",
                                                     reason: "shape [1, 3] of F4 is not a whole number of bytes or overflows")) {
            _ = try SafeTensorsWriter.serialize(tensors: [(TensorSpec(name: "attn.0", dtype: .f4, shape: [1, 3]), [0, 1])])
        }
    }

    @Test func serializationFP4Invalid() throws {
        #expect(throws: SafeTensorsError.writeSizeMismatch(file: "<memory>", tensor: "attn.0", expected: 1, written: 2)) {
            _ = try SafeTensorsWriter.serialize(tensors: [(TensorSpec(name: "attn.0", dtype: .f4, shape: [1, 2]), [0, 1])])
        }
    }

    @Test func empty() throws {
        let out = try SafeTensorsWriter.serialize(tensors: [])
        #expect(out == [8, 0, 0, 0, 0, 0, 0, 0, 123, 125, 32, 32, 32, 32, 32, 32])
        #expect(try open(out).tensors.isEmpty)
        let withMetadata = try SafeTensorsWriter.serialize(tensors: [], metadata: ["framework": "pt"])
        #expect(withMetadata == [40, 0, 0, 0, 0, 0, 0, 0, 123, 34, 95, 95, 109, 101, 116, 97, 100, 97, 116, 97, 95,
                                 95, 34, 58, 123, 34, 102, 114, 97, 109, 101, 119, 111, 114, 107, 34, 58, 34, 112,
                                 116, 34, 125, 125, 32, 32, 32, 32, 32])
        let file = try open(withMetadata)
        #expect(file.header.metadataValue("framework") == "pt")
    }

    @Test func forcedAlignment() throws {
        let out = try SafeTensorsWriter.serialize(tensors: [(TensorSpec(name: "attn0", dtype: .f32, shape: [1, 1, 2, 3]), Self.f32Data)])
        #expect(out == [72, 0, 0, 0, 0, 0, 0, 0, 123, 34, 97, 116, 116, 110, 48, 34, 58, 123, 34, 100, 116,
                        121, 112, 101, 34, 58, 34, 70, 51, 50, 34, 44, 34, 115, 104, 97, 112, 101, 34, 58,
                        91, 49, 44, 49, 44, 50, 44, 51, 93, 44, 34, 100, 97, 116, 97, 95, 111, 102, 102,
                        115, 101, 116, 115, 34, 58, 91, 48, 44, 50, 52, 93, 125, 125, 32, 32, 32, 32, 32,
                        32, 32, 0, 0, 0, 0, 0, 0, 128, 63, 0, 0, 0, 64, 0, 0, 64, 64, 0, 0, 128, 64, 0, 0,
                        160, 64])
        let file = try open(out)
        #expect(file.header.dataStart % 8 == 0)
    }

    @Test func emptyShapesAllowed() throws {
        let file = try open(rawSafeTensors(header: #"{"test":{"dtype":"I32","shape":[],"data_offsets":[0,4]}}"#, data: [0, 0, 0, 0]))
        let info = try file.info("test")
        #expect(info.shape == [] && info.dtype == .i32 && info.elementCount == 1)
        #expect(try file.bytes(of: "test") == [0, 0, 0, 0])
    }

    @Test func deserialization() throws {
        let file = try open(rawSafeTensors(header: #"{"test":{"dtype":"I32","shape":[2,2],"data_offsets":[0,16]}}"#, data: Array(repeating: 0, count: 16)))
        #expect(file.tensors.map(\.name) == ["test"])
        #expect(try file.info("test").shape == [2, 2])
        #expect(try file.bytes(of: "test") == Array(repeating: 0, count: 16))
    }

    @Test func lifetimes() throws {
        // A view outlives the header parse but not the file object; copying out keeps the data.
        let bytes: [UInt8] = try {
            let file = try open(rawSafeTensors(header: #"{"test":{"dtype":"I32","shape":[2,2],"data_offsets":[0,16]}}"#, data: Array(repeating: 7, count: 16)))
            return try file.bytes(of: "test")
        }()
        #expect(bytes == Array(repeating: 7, count: 16))
    }

    @Test func jsonAttack() throws {
        // Ten tensors all claiming bytes 0..<16: overlapping ranges.
        let entries = (0..<10).map { #""weight_\#($0)":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}"# }
        let error = try openError(rawSafeTensors(header: "{" + entries.joined(separator: ",") + "}", data: Array(repeating: 0, count: 16)))
        guard case .invalidOffset = error else { Issue.record("got \(error)"); return }
        #expect(error.description.contains("weight_"))
    }

    @Test func metadataIncompleteBuffer() throws {
        let header = #"{"test":{"dtype":"I32","shape":[2,2],"data_offsets":[0,16]}}"#
        let polyglot = try openError(rawSafeTensors(header: header, data: Array(repeating: 0, count: 16) + Array("extra_bogus_data_for_polyglot_file".utf8)))
        #expect(polyglot == .incompleteBuffer(file: dir.file("bad.safetensors"), expectedSize: 16, actualSize: 50))
        let short = try openError(rawSafeTensors(header: header, data: Array(repeating: 0, count: 14)))
        #expect(short == .incompleteBuffer(file: dir.file("bad.safetensors"), expectedSize: 16, actualSize: 14))
    }

    @Test func headerTooLarge() throws {
        var bytes = rawSafeTensors(header: #"{"test":{"dtype":"I32","shape":[2,2],"data_offsets":[0,16]}}"#, data: Array(repeating: 0, count: 16))
        bytes[5] = 0xFF; bytes[6] = 0xFF; bytes[7] = 0xFF
        guard case .headerTooLarge = try openError(bytes) else { Issue.record("wrong error"); return }
    }

    @Test func headerTooSmall() throws {
        #expect(try openError([]) == .headerTooSmall(file: dir.file("bad.safetensors"), size: 0))
        #expect(try openError([1, 2, 3]) == .headerTooSmall(file: dir.file("bad.safetensors"), size: 3))
    }

    @Test func invalidHeaderLength() throws {
        #expect(try openError([60, 0, 0, 0, 0, 0, 0, 0]) == .invalidHeaderLength(file: dir.file("bad.safetensors"), declared: 60, fileSize: 8))
    }

    @Test func invalidHeaderNonUTF8() throws {
        #expect(try openError([1, 0, 0, 0, 0, 0, 0, 0, 0xFF]) == .headerNotUTF8(file: dir.file("bad.safetensors"), offset: 8))
    }

    @Test func invalidHeaderNotJSON() throws {
        guard case .headerNotJSON = try openError([1, 0, 0, 0, 0, 0, 0, 0, UInt8(ascii: "{")]) else { Issue.record("wrong error"); return }
    }

    @Test func whitespacePaddedHeader() throws {
        #expect(try open(rawSafeTensors(header: "{}\r \t\n")).tensors.isEmpty)
        #expect(try open(rawSafeTensors(header: "\t\n{}\r ")).tensors.isEmpty)
    }

    @Test func zeroSizedTensor() throws {
        let file = try open(rawSafeTensors(header: #"{"test":{"dtype":"I32","shape":[2,0],"data_offsets":[0, 0]}}"#))
        #expect(try file.info("test").shape == [2, 0])
        #expect(try file.bytes(of: "test") == [])
    }

    @Test func invalidInfo() throws {
        let error = try openError(rawSafeTensors(header: #"{"test":{"dtype":"I32","shape":[2,2],"data_offsets":[0, 4]}}"#, data: [0, 0, 0, 0]))
        #expect(error == .tensorInvalidInfo(file: dir.file("bad.safetensors"), tensor: "test", expectedBytes: 16, actualBytes: 4, offset: 9))
    }

    @Test func validationOverflow() throws {
        let data = [UInt8](repeating: 0, count: 16)
        let a = try openError(rawSafeTensors(header: #"{"test":{"dtype":"I32","shape":[2,18446744073709551614],"data_offsets":[0,16]}}"#, data: data))
        #expect(a == .validationOverflow(file: dir.file("bad.safetensors"), tensor: "test", offset: 9))
        let b = try openError(rawSafeTensors(header: #"{"test":{"dtype":"I32","shape":[2,9223372036854775807],"data_offsets":[0,16]}}"#, data: data))
        #expect(b == .validationOverflow(file: dir.file("bad.safetensors"), tensor: "test", offset: 9))
    }

    @Test func invalidHeaderSizeSerialization() throws {
        let big = String(repeating: "a", count: 100_000_000)
        #expect(throws: SafeTensorsError.self) {
            _ = try SafeTensorsWriter.serialize(tensors: [], metadata: ["very_large_metadata": big])
        }
    }

    @Test func serializeToSamePathWithActiveMapping() throws {
        // Rewriting a file that is still mapped must not disturb the mapping (we rename a new
        // file into place), and the new contents are what a fresh open sees.
        let path = dir.file("same.safetensors")
        try SafeTensorsWriter.write(to: path, tensors: [(TensorSpec(name: "w", dtype: .u8, shape: [4]), [1, 2, 3, 4])])
        let old = try SafeTensorsFile(path: path)
        try SafeTensorsWriter.write(to: path, tensors: [(TensorSpec(name: "w", dtype: .u8, shape: [4]), [9, 9, 9, 9])])
        #expect(try old.bytes(of: "w") == [1, 2, 3, 4])
        #expect(try SafeTensorsFile(path: path).bytes(of: "w") == [9, 9, 9, 9])
        #expect(dir.listing() == ["same.safetensors"])
    }

    @Test func roundtripRandomFiles() throws {
        // The reference's property test (serialize → deserialize gives back the same tensors),
        // over many random tensor sets of every dtype.
        var rng = SeededGenerator(seed: 42)
        for trial in 0..<200 {
            var tensors: [(spec: TensorSpec, bytes: [UInt8])] = []
            for i in 0..<Int.random(in: 0...6, using: &rng) {
                let dtype = DType.allCases.randomElement(using: &rng)!
                var shape = (0..<Int.random(in: 0...3, using: &rng)).map { _ in Int.random(in: 0...5, using: &rng) }
                if dtype.bits < 8 { shape.append(4) }   // keep sub-byte tensors whole bytes
                let spec = TensorSpec(name: "t\(trial).\(i)", dtype: dtype, shape: shape)
                tensors.append((spec, (0..<spec.byteCount!).map { _ in UInt8.random(in: 0...255, using: &rng) }))
            }
            let metadata: [String: String]? = trial % 3 == 0 ? nil : ["k\(trial)": "v\u{1}\"\\é\n"]
            let bytes = try SafeTensorsWriter.serialize(tensors: tensors, metadata: metadata)
            let file = try open(bytes, "rt.safetensors")
            #expect(file.tensors.count == tensors.count)
            for (spec, data) in tensors {
                let info = try file.info(spec.name)
                #expect(info.dtype == spec.dtype && info.shape == spec.shape)
                #expect(try file.bytes(of: spec.name) == data)
            }
            #expect(file.header.metadata.map { Dictionary(uniqueKeysWithValues: $0.map { ($0.key, $0.value) }) } == metadata)
        }
    }
}
