import JSON
import SystemSupport

/// The index of a sharded checkpoint (`model.safetensors.index.json`,
/// `diffusion_pytorch_model.safetensors.index.json`): which shard file holds each tensor.
public struct ShardIndex: Sendable {
    /// `metadata.total_size` if present: the sum of all tensors' data bytes.
    public var totalSize: Int?
    /// Other `metadata` entries, kept as they were.
    public var extraMetadata: [(key: String, value: JSONValue)]
    /// tensor name → shard file name (relative to the index's folder), in document order.
    public var weightMap: [(tensor: String, shard: String)]

    /// Creates an index.
    public init(totalSize: Int?, weightMap: [(tensor: String, shard: String)], extraMetadata: [(key: String, value: JSONValue)] = []) {
        self.totalSize = totalSize
        self.weightMap = weightMap
        self.extraMetadata = extraMetadata
    }

    /// The distinct shard file names in order of first appearance.
    public var shardNames: [String] {
        var seen = Set<String>()
        return weightMap.compactMap { seen.insert($0.shard).inserted ? $0.shard : nil }
    }

    /// Reads and checks an index file: valid JSON, a `weight_map` of strings, shard names that
    /// stay inside the folder (no `/`, `\`, `..`, absolute paths or NUL), no tensor listed twice.
    public static func read(path: String) throws(SafeTensorsError) -> ShardIndex {
        let bytes = try readWholeFile(path, limit: 100_000_000)
        let root: JSONValue
        do { root = try JSONValue.parse(bytes) } catch {
            throw .shardIndex(file: path, tensor: nil, reason: "not valid JSON: \(error.description)")
        }
        return try parse(root, file: path)
    }

    /// Interprets a parsed index document.
    public static func parse(_ root: JSONValue, file: String) throws(SafeTensorsError) -> ShardIndex {
        guard case .object = root else { throw .shardIndex(file: file, tensor: nil, reason: "the index must be a JSON object") }
        var totalSize: Int? = nil
        var extra: [(key: String, value: JSONValue)] = []
        if let metadata = root["metadata"] {
            switch metadata {
            case .null: break
            case let .object(entries):
                for (key, value) in entries {
                    if key == "total_size" {
                        // transformers writes an integer; some tools write a float like 1234.0.
                        if let n = value.nonNegativeInt { totalSize = n }
                        else if case let .double(d) = value, d >= 0, d == d.rounded(), d < 9e15 { totalSize = Int(d) }
                        else { throw .shardIndex(file: file, tensor: nil, reason: "metadata.total_size is not a non-negative integer") }
                    } else {
                        extra.append((key, value))
                    }
                }
            default: throw .shardIndex(file: file, tensor: nil, reason: "'metadata' must be an object")
            }
        }
        guard let map = root["weight_map"] else { throw .shardIndex(file: file, tensor: nil, reason: "missing 'weight_map'") }
        guard case let .object(entries) = map else { throw .shardIndex(file: file, tensor: nil, reason: "'weight_map' must be an object") }
        var seen = Set<String>()
        var weightMap: [(tensor: String, shard: String)] = []
        weightMap.reserveCapacity(entries.count)
        for (tensor, value) in entries {
            guard case let .string(shard) = value else {
                throw .shardIndex(file: file, tensor: tensor, reason: "shard name is not a string")
            }
            if let problem = unsafeShardNameProblem(shard) {
                throw .shardIndex(file: file, tensor: tensor, reason: "shard name '\(escapeForDisplay(shard))' \(problem)")
            }
            guard seen.insert(tensor).inserted else {
                throw .shardIndex(file: file, tensor: tensor, reason: "tensor listed twice in weight_map")
            }
            weightMap.append((tensor, shard))
        }
        return ShardIndex(totalSize: totalSize, weightMap: weightMap, extraMetadata: extra)
    }

    /// Why a shard name would escape the index's folder, or nil if it is a plain file name.
    public static func unsafeShardNameProblem(_ name: String) -> String? {
        if name.isEmpty { return "is empty" }
        if name.contains("/") || name.contains("\\") { return "contains a path separator" }
        if name == "." || name == ".." || name.contains("..") { return "contains '..'" }
        if name.utf8.contains(0) { return "contains NUL" }
        return nil
    }

    /// The index as JSON text, as transformers and diffusers write it (two-space indent, keys
    /// sorted, trailing newline).
    public var jsonText: String {
        var metadataMembers: [(key: String, value: JSONValue)] = extraMetadata
        if let totalSize { metadataMembers.append(("total_size", .int(Int64(totalSize)))) }
        metadataMembers.sort { Array($0.key.utf8).lexicographicallyPrecedes(Array($1.key.utf8)) }
        let sortedMap = weightMap.sorted { Array($0.tensor.utf8).lexicographicallyPrecedes(Array($1.tensor.utf8)) }
        var out = "{\n  \"metadata\": {"
        for (i, member) in metadataMembers.enumerated() {
            out += i == 0 ? "\n" : ",\n"
            out += "    "
            JSONValue.writeString(member.key, to: &out)
            out += ": "
            member.value.write(to: &out)
        }
        out += metadataMembers.isEmpty ? "},\n" : "\n  },\n"
        out += "  \"weight_map\": {"
        for (i, entry) in sortedMap.enumerated() {
            out += i == 0 ? "\n" : ",\n"
            out += "    "
            JSONValue.writeString(entry.tensor, to: &out)
            out += ": "
            JSONValue.writeString(entry.shard, to: &out)
        }
        out += sortedMap.isEmpty ? "}\n}\n" : "\n  }\n}\n"
        return out
    }
}

/// One problem found when checking a shard index against its shards.
public struct ShardIssue: Sendable, Hashable, CustomStringConvertible {
    /// The file the problem is in (index or shard).
    public var file: String
    /// The tensor concerned, if any.
    public var tensor: String?
    /// What is wrong.
    public var problem: String
    public var description: String {
        tensor.map { "\(file): tensor '\(escapeForDisplay($0))': \(problem)" } ?? "\(file): \(problem)"
    }
}

/// Reads a whole small file (an index or a config), refusing files above `limit` bytes.
public func readWholeFile(_ path: String, limit: Int) throws(SafeTensorsError) -> [UInt8] {
    do { return try FileSystem.readFile(path, limit: limit) } catch { throw .system(error) }
}
