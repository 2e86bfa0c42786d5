import FuzzSupport
import GGUF

/// Fuzzes `GGUFHeader.parse` on whole files (magic, version, counts, metadata of every value
/// type, tensor infos, alignment, data offsets).
///
/// Besides "no crash, no sanitizer report", every accepted header must keep its promises (tensors
/// inside the file, aligned, not overlapping, sizes that match shape and type, shapes whose
/// products fit), every decodable tensor's first rows must decode (the dequantizers run on
/// arbitrary bytes), and the header must survive a round trip through the writer: planning the
/// same metadata and tensors with `GGUFLayout` gives a header that parses back to the same
/// tensors and plans to the same bytes again.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzGGUFHeader(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let bytes = fuzzInput(data, size)
    let header: GGUFHeader
    do { header = try GGUFHeader.parse(bytes, file: "fuzz.gguf") } catch {
        _ = error.description
        return 0
    }
    check(header, fileSize: size)
    decodeSome(header, bytes)
    roundTrip(header)
    return 0
}

/// What a valid header promises its users.
private func check(_ header: GGUFHeader, fileSize: Int) {
    guard header.fileSize == fileSize else { invariantViolated("fileSize") }
    let alignment = header.alignment
    guard alignment > 0, alignment & (alignment - 1) == 0, header.dataStart % alignment == 0 else { invariantViolated("alignment") }
    if !header.tensors.isEmpty { guard header.dataStart <= fileSize else { invariantViolated("data start past the end") } }
    for t in header.tensors {
        guard header.tensor(t.name) == t else { invariantViolated("\(t.name): lookup by name disagrees") }
        guard t.shape.count <= 4, t.shape.allSatisfy({ $0 >= 0 }) else { invariantViolated("\(t.name): shape \(t.shape)") }
        var product = 1
        for d in t.shape {
            let (p, overflow) = product.multipliedReportingOverflow(by: d)
            guard !overflow else { invariantViolated("\(t.name): shape product \(t.shape) overflows Int") }
            product = p
        }
        guard t.elementCount == product, t.rowLength % t.type.blockSize == 0 else { invariantViolated("\(t.name): rows") }
        guard t.type.byteCount(elements: product) == t.byteCount else { invariantViolated("\(t.name): byte count") }
        guard t.byteRange.lowerBound >= header.dataStart, t.byteRange.upperBound <= fileSize else { invariantViolated("\(t.name): outside the file") }
        guard (t.byteRange.lowerBound - header.dataStart) % alignment == 0 else { invariantViolated("\(t.name): misaligned") }
        guard t.rowCount * t.rowByteCount == t.byteCount else { invariantViolated("\(t.name): rows × row bytes") }
    }
    let ranges = header.tensors.map(\.byteRange).filter { !$0.isEmpty }.sorted { $0.lowerBound < $1.lowerBound }
    for (a, b) in zip(ranges, ranges.dropFirst()) where b.lowerBound < a.upperBound { invariantViolated("overlapping tensors") }
}

/// Decodes the first rows (at most 4,096 values) of every decodable tensor.
private func decodeSome(_ header: GGUFHeader, _ bytes: UnsafeRawBufferPointer) {
    for t in header.tensors where t.type.isDecodable && t.rowCount > 0 && t.rowLength > 0 {
        let rows = max(1, min(t.rowCount, 4096 / t.rowLength))
        guard rows * t.rowLength <= 1 << 20 else { continue }
        withUnsafeTemporaryAllocation(of: Float.self, capacity: rows * t.rowLength) { out in
            do { try header.decodeRows(t, rows: 0..<rows, from: bytes, into: out) } catch {
                invariantViolated("\(t.name): a decodable type refused: \(error)")
            }
            // Quantize what was decoded and decode it again: the encoders on arbitrary floats.
            let count = (rows * t.rowLength) / 32 * 32
            guard count > 0 else { return }
            let values = UnsafeBufferPointer(rebasing: out[0..<count])
            for type in [GGUFType.q8_0, .q4_1, .q5_0] {
                let size = type.byteCount(elements: count)!
                withUnsafeTemporaryAllocation(byteCount: size, alignment: 1) { raw in
                    _ = type.quantize(values, into: raw)
                    withUnsafeTemporaryAllocation(of: Float.self, capacity: count) { back in
                        type.dequantize(UnsafeRawBufferPointer(raw), into: back)
                    }
                }
            }
        }
    }
}

/// Plans the same file with the writer and parses its header again.
private func roundTrip(_ header: GGUFHeader) {
    let metadata = header.metadata.map { GGUFMetadataEntry(key: $0.key, value: $0.value) }
    let specs = header.tensors.map { GGUFTensorSpec(name: $0.name, shape: $0.shape, type: $0.type) }
    let layout: GGUFLayout
    do { layout = try GGUFLayout(metadata: metadata, tensors: specs, alignment: header.alignment) } catch {
        invariantViolated("the writer refuses a header the reader accepted: \(error)")
    }
    // The data itself does not matter: parse the planned header over zeros, when that is small.
    guard layout.totalSize <= 1 << 22 else { return }
    var file = layout.headerBytes
    file.append(contentsOf: repeatElement(0, count: layout.totalSize - file.count))
    let again: GGUFHeader
    do { again = try file.withUnsafeBytes { raw in try GGUFHeader.parse(raw, file: "roundtrip.gguf") } } catch {
        invariantViolated("the reader refuses the header the writer planned: \(error)")
    }
    guard again.tensors.count == header.tensors.count, again.metadata.count == layout.metadata.count else {
        invariantViolated("round trip changed the counts")
    }
    for (a, b) in zip(again.tensors, layout.tensors) where a.name != b.name || a.shape != b.shape || a.type != b.type || a.byteRange != b.byteRange {
        invariantViolated("round trip changed tensor '\(a.name)'")
    }
    guard zip(again.metadata, layout.metadata).allSatisfy({ $0.key == $1.key }) else { invariantViolated("round trip changed the keys") }
    // Values may hold NaNs (not equal to themselves): compare their bytes through a second plan.
    let second: GGUFLayout
    do {
        second = try GGUFLayout(metadata: again.metadata.map { GGUFMetadataEntry(key: $0.key, value: $0.value) },
                                tensors: specs, alignment: again.alignment)
    } catch { invariantViolated("the writer refuses its own header: \(error)") }
    guard second.headerBytes == layout.headerBytes else { invariantViolated("round trip changed the header bytes") }
}

/// The program's entry point: libFuzzer's driver on `fuzzGGUFHeader`.
@main enum GGUFHeaderFuzzer {
    static func main() { runFuzzer { data, size in fuzzGGUFHeader(data, size) } }
}
