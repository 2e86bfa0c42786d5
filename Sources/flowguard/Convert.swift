import ArgumentParser
import Checkpoints
import GGUF
import SystemSupport
import JSON
import SafeTensors

/// `flowguard convert`: rewrite a transformer checkpoint in the other key layout, another dtype
/// or other shards, streamed and atomically.
struct Convert: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Convert an SD3.5 or FLUX transformer checkpoint between the original and diffusers layouts.",
        discussion: """
        IN is a .safetensors file, a *.safetensors.index.json, or a diffusers model folder. The architecture and its configuration are detected from the tensor names and shapes; fused q/k/v projections are split or fused and modulation halves swapped as the layouts require. Converting to the same layout rewrites the file (useful with --dtype or --shard-size).

        OUT is written as a single .safetensors file, or as a diffusers-style folder (diffusion_pytorch_model.safetensors, or its shards and index, plus config.json for the diffusers layout) when OUT ends with '/', is an existing folder, --shard-size is given, or the layout is diffusers and OUT does not end in .safetensors.

        Streamed: memory use does not grow with the checkpoint's size. The output appears only when complete; on failure nothing is left behind. The input is never overwritten. A .gguf output is quantized in blocks of rows on --threads workers (default: all processors).

        --dtype converts floating-point tensors (rounding to nearest even; F8_E4M3 saturates at ±448 and the count is reported); other tensors keep their dtype. Sizes for --shard-size are bytes or a number with a unit: 5GB, 500MB, 1.5G (powers of 1000), 2GiB (powers of 1024).

        Examples:
          flowguard convert sd3.5_medium.safetensors sd35-diffusers/ --layout diffusers
          flowguard convert flux1-dev.safetensors transformer --layout diffusers \\
              --dtype bf16 --shard-size 5GB
          flowguard convert transformer/ flux1-dev-fp8.safetensors --layout original \\
              --dtype f8_e4m3 --prefix comfy
        """
    )

    @Argument(help: "Checkpoint to convert: a .safetensors file, a shard index or a model folder.")
    var input: String

    @Argument(help: "Output .safetensors file or folder.")
    var output: String

    @Option(help: "Key layout of the output (required for safetensors outputs; a .gguf output is original).")
    var layout: KeyLayout?

    @Option(help: "Dtype of floating-point tensors in the output (default: each keeps its own; f16 for a .gguf output, which also takes q8_0, q4_0, q4_1, q5_0 and q5_1).")
    var dtype: ConvertDType?

    @Option(help: ArgumentHelp("Write shards of at most this size (e.g. 5GB) plus an index, in a folder.", valueName: "size"),
            transform: ByteSize.parse)
    var shardSize: Int?

    @Option(help: "Key prefix of an original-layout output (default: sai for SD3, none for FLUX).")
    var prefix: KeyPrefix?

    @Option(help: "A diffusers config.json for the values the weights do not hold (sample_size, a head size, RoPE axes); default: IN's own when IN is a model folder.")
    var config: String?

    @OptionGroup var compute: ThreadOptions

    @OptionGroup var overwrite: OutputOptions

    @OptionGroup var style: JSONOutput

    @OptionGroup var log: LogOptions

    /// Whether the output is a GGUF file (the extension picks the container).
    var writesGGUF: Bool { output.lowercased().hasSuffix(".gguf") }

    func validate() throws {
        if writesGGUF {
            if layout == .diffusers { throw ValidationError("a .gguf output is written in the original layout (city96's names); drop --layout diffusers.") }
            if prefix != nil { throw ValidationError("--prefix does not apply to a .gguf output (city96's names have no prefix).") }
            if shardSize != nil { throw ValidationError("--shard-size does not apply to a .gguf output.") }
            try dtype?.check(writingGGUF: true)
            try overwrite.check(output, writes: .file)
            return
        }
        guard let layout else { throw ValidationError("Missing expected argument '--layout <layout>'.") }
        if prefix != nil && layout == .diffusers { throw ValidationError("--prefix applies only to --layout original.") }
        try dtype?.check(writingGGUF: false)
        try overwrite.check(output, writes: Converter.writesFolder(output, layout: layout, shardSize: shardSize) ? .folder : .file)
    }

    func run() throws {
        let source = try TensorCollection.transformerCheckpoint(input)
        for note in source.notes { log.note("note: \(note)") }
        if writesGGUF { return try runGGUF(source) }
        let layout = self.layout ?? .original
        let described = try Architecture.describe(source, configPath: config)
        let converter = Converter(source: source, plan: ConversionPlan(source: described.detected, to: layout, prefix: prefix),
                                  dtype: dtype?.float?.dtype)
        // What the written config.json could not take from the weights or a configuration.
        if layout == .diffusers && Converter.writesFolder(output, layout: layout, shardSize: shardSize) && !style.json {
            for note in described.notes { log.note("note: " + note) }
        }
        let outputBytes = try converter.outputSpecs().reduce(0) { $0 + ($1.byteCount ?? 0) }
        let progress = log.progress("converting \(input)", total: outputBytes)
        let result = try converter.write(to: output, shardSize: shardSize) { done, _ in progress?.update(done) }
        progress?.finish()
        if style.json {
            print(Convert.json(result, input: input, output: output).compactText)
        } else {
            print(Convert.summary(result, input: input, output: output))
        }
    }

    /// Writes a GGUF file the city96 way.
    func runGGUF(_ source: TensorCollection) throws {
        let converter = try Converter(source: source, to: .original, prefix: KeyPrefix.none)
        let type = dtype?.gguf ?? .f16
        let total = converter.ggufSpecs(type: type).reduce(0) { $0 + ($1.type.byteCount(elements: $1.shape.reduce(1, *)) ?? 0) }
        let progress = log.progress("converting \(input)", total: total)
        let result = try converter.writeGGUF(to: output, type: type, threads: compute.count(default: SystemInfo.activeProcessors)) { done, _ in progress?.update(min(done, total)) }
        progress?.finish()
        let types = result.tensorsByType.sorted { $0.key < $1.key }
        if style.json {
            print(JSONValue.object([
                ("input", .string(input)), ("output", .string(output)), ("container", .string("GGUF")),
                ("architecture", .string(result.architecture)), ("source_layout", .string(result.sourceLayout.rawValue)),
                ("target_layout", .string(KeyLayout.original.rawValue)), ("type", .string(type.name)),
                ("tensors", .int(Int64(result.tensorsWritten))),
                ("tensors_by_type", .object(types.map { ($0.key, .int(Int64($0.value))) })),
                ("file_bytes", .int(Int64(result.fileBytes))), ("elapsed_seconds", .double(result.elapsedSeconds)),
            ]).compactText)
        } else {
            let centis = Int((result.elapsedSeconds * 100).rounded())
            print("converted \(input) (\(result.architecture), \(result.sourceLayout.rawValue)) to \(output) (GGUF \(type.name), city96 names): "
                  + "\(result.tensorsWritten) tensors (\(types.map { "\($0.value) \($0.key)" }.joined(separator: ", "))), "
                  + "\(result.fileBytes) bytes, \(centis / 100).\(centis % 100 < 10 ? "0" : "")\(centis % 100) s")
        }
    }

    /// The one-line summary printed on success.
    static func summary(_ r: ConversionResult, input: String, output: String) -> String {
        let dtypes = r.tensorsByDType.sorted { $0.key.alignmentRank > $1.key.alignmentRank }
            .map { "\($0.value) \($0.key.rawValue)" }.joined(separator: ", ")
        var line = "converted \(input) (\(r.architecture), \(r.sourceLayout.rawValue)) to \(output) "
            + "(\(r.targetLayout.rawValue)): \(r.tensorsWritten) tensors (\(dtypes)), \(r.dataBytes) bytes of data"
        if r.outputPaths.count > 1 { line += ", \(r.outputPaths.count) files" }
        if r.report.saturated > 0 { line += ", \(r.report.saturated) values saturated" }
        if r.report.nanReplaced > 0 { line += ", \(r.report.nanReplaced) NaNs replaced" }
        if r.report.unrepresentable > 0 { line += ", \(r.report.unrepresentable) values unrepresentable" }
        let centis = Int((r.elapsedSeconds * 100).rounded())
        return line + ", \(centis / 100).\(centis % 100 < 10 ? "0" : "")\(centis % 100) s"
    }

    /// The `--json` object.
    static func json(_ r: ConversionResult, input: String, output: String) -> JSONValue {
        let dtypes = r.tensorsByDType.sorted { $0.key.alignmentRank > $1.key.alignmentRank }
            .map { (key: $0.key.rawValue, value: JSONValue.int(Int64($0.value))) }
        return .object([
            ("input", .string(input)),
            ("output", .string(output)),
            ("architecture", .string(r.architecture)),
            ("source_layout", .string(r.sourceLayout.rawValue)),
            ("target_layout", .string(r.targetLayout.rawValue)),
            ("tensor_count", .int(Int64(r.tensorsWritten))),
            ("tensors_by_dtype", .object(dtypes)),
            ("data_bytes", .int(Int64(r.dataBytes))),
            ("file_bytes", .int(Int64(r.fileBytes))),
            ("saturated_count", .int(Int64(r.report.saturated))),
            ("nan_replaced_count", .int(Int64(r.report.nanReplaced))),
            ("unrepresentable_count", .int(Int64(r.report.unrepresentable))),
            ("files", .array(r.outputPaths.map { .string($0) })),
            ("elapsed_seconds", .double(r.elapsedSeconds)),
        ])
    }
}

