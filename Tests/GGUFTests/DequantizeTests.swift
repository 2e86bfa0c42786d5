import Testing
import GGUF
import SafeTensors
import TestSupport

/// Every tensor of every fixture decodes to exactly the Float values gguf-py's dequantizer gives
/// (bitwise, NaNs included), with the row-major shape gguf-py's reader gives.
@Suite struct DequantizeTests {
    @Test(arguments: Fixture.allCases)
    func decodesLikeGGUFPy(_ fixture: Fixture) throws {
        let bytes = try fixture.bytes()
        let header = try parse(bytes, file: fixture.rawValue + ".gguf")
        let expected = try SafeTensorsFile(path: fixture.expectedPath)
        #expect(Set(expected.tensors.map(\.name)) == Set(header.tensors.map(\.name)))
        for tensor in header.tensors {
            let info = try expected.info(tensor.name)
            #expect(info.shape == tensor.shape, "\(tensor.name): shape")
            let want = try expected.floats(of: info)
            let got = try decodeAll(header, tensor, bytes)
            let mismatches = zip(want, got).enumerated().filter { $0.element.0.bitPattern != $0.element.1.bitPattern }
            #expect(mismatches.isEmpty, "\(tensor.name) (\(tensor.type.name)): \(mismatches.count) values differ, first at \(mismatches.first.map { "\($0.offset): want \($0.element.0) got \($0.element.1)" } ?? "")")
        }
    }

    /// The types fixture holds every type FlowGuard decodes, so the test above covers them all.
    @Test func typesFixtureCoversEveryDecodableType() throws {
        let header = try parse(try Fixture.types.bytes())
        let present = Set(header.tensors.map(\.type))
        let decodable = Set(GGUFType.allCases.filter(\.isDecodable))
        #expect(decodable.subtracting(present).isEmpty, "not covered: \(decodable.subtracting(present).map(\.name))")
        #expect(decodable.count == 18)
    }

    /// Decoding a row range gives the same values as the matching slice of the whole tensor.
    @Test func rowRangesDecodeTheirSlice() throws {
        let bytes = try Fixture.types.bytes()
        let header = try parse(bytes)
        for name in ["kquant.q6_k", "quant.q5_1", "plain.f64", "shape.3d"] {
            let tensor = try #require(header.tensor(name))
            let all = try decodeAll(header, tensor, bytes)
            let rows = 1..<tensor.rowCount
            var part = [Float](repeating: 0, count: rows.count * tensor.rowLength)
            try bytes.withUnsafeBytes { raw in
                try part.withUnsafeMutableBufferPointer { try header.decodeRows(tensor, rows: rows, from: raw, into: $0) }
            }
            #expect(part.map(\.bitPattern) == all[tensor.rowLength...].map(\.bitPattern), "\(name)")
        }
    }

    /// A type FlowGuard does not decode is refused with its name, not misread.
    @Test func undecodableTypeIsRefused() throws {
        var raw = RawGGUF()
        raw.header(tensors: 1, entries: 0)
        raw.tensorInfo("w", dims: [256, 1], type: GGUFType.iq4_XS.rawValue)
        raw.pad()
        raw.zeros(GGUFType.iq4_XS.typeSize)
        let header = try parse(raw.bytes, file: "iq.gguf")
        let tensor = try #require(header.tensor("w"))
        #expect(tensor.type == .iq4_XS)
        #expect(throws: GGUFError.unsupportedType(file: "iq.gguf", tensor: "w", type: .iq4_XS, operation: "decoded")) {
            _ = try decodeAll(header, tensor, raw.bytes)
        }
        #expect(GGUFError.unsupportedType(file: "iq.gguf", tensor: "w", type: .iq4_XS, operation: "decoded").description
                == "iq.gguf: tensor 'w': type IQ4_XS cannot be decoded by FlowGuard")
    }

    /// Block geometry and bits per weight of the types people share.
    @Test func geometry() {
        let table: [(GGUFType, Int, Int, Double)] = [
            (.f32, 1, 4, 32), (.f16, 1, 2, 16), (.bf16, 1, 2, 16), (.q8_0, 32, 34, 8.5), (.q4_0, 32, 18, 4.5),
            (.q4_1, 32, 20, 5), (.q5_0, 32, 22, 5.5), (.q5_1, 32, 24, 6), (.q2_K, 256, 84, 2.625),
            (.q3_K, 256, 110, 3.4375), (.q4_K, 256, 144, 4.5), (.q5_K, 256, 176, 5.5), (.q6_K, 256, 210, 6.5625),
        ]
        for (type, block, size, bits) in table {
            #expect(type.blockSize == block && type.typeSize == size && type.bitsPerWeight == bits, "\(type)")
        }
        #expect(GGUFType(name: "q8_0") == .q8_0)
        #expect(GGUFType(name: "Q4_K") == .q4_K)
        #expect(GGUFType(name: "q7_0") == nil)
        #expect(GGUFType.q8_0.byteCount(elements: 64) == 68)
        #expect(GGUFType.q8_0.byteCount(elements: 48) == nil)
        #expect(GGUFType.f32.byteCount(elements: Int.max / 2) == nil)
    }
}
