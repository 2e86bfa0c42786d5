import ArgumentParser
import Checkpoints
import Foundation
import JSON
import LoRA
import SafeTensors

/// `flowguard lora convert`: rewrite an adapter in another dialect, converting names exactly.
struct LoRAConvert: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "convert",
        abstract: "Convert a LoRA adapter between PEFT, diffusers, kohya and ComfyUI formats (XLabs is read too).",
        discussion: """
        IN is a .safetensors file in any dialect or a PEFT folder. OUT is a folder for --to peft (adapter_config.json + adapter_model.safetensors) and a .safetensors file otherwise; every file appears atomically.

        PEFT and diffusers use diffusers module names; kohya and ComfyUI use the original (SAI/BFL) names. Between them the adapter is converted exactly: a LoRA on a fused qkv (or FLUX linear1) becomes LoRAs sharing A with B split by rows; split LoRAs are fused with stacked A and a block-diagonal B (their scales folded into B); modulation halves are swapped in B's rows. ΔW of every base weight is unchanged.

        The base architecture names the modules: from --base (a checkpoint in either layout) or --config (a diffusers transformer config.json). Without either it is inferred from the adapter's shapes (width from the attention projections, depth from the highest block index), and a note says so.

        Examples:
          flowguard lora convert pytorch_lora_weights.safetensors \\
              lora_kohya.safetensors --to kohya --base sd3.5_medium.safetensors
          flowguard lora convert kohya_flux.safetensors peft_adapter --to peft \\
              --config transformer/config.json
          flowguard lora convert adapter/ comfy.safetensors --to comfy --json
        """
    )

    @Argument(help: "Adapter to convert: a .safetensors file or a PEFT folder.")
    var input: String

    @Argument(help: "Output: a folder for peft, a .safetensors file otherwise.")
    var output: String

    @Option(name: .customLong("to"), help: ArgumentHelp("Output format.", valueName: "format"))
    var format: LoRAFormat

    @Option(help: "Base checkpoint (either layout) whose architecture names the modules.")
    var base: String?

    @Option(help: "diffusers transformer config.json describing the base architecture.")
    var config: String?

    @Option(help: "Dtype of the factors written (α stays float32).")
    var dtype: AdapterDType = .fp32

    @OptionGroup var overwrite: OutputOptions

    @OptionGroup var style: JSONOutput

    @OptionGroup var log: LogOptions

    func validate() throws {
        if base != nil && config != nil { throw ValidationError("Give --base or --config, not both.") }
        try LoRAConvert.checkOutput(output, format: format, overwrite: overwrite)
    }

    /// The usage checks of an adapter output: `--to peft` writes a folder, so a name ending in
    /// `.safetensors` is refused (with the folder name to use instead); an existing output
    /// needs `--force`.
    static func checkOutput(_ output: String, format: LoRAFormat, overwrite: OutputOptions) throws {
        if format == .peft && output.hasSuffix(".safetensors") {
            let folder = String(output.dropLast(".safetensors".count))
            throw ValidationError("--to peft writes a folder (adapter_config.json + adapter_model.safetensors), not a .safetensors file: "
                                  + "give a folder name such as '\(folder.isEmpty ? "adapter" : folder)'.")
        }
        try overwrite.check(output, writes: format == .peft ? .folder : .file)
    }

    func run() throws {
        var architecture = try Architecture.given(base: base, config: config)
        let read = try LoRAReader.load(path: input, architecture: architecture)
        let adapter = read.adapter
        var notes: [String] = []
        if architecture == nil {
            let inferred = try adapter.inferredArchitecture()
            architecture = inferred.architecture
            notes = inferred.notes + ["give --base or --config to name the base model exactly"]
            if !style.json { for n in notes { log.note("note: " + n) } }
        }
        for n in read.nonFinite where !style.json {
            printError("warning: \(n.key): \(n.nanCount) NaN, \(n.infCount) Inf (copied unchanged)")
        }
        let converted = try adapter.converted(to: LoRAWriter.layout(of: format), architecture: architecture!)
        // Written from the adapter as read, so the writer knows which modules it fuses (named in
        // kohya and ComfyUI metadata).
        try LoRAWriter.write(adapter, format: format, to: output, architecture: architecture, dtype: dtype.dtype)
        if style.json {
            print(JSONValue.object([
                ("input", .string(input)), ("output", .string(output)),
                ("source_format", .string(adapter.format.rawValue)), ("target_format", .string(format.rawValue)),
                ("source_layout", .string(adapter.layout.rawValue)), ("target_layout", .string(converted.layout.rawValue)),
                ("architecture", .string(architecture!.name)),
                ("architecture_inferred", .bool(!notes.isEmpty)),
                ("source_module_count", .int(Int64(adapter.modules.count))), ("target_module_count", .int(Int64(converted.modules.count))),
                ("nan_count", .int(Int64(read.nonFinite.reduce(0) { $0 + $1.nanCount }))),
                ("inf_count", .int(Int64(read.nonFinite.reduce(0) { $0 + $1.infCount }))),
                ("notes", .array(notes.map { .string($0) })),
            ]).compactText)
        } else {
            print("converted \(input) (\(adapter.format.displayName), \(adapter.layout.rawValue) layout, \(adapter.modules.count) modules) "
                  + "to \(output) (\(format.displayName), \(converted.layout.rawValue) layout, \(converted.modules.count) modules) for \(architecture!.name)")
        }
    }
}
