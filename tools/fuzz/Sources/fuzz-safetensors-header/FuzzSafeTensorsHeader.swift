import FuzzSupport
import SafeTensors

/// Fuzzes `SafeTensorsHeader.parse` on whole files (u64 length, JSON header, data buffer).
///
/// Besides "no crash, no sanitizer report", every accepted header must be self-consistent and
/// survive a round trip through the writer: planning the same tensors and metadata with
/// `SafeTensorsLayout` and parsing that header again gives the same tensors and metadata.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzSafeTensorsHeader(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let bytes = UnsafeRawBufferPointer(start: size > 0 ? data : nil, count: size)
    let header: SafeTensorsHeader
    do { header = try SafeTensorsHeader.parse(bytes, fileSize: size, file: "fuzz.safetensors") } catch {
        _ = error.description
        return 0
    }
    check(header, fileSize: size)
    roundTrip(header)
    return 0
}

/// What a valid header promises its users.
private func check(_ header: SafeTensorsHeader, fileSize: Int) {
    guard header.dataStart + header.dataSize == fileSize else { fail("data start + size != file size") }
    var next = 0
    for info in header.tensors {
        guard info.dataRange.lowerBound == next else { fail("\(info.name): not contiguous") }
        next = info.dataRange.upperBound
        guard header.info(info.name) == info else { fail("\(info.name): lookup by name disagrees") }
        guard header.keyOffsets[info.name] != nil else { fail("\(info.name): no key offset") }
        guard info.shape.allSatisfy({ $0 >= 0 }) else { fail("\(info.name): negative dimension") }
        // Every product of dimensions a user may form must fit in Int.
        var product = 1
        for d in info.shape {
            let (p, o) = product.multipliedReportingOverflow(by: d)
            guard !o else { fail("\(info.name): shape product \(info.shape) overflows Int") }
            product = p
        }
        guard info.elementCount == product else { fail("\(info.name): elementCount") }
        guard info.dtype.byteCount(elements: product) == info.byteCount else { fail("\(info.name): byte count \(info.byteCount) for \(info.shape)") }
    }
    guard next == header.dataSize else { fail("tensors do not fill the data buffer") }
}

/// Plans the same file with the writer and parses its header again.
private func roundTrip(_ header: SafeTensorsHeader) {
    let specs = header.tensors.map { TensorSpec(name: $0.name, dtype: $0.dtype, shape: $0.shape) }
    var metadata: [String: String]? = nil
    if let pairs = header.metadata {
        var m: [String: String] = [:]
        for (k, v) in pairs { m[k] = v }
        metadata = m
    }
    let layout: SafeTensorsLayout
    do { layout = try SafeTensorsLayout(specs: specs, metadata: metadata) } catch {
        fail("the writer refuses a header the reader accepted: \(error)")
    }
    let again: SafeTensorsHeader
    do {
        again = try layout.headerBytes.withUnsafeBytes { raw in
            try SafeTensorsHeader.parse(raw, fileSize: layout.totalSize, file: "roundtrip.safetensors")
        }
    } catch { fail("the reader refuses the header the writer planned: \(error)") }
    guard again.tensors.count == header.tensors.count else { fail("round trip changed the tensor count") }
    for t in header.tensors {
        guard let u = again.info(t.name), u.dtype == t.dtype, u.shape == t.shape, u.byteCount == t.byteCount else {
            fail("round trip changed tensor '\(t.name)'")
        }
    }
    var back: [String: String]? = nil
    if let pairs = again.metadata {
        var m: [String: String] = [:]
        for (k, v) in pairs { m[k] = v }
        back = m
    }
    // An empty `__metadata__` object and an absent one mean the same; the writer may drop it.
    guard (back ?? [:]) == (metadata ?? [:]) else { fail("round trip changed __metadata__") }
}

private func fail(_ message: String) -> Never { fatalError("fuzz invariant violated: " + message) }

/// The program's entry point: libFuzzer's driver on `fuzzSafeTensorsHeader`.
@main enum SafeTensorsHeaderFuzzer {
    static func main() { runFuzzer { data, size in fuzzSafeTensorsHeader(data, size) } }
}
