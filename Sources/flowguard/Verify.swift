import ArgumentParser
import JSON
import SafeTensors

/// `flowguard verify`: is each file a sound safetensors file (and each index consistent)?
struct Verify: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check that files are valid safetensors and that shard indexes match their shards.",
        discussion: """
        Validates every header exactly as the reference reader does (and rejects duplicate tensor names). For a *.safetensors.index.json (or a folder holding one) every shard is validated and cross-checked against the index: missing or extra tensors, tensors in the wrong shard, a wrong total_size, shard names that leave the folder.

        Exit status 0 when every file is valid; 1 otherwise, with one line per problem naming the file, the tensor and the byte offset.

        Examples:
          flowguard verify model.safetensors
          flowguard verify transformer/diffusion_pytorch_model.safetensors.index.json
          flowguard verify --json *.safetensors
        """
    )

    @Argument(help: "Files, shard indexes or model folders to verify.")
    var files: [String]

    @Flag(help: "Print one JSON object with a verdict per file.")
    var json = false

    @Flag(help: "Also read every data byte (a full pass over the file) and print a checksum.")
    var readData = false

    func run() throws {
        var results: [JSONValue] = []
        var failed = false
        for path in files {
            var problems = Verification.problems(path)
            var checksum: UInt64? = nil
            if readData && problems.isEmpty {
                do { checksum = try Verification.readAll(path) } catch { problems.append(String(describing: error)) }
            }
            failed = failed || !problems.isEmpty
            if json {
                results.append(.object([("path", .string(path)), ("valid", .bool(problems.isEmpty)),
                                        ("problems", .array(problems.map { .string($0) })),
                                        ("checksum", checksum.map { .string(String($0, radix: 16)) } ?? .null)]))
            } else if problems.isEmpty {
                print("ok: \(path)" + (checksum.map { " (data checksum \(String($0, radix: 16)))" } ?? ""))
            } else {
                for problem in problems { printError("invalid: \(problem)") }
            }
        }
        if json { print(JSONValue.object([("files", .array(results))]).compactText) }
        if failed { throw CommandFailure() }
    }
}

/// What `verify` checks, as a list of problem sentences (empty when valid).
enum Verification {
    /// Reads every data byte of every file behind `path`; returns a combined checksum.
    static func readAll(_ path: String) throws -> UInt64 {
        let collection = try TensorCollection(path: path)
        let progress = Progress(label: "reading \(path)", total: collection.files.reduce(0) { $0 + $1.fileSize })
        var sum: UInt64 = 0
        var before = 0
        for file in collection.files {
            sum &+= file.scanData { done, _ in progress.update(before + done) }
            before += file.fileSize
        }
        progress.finish()
        return sum
    }

    static func problems(_ path: String) -> [String] {
        let resolved: String
        do { resolved = try TensorCollection.resolve(path) } catch { return [error.description] }
        guard resolved.hasSuffix(".json") else {
            do { _ = try SafeTensorsFile(path: resolved) } catch { return [error.description] }
            return []
        }
        do {
            let index = try ShardIndex.read(path: resolved)
            let folder = resolved.contains("/") ? String(resolved[..<resolved.lastIndex(of: "/")!]) : "."
            var shards: [SafeTensorsFile] = []
            var problems: [String] = []
            for name in index.shardNames {
                do { shards.append(try SafeTensorsFile(path: folder + "/" + name)) } catch { problems.append(error.description) }
            }
            if !problems.isEmpty { return problems }
            return ShardVerifier.issues(index: index, indexPath: resolved, shards: shards).map(\.description)
        } catch {
            return [error.description]
        }
    }
}
