import GGUF
import SafeTensors
import TestSupport

/// The GGUF fixtures gguf-py wrote (fixtures/gguf, tools/fixtures/make_gguf_fixtures.py).
enum Fixture: String, CaseIterable, CustomStringConvertible, Sendable {
    case types
    case flux = "flux_city96_q8_0"
    case sd3 = "sd3_city96_q4_0"
    case sdcpp = "sdcpp_flux_q5_0"

    var description: String { rawValue }
    var ggufPath: String { Repository.path("fixtures/gguf/\(rawValue).gguf") }
    var expectedPath: String { Repository.path("fixtures/gguf/\(rawValue).expected.safetensors") }
    var sourcePath: String { Repository.path("fixtures/gguf/\(rawValue).source.safetensors") }

    /// The block type the file was asked for (city96 rule), for the model fixtures.
    var requested: GGUFType? {
        switch self {
        case .types: return nil
        case .flux: return .q8_0
        case .sd3: return .q4_0
        case .sdcpp: return .q5_0
        }
    }

    func bytes() throws -> [UInt8] { try readBytes(ggufPath) }
}

/// Parses `bytes` as a GGUF file.
func parse(_ bytes: [UInt8], file: String = "test.gguf") throws(GGUFError) -> GGUFHeader {
    let result: Result<GGUFHeader, GGUFError> = bytes.withUnsafeBytes { raw in
        do throws(GGUFError) { return .success(try GGUFHeader.parse(raw, file: file)) } catch { return .failure(error) }
    }
    return try result.get()
}

/// The index of the first byte where two arrays differ (or the shorter length), -1 when equal.
func firstDifference(_ a: [UInt8], _ b: [UInt8]) -> Int {
    for i in 0..<min(a.count, b.count) where a[i] != b[i] { return i }
    return a.count == b.count ? -1 : min(a.count, b.count)
}

/// The error parsing `bytes` throws, or nil when it parses.
func parseError(_ bytes: [UInt8], file: String = "bad.gguf") -> GGUFError? {
    do throws(GGUFError) { _ = try parse(bytes, file: file); return nil } catch { return error }
}

/// Decodes every value of `tensor` in the file `bytes`.
func decodeAll(_ header: GGUFHeader, _ tensor: GGUFTensorInfo, _ bytes: [UInt8]) throws -> [Float] {
    var out = [Float](repeating: .nan, count: tensor.elementCount)
    try bytes.withUnsafeBytes { raw in
        try out.withUnsafeMutableBufferPointer { buffer in
            try header.decodeRows(tensor, rows: 0..<tensor.rowCount, from: raw, into: buffer)
        }
    }
    return out
}

/// Encodes `values` as `type`.
func quantized(_ values: [Float], as type: GGUFType) -> [UInt8] {
    var out = [UInt8](repeating: 0xAA, count: type.byteCount(elements: values.count)!)
    values.withUnsafeBufferPointer { input in
        out.withUnsafeMutableBytes { _ = type.quantize(input, into: $0) }
    }
    return out
}

/// A GGUF file built field by field, valid or not: for the hostile corpus.
struct RawGGUF {
    var bytes: [UInt8] = []

    mutating func int<T: FixedWidthInteger>(_ value: T) {
        withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) }
    }

    mutating func string(_ s: String) { rawString(Array(s.utf8)) }

    mutating func rawString(_ utf8: [UInt8]) {
        int(UInt64(utf8.count))
        bytes.append(contentsOf: utf8)
    }

    mutating func header(version: UInt32 = 3, tensors: UInt64, entries: UInt64) {
        bytes.append(contentsOf: Array("GGUF".utf8))
        int(version)
        int(tensors)
        int(entries)
    }

    /// A metadata entry with a u32 value.
    mutating func u32Entry(_ key: String, _ value: UInt32) {
        string(key)
        int(UInt32(4))
        int(value)
    }

    mutating func tensorInfo(_ name: String, dims: [UInt64], type: UInt32 = 0, offset: UInt64 = 0) {
        string(name)
        int(UInt32(dims.count))
        for d in dims { int(d) }
        int(type)
        int(offset)
    }

    mutating func pad(to alignment: Int = 32) {
        while bytes.count % alignment != 0 { bytes.append(0) }
    }

    mutating func zeros(_ count: Int) { bytes.append(contentsOf: repeatElement(0, count: count)) }
}
