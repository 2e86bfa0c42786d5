import ArgumentParser
import DeltaArchive
import Foundation
import JSON
import SafeTensors
import SystemSupport

/// `flowguard lora pack`: a safetensors file → a zstd delta archive (`.fgdelta`).
struct LoRAPack: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pack",
        abstract: "Compress a safetensors file (an adapter or any checkpoint) into a delta archive (.fgdelta).",
        discussion: """
        Every tensor is stored in independently decodable zstd frames (4 MiB of raw bytes each, checksummed), float tensors with their bytes grouped into planes first; the original header is kept verbatim, so 'lora unpack' restores the exact original bytes. With --reference, tensors also present in the reference (same name, dtype and shape) are stored XOR-ed with it: successive checkpoints of a training run compress to their differences. Format: docs/delta-archive.md.

        Examples:
          flowguard lora pack pytorch_lora_weights.safetensors adapter.fgdelta
          flowguard lora pack step-2000.safetensors step-2000.fgdelta \\
              --reference step-1000.safetensors
          flowguard lora pack adapter.safetensors adapter.fgdelta \\
              --base sd3.5_medium.safetensors --level 9 --json
        """
    )

    @Argument(help: "The safetensors file to pack.") var input: String
    @Argument(help: "The archive to write.") var output: String
    @Option(parsing: .unconditional,
            help: "zstd compression level of the frames that are not literals-only (non-float tensors, XOR deltas, or all with --match-search); negative levels are the fast modes.")
    var level = 3
    @Flag(help: "Do not group float bytes into planes before compressing.") var noBytePlanes = false
    @Flag(help: "Code float byte planes at --level with match search instead of literals-only (Huffman) frames: slower, rarely smaller.") var matchSearch = false
    @OptionGroup var compute: ThreadOptions
    @Option(help: "Store tensors as XOR deltas of this earlier checkpoint (.safetensors or .fgdelta).") var reference: String?
    @Option(help: "Record the fingerprint of this base checkpoint (file, shard index or folder).") var base: String?
    @Option(help: "Record this adapter config file (JSON) instead of __metadata__'s lora_adapter_metadata.") var config: String?
    @OptionGroup var overwrite: OutputOptions
    @OptionGroup var style: JSONOutput
    @OptionGroup var log: LogOptions

    func validate() throws {
        if !Zstd.levels.contains(level) { throw ValidationError("--level must be in \(Zstd.levels.lowerBound)...\(Zstd.levels.upperBound)") }
        try overwrite.check(output, writes: .file)
    }

    func run() throws {
        var options = PackOptions(level: level, bytePlanes: !noBytePlanes, literalsOnly: !matchSearch, threads: compute.count(default: activeProcessors()))
        if let reference { options.reference = try DeltaReference.openResolvingChain(path: reference) }
        if let base { options.baseFingerprint = try BaseFingerprint.compute(path: base) }
        if let config {
            options.config = String(decoding: try readWholeFile(config, limit: 16 << 20), as: UTF8.self)
        }
        let source = try SafeTensorsFile(path: input)
        let progress = log.progress("packing \(input)", total: source.header.dataSize)
        let report = try DeltaArchive.pack(input: input, output: output, options: options) { done, _ in progress?.update(done) }
        progress?.finish()
        if style.json {
            let tensors: [JSONValue] = report.tensors.map {
                .object([("name", .string($0.name)), ("dtype", .string($0.dtype.rawValue)), ("raw_bytes", .int(Int64($0.rawBytes))),
                         ("compressed_bytes", .int(Int64($0.compressedBytes))), ("byte_plane_count", .int(Int64($0.bytePlanes))),
                         ("xor_reference", .bool($0.xorReference))])
            }
            print(JSONValue.object([
                ("input", .string(input)), ("output", .string(output)), ("input_bytes", .int(Int64(report.inputBytes))),
                ("output_bytes", .int(Int64(report.outputBytes))), ("ratio", .double((report.ratio * 1000).rounded() / 1000)),
                ("base_fingerprint", options.baseFingerprint.map { .string($0) } ?? .null),
                ("elapsed_seconds", .double((report.seconds * 1000).rounded() / 1000)),
                ("codec_seconds", .double(((report.seconds - report.commitSeconds) * 10000).rounded() / 10000)),
                ("commit_seconds", .double((report.commitSeconds * 10000).rounded() / 10000)),
                ("threads", .int(Int64(report.threads))),
                ("tensors", .array(tensors)),
            ]).compactText)
        } else {
            let xor = report.tensors.filter(\.xorReference).count
            print("packed \(input) → \(output): \(report.tensors.count) tensors, \(report.inputBytes) → \(report.outputBytes) bytes (ratio \(format3(report.ratio)))"
                  + (xor > 0 ? ", \(xor) stored as XOR deltas" : ""))
        }
    }
}

