import SystemSupport

/// One tensor of a (possibly sharded) checkpoint and the file that holds it.
public struct TensorEntry: @unchecked Sendable {
    // @unchecked: SafeTensorsFile is immutable after init.
    /// The tensor's description (byte range relative to its file's data buffer).
    public let info: TensorInfo
    /// The mapped file holding the bytes.
    public let file: SafeTensorsFile
    /// How the bytes decode when they are blocks (GGUF quant types); nil for plain `dtype` values.
    public let encoding: (any BlockEncoding)?

    /// A tensor of `file`, with its block encoding from the file when it has one.
    public init(info: TensorInfo, file: SafeTensorsFile) {
        self.info = info
        self.file = file
        encoding = file.encodings[info.name]
    }

    /// A tensor of `file` read through `encoding` (a scaled fp8 weight: its values times its scale);
    /// `info.dtype` is then the type its values decode to.
    public init(info: TensorInfo, file: SafeTensorsFile, encoding: (any BlockEncoding)?) {
        self.info = info
        self.file = file
        self.encoding = encoding
    }
}

/// A set of tensors opened from a single `.safetensors` file, a shard index, or a folder holding
/// either (a diffusers model folder): what every command reads from.
public final class TensorCollection: @unchecked Sendable {
    // @unchecked: immutable after init.

    /// The path given by the user.
    public let path: String
    /// The files opened, in shard order (one for a single file).
    public let files: [SafeTensorsFile]
    /// The shard index, when opened through one.
    public let index: ShardIndex?
    /// The index file's path, when opened through one.
    public let indexPath: String?
    /// Every tensor, in shard order then data order.
    public let entries: [TensorEntry]
    /// What opening decided on the user's behalf (a pipeline folder read through its
    /// `transformer/`), for commands to print on stderr.
    public private(set) var notes: [String] = []
    private let byName: [String: Int]

    /// Opens `path`: a `.safetensors` file, a `*.safetensors.index.json`, a folder containing
    /// exactly one index or exactly one `.safetensors` file, or a diffusers pipeline folder
    /// (`model_index.json`: its `transformer/` is read). Shards are validated and checked
    /// against the index; any disagreement is an error naming the file and tensor. A file one of
    /// `containers` recognises (GGUF) is read by it.
    public init(path: String, containers: [any ContainerReader] = []) throws(SafeTensorsError) {
        self.path = path
        let target = try TensorCollection.resolve(path)
        if FileSystem.isFolder(path), target.hasPrefix(FileSystem.trimmingTrailingSlashes(path) + "/transformer/") {
            notes.append("\(path) is a diffusers pipeline folder: reading its transformer (\(FileSystem.parentFolder(of: target)))")
        }
        if target.hasSuffix(".json") {
            let index = try ShardIndex.read(path: target)
            let folder = FileSystem.parentFolder(of: target)
            var files: [SafeTensorsFile] = []
            for shard in index.shardNames { files.append(try SafeTensorsFile(path: folder + "/" + shard)) }
            let issues = ShardVerifier.issues(index: index, indexPath: target, shards: files)
            if let first = issues.first { throw .shardIndex(file: first.file, tensor: first.tensor, reason: first.problem) }
            self.index = index
            indexPath = target
            self.files = files
        } else {
            index = nil
            indexPath = nil
            files = [try SafeTensorsFile(path: target, containers: containers)]
        }
        var entries: [TensorEntry] = []
        var byName: [String: Int] = [:]
        for file in files {
            for info in file.tensors {
                if byName[info.name] != nil {
                    throw .duplicateTensor(file: file.path, tensor: info.name, offset: file.header.keyOffsets[info.name] ?? 8)
                }
                byName[info.name] = entries.count
                entries.append(TensorEntry(info: info, file: file))
            }
        }
        self.entries = entries
        self.byName = byName
    }

    /// A view of some of this collection's tensors (same files, same order), with `note` added to
    /// `notes`: how a command reads one component of an all-in-one file.
    public func subset(note: String?, keeping keep: (TensorEntry) -> Bool) -> TensorCollection {
        TensorCollection(of: self, entries: entries.filter(keep), notes: notes + (note.map { [$0] } ?? []))
    }

