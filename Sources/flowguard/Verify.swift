import ArgumentParser
import Checkpoints
import JSON
import SafeTensors

/// `flowguard verify`: is each file a sound safetensors file (and each index consistent)?
struct Verify: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check that files are valid safetensors and that shard indexes match their shards.",
        discussion: """
        Validates every header exactly as the reference reader does (and rejects duplicate tensor names). A GGUF file is validated with the same rigour: magic, version, counts and string lengths against the bytes present, value types, dimensions, known ggml types, alignment, data offsets inside the file, overlaps. For a *.safetensors.index.json (or a folder holding one) every shard is validated and cross-checked against the index: missing or extra tensors, tensors in the wrong shard, a wrong total_size, shard names that leave the folder.

        Exit status 0 when every file is valid; 1 otherwise, with one line per problem naming the file, the tensor and the byte offset.

        Examples:
          flowguard verify model.safetensors
          flowguard verify transformer/diffusion_pytorch_model.safetensors.index.json
          flowguard verify --json *.safetensors
        """
    )

    @Argument(help: "Files, shard indexes or model folders to verify.")
    var files: [String]

    @OptionGroup var style: JSONOutput

    @Flag(help: "Also read every data byte (a full pass over the file) and print a checksum.")
    var readData = false

    @OptionGroup var log: LogOptions

    func run() throws {
        var results: [JSONValue] = []
        var failed = false
        for path in files {
            var progress: Progress? = nil
            let report = Verification.verify(path, readData: readData, containers: TensorCollection.containerReaders) { done, total in
                if progress == nil { progress = log.progress("reading \(path)", total: total) }
                progress?.update(done)
            }
            progress?.finish()
            failed = failed || !report.isValid
            let checksum = report.checksum.map { String($0, radix: 16) }
            if style.json {
                results.append(.object([("path", .string(path)), ("valid", .bool(report.isValid)),
                                        ("problems", .array(report.problems.map { .string($0.description) })),
                                        ("checksum", checksum.map { .string($0) } ?? .null)]))
            } else if report.isValid {
                print("ok: \(path)" + (checksum.map { " (data checksum \($0))" } ?? ""))
            } else {
                for problem in report.problems { printError("invalid: \(problem)") }
            }
        }
        if style.json { print(JSONValue.object([("files", .array(results))]).compactText) }
        if failed { throw CommandFailure() }
    }
}
