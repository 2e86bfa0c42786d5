import FuzzSupport
import JSON
import SafeTensors

/// The in-memory file every input is written to (libFuzzer runs inputs one at a time).
private let file = MemoryFile(name: "fuzz-shard-index")

/// Fuzzes reading a shard index (`*.safetensors.index.json`) with `ShardIndex.read(path:)`.
///
/// Every index accepted must name only plain shard files, list each tensor once, and survive a
/// round trip through `jsonText` (what FlowGuard writes) with the same weight map and total size.
/// Other `metadata` members are left out of the round trip: FlowGuard never writes back what it
/// read there, and json-c reads an out-of-range number such as 1e999 as infinity, which
/// `JSONValue.write` cannot spell in JSON (found by this target; see README.md).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzShardIndex(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    file.replace(with: fuzzInput(data, size))
    let index: ShardIndex
    do { index = try ShardIndex.read(path: file.path) } catch {
        _ = error.description
        return 0
    }
    var seen = Set<String>()
    for (tensor, shard) in index.weightMap {
        guard seen.insert(tensor).inserted else { fail("tensor '\(tensor)' listed twice") }
        if let problem = ShardIndex.unsafeShardNameProblem(shard) { fail("accepted shard name '\(shard)' that \(problem)") }
    }
    _ = index.shardNames
    _ = index.jsonText
    let text = ShardIndex(totalSize: index.totalSize, weightMap: index.weightMap).jsonText
    let again: ShardIndex
    do { again = try ShardIndex.parse(try JSONValue.parse(Array(text.utf8)), file: "roundtrip.json") } catch {
        fail("the index FlowGuard writes does not read back: \(error)\n\(text)")
    }
    guard again.totalSize == index.totalSize else { fail("round trip changed total_size") }
    let before = Dictionary(index.weightMap.map { ($0.tensor, $0.shard) }, uniquingKeysWith: { a, _ in a })
    let after = Dictionary(again.weightMap.map { ($0.tensor, $0.shard) }, uniquingKeysWith: { a, _ in a })
    guard before == after, again.weightMap.count == index.weightMap.count else { fail("round trip changed weight_map") }
    return 0
}

private func fail(_ message: String) -> Never { invariantViolated(message) }

/// The program's entry point: libFuzzer's driver on `fuzzShardIndex`.
@main enum ShardIndexFuzzer {
    static func main() { runFuzzer { data, size in fuzzShardIndex(data, size) } }
}