    /// A view of this collection's files with `entries` in place of its own (tensors dropped or
    /// read through another encoding), with `note` added to `notes`.
    public func replacing(entries: [TensorEntry], note: String?) -> TensorCollection {
        TensorCollection(of: self, entries: entries, notes: notes + (note.map { [$0] } ?? []))
    }

    private init(of parent: TensorCollection, entries: [TensorEntry], notes: [String]) {
        path = parent.path
        files = parent.files
        index = parent.index
        indexPath = parent.indexPath
        self.entries = entries
        self.notes = notes
        var byName: [String: Int] = [:]
        for (i, entry) in entries.enumerated() { byName[entry.info.name] = i }
        self.byName = byName
    }

    /// The file `path` stands for: itself, or for a folder the one shard index or the one
    /// `.safetensors` file it holds.
    public static func resolve(_ path: String) throws(SafeTensorsError) -> String {
        guard FileSystem.isFolder(path) else { return path }
        let names: [String]
        do { names = try FileSystem.listFolder(path).filter { !$0.hasPrefix(".") }.sorted() } catch { throw .system(error) }
        let folder = FileSystem.trimmingTrailingSlashes(path)
        if names.contains("model_index.json") {
            guard names.contains("transformer"), FileSystem.isFolder(folder + "/transformer") else {
                throw .io(file: path, operation: "open", message: "a diffusers pipeline folder (model_index.json) without a transformer/ "
                          + "folder; it holds: \(names.joined(separator: ", "))")
            }
            return try resolve(folder + "/transformer")
        }
        let indexes = names.filter { $0.hasSuffix(".safetensors.index.json") }
        let singles = names.filter { $0.hasSuffix(".safetensors") }
        if indexes.count == 1 { return path + "/" + indexes[0] }
        if indexes.isEmpty && singles.count == 1 { return path + "/" + singles[0] }
        if indexes.count > 1 {
            throw .shardIndex(file: path, tensor: nil, reason: "folder holds several shard indexes (\(indexes.joined(separator: ", "))); name one")
        }
        let held = names.isEmpty ? "nothing" : names.prefix(20).joined(separator: ", ") + (names.count > 20 ? ", …" : "")
        throw .io(file: path, operation: "open", message: singles.isEmpty
                  ? "folder holds no .safetensors file, shard index or model_index.json (it holds: \(held))"
                  : "folder holds several .safetensors files and no index; name one")
    }

    /// The tensor called `name`, if present.
    public func entry(_ name: String) -> TensorEntry? { byName[name].map { entries[$0] } }

    /// All tensor descriptions, in order.
    public var infos: [TensorInfo] { entries.map(\.info) }

    /// Total bytes of tensor data.
    public var dataBytes: Int { entries.reduce(0) { $0 + $1.info.byteCount } }

    /// The `__metadata__` of the first file (shards normally repeat it).
    public var metadata: [(key: String, value: String)]? { files.first?.header.metadata }
}

/// Checks a shard index against its shards' headers.
public enum ShardVerifier {
    /// Every disagreement between `index` and the opened `shards`: tensors listed but missing,
    /// tensors present but unlisted or listed under another shard, and a wrong `total_size`.
    public static func issues(index: ShardIndex, indexPath: String, shards: [SafeTensorsFile]) -> [ShardIssue] {
        var issues: [ShardIssue] = []
        var located: [String: String] = [:]
        var total = 0
        for shard in shards {
            let shardName = shard.path.split(separator: "/").last.map(String.init) ?? shard.path
            for info in shard.tensors {
                total += info.byteCount
                if let other = located[info.name] {
                    issues.append(ShardIssue(file: shard.path, tensor: info.name, problem: "also present in shard '\(other)'"))
                }
                located[info.name] = shardName
            }
        }
        var listed = Set<String>()
        for (tensor, shard) in index.weightMap {
            listed.insert(tensor)
            guard let actual = located[tensor] else {
                issues.append(ShardIssue(file: indexPath, tensor: tensor, problem: "listed in weight_map under '\(shard)' but not found in that shard"))
                continue
            }
            if actual != shard {
                issues.append(ShardIssue(file: indexPath, tensor: tensor, problem: "weight_map says '\(shard)' but the tensor is in '\(actual)'"))
            }
        }
        for shard in shards {
            for info in shard.tensors where !listed.contains(info.name) {
                issues.append(ShardIssue(file: shard.path, tensor: info.name, problem: "present in the shard but missing from weight_map"))
            }
        }
        if let declared = index.totalSize, declared != total {
            issues.append(ShardIssue(file: indexPath, tensor: nil, problem: "metadata.total_size is \(declared) but the shards hold \(total) bytes of tensor data"))
        }
        return issues
    }
}

