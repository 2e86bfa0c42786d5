#if canImport(Glibc)
import Glibc
#endif
import FuzzSupport
import DeltaArchive
import SafeTensors

/// The in-memory file every input is written to (libFuzzer runs inputs one at a time).
private let file = MemoryFile(name: "fuzz.fgdelta")

/// The reference XOR tensors are undone against: the safetensors file named by
/// `FLOWGUARD_FUZZ_DELTA_REFERENCE` (run.sh passes `corpus-reference/delta-reference.safetensors`,
/// which the XOR seed archive was packed against), or none.
private let reference: DeltaReference? = {
    guard let path = getenv("FLOWGUARD_FUZZ_DELTA_REFERENCE").map({ String(cString: $0) }), !path.isEmpty else { return nil }
    return .safetensors(try! SafeTensorsFile(path: path))
}()

/// Archives may declare at most this many raw bytes: a small archive of zeros can legitimately
/// decode to gigabytes (zstd), which is not what this target looks for.
private let limits = DeltaReadLimits(maximumTotalRawBytes: 16 << 20)

/// Fuzzes the delta archive reader: opening (preamble, trailer, index frame and JSON, layout and
/// source-header validation), then `readTensor` for every tensor and `verify`, on one thread.
/// An input is either an archive (it starts with `FGDELTA\0`) or an index and frames that the
/// harness wraps into one (`IndexedInput`).
///
/// An archive that `verify` accepts must give every tensor to `readTensor` at its declared size.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzDeltaArchive(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let input = fuzzInput(data, size)
    if let built = IndexedInput.archive(from: input) {
        built.withUnsafeBytes { file.replace(with: $0) }
    } else {
        file.replace(with: input)
    }
    guard let reader = try? DeltaArchiveReader(path: file.path, reference: reference, limits: limits) else { return 0 }
    _ = reader.originalSize
    _ = reader.index.json().compactText
    var allRead = true
    for entry in reader.entries {
        do {
            let bytes = try reader.readTensor(entry.name, threads: 1)
            guard bytes.count == entry.byteCount else { fail("\(entry.name): \(bytes.count) bytes, declared \(entry.byteCount)") }
        } catch {
            _ = error.description
            allRead = false
        }
    }
    do {
        try reader.verify(threads: 1)
        if !allRead { fail("verify accepts an archive whose tensors do not all read") }
    } catch {
        _ = error.description
    }
    return 0
}

private func fail(_ message: String) -> Never { invariantViolated(message) }

/// The program's entry point: libFuzzer's driver on `fuzzDeltaArchive`.
@main enum DeltaArchiveFuzzer {
    static func main() { runFuzzer { data, size in fuzzDeltaArchive(data, size) } }
}