/// `convert --dtype`: a float dtype for safetensors outputs, or a GGUF type for `.gguf` outputs.
struct ConvertDType: ExpressibleByArgument {
    /// As typed.
    let text: String
    /// The safetensors dtype it names, if any.
    let float: OutputDType?
    /// The GGUF type it names, if one FlowGuard writes.
    let gguf: GGUFType?

    init?(argument: String) {
        text = argument
        float = OutputDType(argument: argument)
        let lower = argument.lowercased()
        let aliases = ["fp32": "f32", "float32": "f32", "fp16": "f16", "float16": "f16", "half": "f16", "bfloat16": "bf16"]
        let name = aliases[lower] ?? lower
        gguf = GGUFType(name: name).flatMap { Converter.ggufOutputTypes.contains($0) ? $0 : nil }
        if float == nil && gguf == nil { return nil }
    }

    /// Refuses a type the output's container cannot hold: a GGUF block type for a safetensors
    /// output, a float dtype GGUF has no type for (fp8) for a `.gguf` output.
    func check(writingGGUF: Bool) throws {
        if writingGGUF, gguf == nil {
            throw ValidationError("--dtype \(text) cannot be written to GGUF; choose one of "
                                  + Converter.ggufOutputTypes.map { $0.name.lowercased() }.joined(separator: ", ") + ".")
        }
        if !writingGGUF, float == nil {
            throw ValidationError("--dtype \(text) is a GGUF block type: it is written only to a .gguf output.")
        }
    }

    /// The float dtypes, then the GGUF block types.
    static var allValueStrings: [String] {
        OutputDType.allValueStrings + Converter.ggufOutputTypes.filter(\.isBlockQuantized).map { $0.name.lowercased() }
    }
}