/// Writes a checkpoint as shards of at most `maxShardBytes` each plus its index, the way
/// transformers and diffusers do (`<base>-00001-of-00003.safetensors`,
/// `<base>.safetensors.index.json`). A single shard is written as `<base>.safetensors` without
/// an index. Each file appears atomically; the index is written last.
public enum ShardedWriter {
    /// Groups tensors (in the given order) into shards: a new shard starts when the next tensor
    /// would push the current one past the limit; a tensor larger than the limit gets its own.
    public static func plan(specs: [TensorSpec], maxShardBytes: Int) -> [[TensorSpec]] {
        var shards: [[TensorSpec]] = []
        var current: [TensorSpec] = []
        var size = 0
        for spec in specs {
            let bytes = spec.byteCount ?? 0
            if !current.isEmpty && size + bytes > maxShardBytes {
                shards.append(current)
                current = []
                size = 0
            }
            current.append(spec)
            size += bytes
        }
        if !current.isEmpty || shards.isEmpty { shards.append(current) }
        return shards
    }

    /// Writes the shards and the index into `folder` (which must exist). Returns the paths
    /// written, index last. `produce` is called once per tensor, as for `SafeTensorsWriter`.
    @discardableResult
    public static func write(folder: String, baseName: String, specs: [TensorSpec], metadata: [String: String]?,
                             maxShardBytes: Int, progress: ((Int, Int) -> Void)? = nil,
                             produce: (TensorSink) throws -> Void) throws -> [String] {
        let groups = plan(specs: specs, maxShardBytes: maxShardBytes)
        if groups.count == 1 {
            let path = folder + "/" + baseName + ".safetensors"
            try SafeTensorsWriter.write(to: path, specs: groups[0], metadata: metadata, progress: progress, produce: produce)
            return [path]
        }
        let grandTotal = specs.reduce(0) { $0 + ($1.byteCount ?? 0) }
        var done = 0
        var paths: [String] = []
        var weightMap: [(tensor: String, shard: String)] = []
        let width = max(5, String(groups.count).count)
        func padded(_ n: Int) -> String { String(repeating: "0", count: max(0, width - String(n).count)) + String(n) }
        for (i, group) in groups.enumerated() {
            let name = "\(baseName)-\(padded(i + 1))-of-\(padded(groups.count)).safetensors"
            let path = folder + "/" + name
            let before = done
            try SafeTensorsWriter.write(to: path, specs: group, metadata: metadata,
                                        progress: { written, _ in progress?(before + written, grandTotal) },
                                        produce: produce)
            done += group.reduce(0) { $0 + ($1.byteCount ?? 0) }
            paths.append(path)
            for spec in group { weightMap.append((spec.name, name)) }
        }
        let index = ShardIndex(totalSize: grandTotal, weightMap: weightMap)
        let indexPath = folder + "/" + baseName + ".safetensors.index.json"
        do {
            let file = try AtomicFile(destination: indexPath)
            try file.write(Array(index.jsonText.utf8))
            try file.commit()
        } catch { throw SafeTensorsError.system(error) }
        paths.append(indexPath)
        return paths
    }
}
