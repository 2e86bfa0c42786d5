import ArgumentParser
import Checkpoints
import Foundation
import JSON
import LoRA
import SafeTensors
import SystemSupport

/// `flowguard lora merge`: bake an adapter into a base checkpoint (or take it out again).
struct LoRAMergeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "merge",
        abstract: "Merge a LoRA adapter into a base checkpoint: W' = W + scale·ΔW.",
        discussion: """
        BASE is a transformer checkpoint in either layout (a .safetensors file, a shard index or a diffusers model folder). ADAPTER is a .safetensors file in any dialect (PEFT/diffusers, kohya, ComfyUI, OneTrainer, LyCORIS LoKr/LoHa, DoRA, XLabs, BFL Control, fal Kontext) or a PEFT folder; its modules may be named in either layout: a diffusers-named to_k lands in the rows of a fused qkv, a fused qkv adapter splits into to_q/to_k/to_v, and modulation halves are swapped where the layouts differ.

        OUT is a single .safetensors file in the base's layout; when BASE is a model folder and OUT does not end in .safetensors, OUT is a diffusers folder (diffusion_pytorch_model.safetensors and the base's config.json); OUT ending in .gguf is a GGUF file holding the merged transformer (city96 names; the base's GGUF type, or --dtype: f32, f16, bf16, q8_0, q4_0, q4_1, q5_0 or q5_1, by city96's rule), the delta added to each block of base rows on its way to the quantizer. Tensors without a delta are copied unchanged; merged tensors are computed in float32 and written back in their own dtype, or in --dtype (which then applies to every floating-point tensor of the transformer; the other components of an all-in-one file are copied byte for byte). Streamed: blocks of a base tensor's rows are merged on --threads threads (default: all processors), a few blocks in memory at a time. The output appears only when complete.

        --unmerge subtracts the delta instead (undoing an earlier merge with the same scale).

        Examples:
          flowguard lora merge sd3.5_medium.safetensors my_lora.safetensors \\
              merged.safetensors
          flowguard lora merge transformer/ pytorch_lora_weights.safetensors \\
              merged.safetensors --scale 0.8 --dtype bf16
          flowguard lora merge merged.safetensors my_lora.safetensors \\
              restored.safetensors --unmerge
        """
    )

    @Argument(help: "Base checkpoint: a .safetensors file, a shard index or a model folder.")
    var base: String

    @Argument(help: "Adapter: a .safetensors file in any dialect or a PEFT folder.")
    var adapter: String

    @Argument(help: "Output .safetensors file (or folder, for a folder base), or .gguf file.")
    var output: String

    @Option(parsing: .unconditional, help: "Multiplier of the adapter's delta (on top of its own α/r); may be negative.")
    var scale: Float = 1

    @Option(help: "Dtype of floating-point tensors in the output (default: each keeps its own); a GGUF type for a .gguf output.")
    var dtype: ConvertDType?

    @Flag(help: "Subtract the delta instead of adding it.")
    var unmerge = false

    @OptionGroup var compute: ThreadOptions

    @OptionGroup var overwrite: OutputOptions

    @OptionGroup var style: JSONOutput

    @OptionGroup var log: LogOptions

    func validate() throws {
        guard scale.isFinite else { throw ValidationError("--scale must be a finite number.") }
        let baseIsFolder = FileSystem.isFolder(base)
        try dtype?.check(writingGGUF: output.lowercased().hasSuffix(".gguf"))
        try overwrite.check(output, writes: baseIsFolder && !output.hasSuffix(".safetensors") ? .folder : .file)
    }

    func run() throws {
        let collection = try TensorCollection.checkpoint(base)
        for note in collection.notes { log.note("note: \(note)") }
        let detected = try Architecture.detect(collection.transformerOnly().infos)
        let toGGUF = output.lowercased().hasSuffix(".gguf")
        if let components = AllInOne.components(collection.infos) {
            if toGGUF {
                log.note("note: \(AllInOne.leftOutNote(base, components)); a GGUF output holds the merged transformer only")
            } else {
                log.note("note: \(base) is an all-in-one checkpoint: merging into its transformer; every other component is copied byte for byte")
            }
        }
        let lora = try LoRAReader.load(path: adapter, architecture: detected.architecture, rejectNonFinite: true).adapter
        if !lora.textEncoderModules.isEmpty && !(lora.modules.isEmpty && lora.deltas.isEmpty) {
            let parts = lora.components.filter { $0 != "transformer" }.joined(separator: ", ")
            printError("note: \(adapter): \(lora.textEncoderModules.count) text-encoder module\(lora.textEncoderModules.count == 1 ? "" : "s") (\(parts)) left out: a transformer merge applies the transformer part only")
        }
        if toGGUF {
            let type = Self.ggufType(for: collection, requested: dtype?.gguf)
            let progress = log.progress("merging into \(base) (GGUF \(type.name))", total: collection.dataBytes)
            let (report, written) = try LoRAMerge.mergeToGGUF(base: collection, adapter: lora, scale: scale, unmerge: unmerge, output: output,
                                                              type: type, threads: compute.count(default: SystemInfo.activeProcessors)) { done, total in
                progress?.update(Int(Double(done) / Double(max(total, 1)) * Double(collection.dataBytes)))
            }
            progress?.finish()
            if style.json {
                guard case var .object(members) = Self.json(report, base: base, adapter: adapter, format: lora.format) else { return }
                members.append(("container", .string("gguf")))
                members.append(("gguf_type", .string(type.name)))
                members.append(("tensors_by_type", .object(written.tensorsByType.sorted { $0.key < $1.key }.map { ($0.key, .int(Int64($0.value))) })))
                print(JSONValue.object(members).compactText)
            } else {
                print(Self.summary(report, base: base, adapter: adapter, format: lora.format)
                    .replacingOccurrences(of: report.outputPath, with: "\(output) (GGUF \(type.name), \(written.tensorsWritten) tensors)"))
            }
            return
        }
        let progress = log.progress("merging into \(base)", total: collection.dataBytes)
        let report = try LoRAMerge.merge(base: collection, adapter: lora, scale: scale, output: output, dtype: dtype?.float?.dtype,
                                         unmerge: unmerge, threads: compute.count(default: SystemInfo.activeProcessors)) { done, _ in progress?.update(done) }
        progress?.finish()
        if style.json {
            print(Self.json(report, base: base, adapter: adapter, format: lora.format).compactText)
        } else {
            print(Self.summary(report, base: base, adapter: adapter, format: lora.format))
        }
    }

    /// The one-line summary printed on success.
    static func summary(_ r: MergeReport, base: String, adapter: String, format: LoRAFormat) -> String {
        var line = "\(r.unmerged ? "unmerged" : "merged") \(adapter) (\(format.rawValue), \(r.modulesMerged) modules, "
            + "\(r.adapterLayout.rawValue) names) \(r.unmerged ? "from" : "into") \(base) (\(r.architecture), \(r.baseLayout.rawValue)) "
            + "at scale \(r.scale): \(r.touchedTensors.count) of \(r.tensorsWritten) tensors changed, written to \(r.outputPath)"
        if r.conversion.saturated > 0 { line += ", \(r.conversion.saturated) values saturated" }
        if r.conversion.nanReplaced > 0 { line += ", \(r.conversion.nanReplaced) NaNs replaced" }
        return line
    }

    /// The `--json` object.
    static func json(_ r: MergeReport, base: String, adapter: String, format: LoRAFormat) -> JSONValue {
        .object([
            ("base", .string(base)),
            ("adapter", .string(adapter)),
            ("adapter_format", .string(format.rawValue)),
            ("adapter_layout", .string(r.adapterLayout.rawValue)),
            ("output", .string(r.outputPath)),
            ("files", .array(r.outputFiles.map { .string($0) })),
            ("architecture", .string(r.architecture)),
            ("layout", .string(r.baseLayout.rawValue)),
            ("scale", .double(Double(r.scale))),
            ("unmerge", .bool(r.unmerged)),
            ("module_count", .int(Int64(r.modulesMerged))),
            ("kinds", .array(r.kinds.map { .string($0) })),
            ("skipped_text_encoder_module_count", .int(Int64(r.textEncoderModulesSkipped))),
            ("tensor_count", .int(Int64(r.tensorsWritten))),
            ("changed_tensors", .array(r.touchedTensors.map { .string($0) })),
            ("data_bytes", .int(Int64(r.dataBytes))),
            ("saturated_count", .int(Int64(r.conversion.saturated))),
            ("nan_replaced_count", .int(Int64(r.conversion.nanReplaced))),
            ("elapsed_seconds", .double(r.elapsedSeconds)),
        ])
    }
}