/// `flowguard lora unpack`: a delta archive → the exact original safetensors file.
struct LoRAUnpack: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "unpack",
        abstract: "Restore the exact original safetensors file from a delta archive (.fgdelta).",
        discussion: """
        Validates the whole archive layout and index before writing, checks every frame's size and checksums while decoding, and writes the output atomically: on any error nothing is left at OUT. Archives packed with --reference need the same reference; a checkpoint of a training run (RUN/checkpoints/step-N/adapter.fgdelta, or the step-N folder itself) finds its chain of references by itself, from the checkpoint.json files of the run.

        Examples:
          flowguard lora unpack adapter.fgdelta pytorch_lora_weights.safetensors
          flowguard lora unpack step-2000.fgdelta step-2000.safetensors \\
              --reference step-1000.safetensors
          flowguard lora unpack runs/a/checkpoints/step-000030 step-30.safetensors
        """
    )

    /// The archive a path names: itself, or a checkpoint folder's `adapter.fgdelta`.
    static func archivePath(_ path: String) -> String {
        var isFolder: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isFolder), isFolder.boolValue else { return path }
        return (path.hasSuffix("/") ? path : path + "/") + "adapter.fgdelta"
    }

    @Argument(help: "The archive to read (or a training checkpoint folder).") var input: String
    @Argument(help: "The safetensors file to write.") var output: String
    @OptionGroup var compute: ThreadOptions
    @Option(help: "The reference the archive's XOR deltas were taken against (.safetensors or .fgdelta).") var reference: String?
    @OptionGroup var overwrite: OutputOptions
    @OptionGroup var style: JSONOutput
    @OptionGroup var log: LogOptions

    func validate() throws {
        try overwrite.check(output, writes: .file)
    }

    func run() throws {
        let ref = try reference.map { path throws(DeltaArchiveError) in try DeltaReference.openResolvingChain(path: path) }
        let reader = try DeltaArchiveReader.openingChain(path: LoRAUnpack.archivePath(input), reference: ref)
        let progress = log.progress("unpacking \(input)", total: reader.sourceHeader.dataSize)
        let started = monotonicSeconds()
        let report = try DeltaArchive.unpack(reader, output: output, threads: compute.count(default: activeProcessors())) { done, _ in
            progress?.update(done)
        }
        progress?.finish()
        if style.json {
            print(JSONValue.object([
                ("input", .string(input)), ("output", .string(output)), ("input_bytes", .int(Int64(reader.fileSize))),
                ("output_bytes", .int(Int64(reader.originalSize))), ("tensor_count", .int(Int64(reader.entries.count))),
                ("elapsed_seconds", .double(((monotonicSeconds() - started) * 1000).rounded() / 1000)),
                ("codec_seconds", .double(((report.seconds - report.commitSeconds) * 10000).rounded() / 10000)),
                ("commit_seconds", .double((report.commitSeconds * 10000).rounded() / 10000)),
            ]).compactText)
        } else {
            print("unpacked \(input) → \(output): \(reader.entries.count) tensors, \(reader.originalSize) bytes")
        }
    }
}

/// A ratio with three decimals.
private func format3(_ x: Double) -> String {
    let scaled = Int((x * 1000).rounded())
    let frac = String(scaled % 1000)
    return "\(scaled / 1000)." + String(repeating: "0", count: 3 - frac.count) + frac
}
