/// Whether a file, shard index or model folder is sound safetensors: every header validated as
/// the reference reader does, every shard of an index opened and cross-checked against it, and
/// optionally every data byte read. What `flowguard verify` reports.
public enum Verification {
    /// Checks the file, shard index or folder at `path`. With `readData`, every data byte of every
    /// file is also read (a full pass) and summed into a checksum, with `progress(done, total)` in
    /// file bytes; that pass runs only when the headers are sound. A file one of `containers`
    /// recognises (GGUF) is validated by that container's reader.
    public static func verify(_ path: String, readData: Bool = false, containers: [any ContainerReader] = [],
                              progress: ((Int, Int) -> Void)? = nil) -> VerificationReport {
        var report = VerificationReport(path: path, problems: problems(path, containers: containers), checksum: nil)
        if readData && report.problems.isEmpty {
            do { report.checksum = try checksum(path, containers: containers, progress: progress) } catch { report.problems.append(.unreadable(error)) }
        }
        return report
    }

    /// Every problem of the headers and, for a shard index, of the index against its shards.
    static func problems(_ path: String, containers: [any ContainerReader] = []) -> [VerificationProblem] {
        let resolved: String
        do { resolved = try TensorCollection.resolve(path) } catch { return [.unreadable(error)] }
        guard resolved.hasSuffix(".json") else {
            do { _ = try SafeTensorsFile(path: resolved, containers: containers) } catch { return [.unreadable(error)] }
            return []
        }
        let index: ShardIndex
        do { index = try ShardIndex.read(path: resolved) } catch { return [.unreadable(error)] }
        let folder = resolved.contains("/") ? String(resolved[..<resolved.lastIndex(of: "/")!]) : "."
        var shards: [SafeTensorsFile] = []
        var problems: [VerificationProblem] = []
        for name in index.shardNames {
            do { shards.append(try SafeTensorsFile(path: folder + "/" + name)) } catch { problems.append(.unreadable(error)) }
        }
        if !problems.isEmpty { return problems }
        return ShardVerifier.issues(index: index, indexPath: resolved, shards: shards).map { .shard($0) }
    }

    /// Reads every data byte of every file behind `path`; returns a combined checksum.
    static func checksum(_ path: String, containers: [any ContainerReader] = [],
                         progress: ((Int, Int) -> Void)?) throws(SafeTensorsError) -> UInt64 {
        let collection = try TensorCollection(path: path, containers: containers)
        let total = collection.files.reduce(0) { $0 + $1.fileSize }
        var sum: UInt64 = 0
        var before = 0
        for file in collection.files {
            let offset = before
            sum &+= file.scanData { done, _ in progress?(offset + done, total) }
            before += file.fileSize
        }
        return sum
    }
}

/// What `Verification.verify` found for one path.
public struct VerificationReport: Sendable {
    /// The path as given.
    public var path: String
    /// Every problem found, in the order found; empty when the path is sound.
    public var problems: [VerificationProblem]
    /// The combined data checksum, when the data were read.
    public var checksum: UInt64?

    /// Whether nothing is wrong.
    public var isValid: Bool { problems.isEmpty }
}

/// One thing wrong with a verified path. Its description is the sentence the user reads, naming
/// the file, the tensor and the byte offset where known.
public enum VerificationProblem: Sendable, CustomStringConvertible {
    /// A file (or the index) cannot be opened or read as safetensors.
    case unreadable(SafeTensorsError)
    /// A shard index disagrees with its shards.
    case shard(ShardIssue)

    public var description: String {
        switch self {
        case .unreadable(let error): return error.description
        case .shard(let issue): return issue.description
        }
    }
}
