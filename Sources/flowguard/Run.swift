import ArgumentParser
import Foundation
import JSON
import SafeTensors
import Transformers

/// `flowguard run`: one forward pass of the transformer, from files to a file.
struct Run: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Run the transformer forward once (SD3.5-style MMDiT or FLUX) on the CPU.",
        discussion: """
        MODEL is a checkpoint in either layout (a .safetensors file, a shard index or a diffusers model folder), in any float dtype; bf16 weights stay bf16 in memory. --config is a diffusers config.json, needed only when the weights leave something open (a folder's own config.json is used when present).

        INPUTS is a safetensors file holding the forward arguments, named and scaled exactly as diffusers' forward takes them:
          SD3:  hidden_states [B,C,H,W], encoder_hidden_states [B,T,joint],
                pooled_projections [B,P], timestep [B] (0..1000)
          FLUX: hidden_states [B,N,C] (packed latents), encoder_hidden_states [B,T,joint],
                pooled_projections [B,P], timestep [B] (σ in 0..1; the model multiplies
                by 1000), img_ids [N,3], txt_ids [T,3], guidance [B]
        Other tensors in the file are ignored. Any float or integer dtype is read as float32.

        The result is written as the float32 tensor "output" (diffusers' .sample) of OUT, atomically.

        --lora may be given several times; each --lora-scale applies to the --lora at the same position (default 1, on top of the adapter's own α/r).

        Examples:
          flowguard run --model sd3.5_medium.safetensors --inputs io.safetensors \\
              --output out.safetensors
          flowguard run --model transformer/ --inputs io.safetensors \\
              --output out.safetensors --lora my_lora.safetensors --lora-scale 0.8
          flowguard run --model flux1-dev.safetensors --config config.json \\
              --inputs io.safetensors --output out.safetensors --threads 8 --json
        """
    )

    @Option(help: "The transformer checkpoint (file, shard index or folder).")
    var model: String

    @Option(help: "A diffusers config.json for the model (optional).")
    var config: String?

    @Option(help: "Safetensors file with the forward inputs.")
    var inputs: String

    @Option(help: "Output .safetensors file (tensor \"output\").")
    var output: String

    @Option(help: "An adapter to apply (any dialect, or a PEFT folder); repeatable.")
    var lora: [String] = []

    @Option(name: .customLong("lora-scale"), parsing: .unconditionalSingleValue,
            help: "Multiplier for the adapter at the same position (may be negative); repeatable.")
    var loraScale: [Float] = []

    @OptionGroup var compute: ThreadOptions

    @OptionGroup var overwrite: OutputOptions

    @OptionGroup var style: JSONOutput

    @OptionGroup var log: LogOptions

    func validate() throws {
        guard loraScale.count <= lora.count else {
            throw ValidationError("--lora-scale was given \(loraScale.count) times but --lora only \(lora.count) times.")
        }
        guard loraScale.allSatisfy(\.isFinite) else { throw ValidationError("--lora-scale must be a finite number.") }
        try overwrite.check(output, writes: .file)
    }

    func run() throws {
        let adapters = lora.enumerated().map { index, path in
            ForwardRun.Adapter(path: path, scale: index < loraScale.count ? loraScale[index] : 1)
        }
        let request = ForwardRun(modelPath: model, configPath: config, inputsPath: inputs, outputPath: output,
                                 adapters: adapters, threads: compute.count(default: 1))
        let stages = log.stages()
        let report: ForwardRunReport
        do {
            defer { stages.finish() }
            report = try request.run(progress: { stages.stage($0) }, note: { log.note("note: " + $0) })
        }
        if style.json {
            print(Self.json(report).compactText)
        } else {
            print(Self.summary(report))
        }
    }

    /// The human summary printed on success.
    static func summary(_ r: ForwardRunReport) -> String {
        var lines = ["\(r.architecture) (\(r.layout) layout): output \(r.outputShape) written to \(r.outputPath)"]
        let inputs = r.inputs.map { "\($0.name) \($0.shape)" }.joined(separator: ", ")
        lines.append("  inputs: \(inputs)")
        for a in r.adapters { lines.append("  adapter: \(a.path) at scale \(a.scale) (\(a.modules) modules)") }
        lines.append("  load \(formatSeconds(r.loadSeconds)), forward \(formatSeconds(r.forwardSeconds))")
        if r.nonFiniteOutputs > 0 { lines.append("  warning: \(r.nonFiniteOutputs) output values are NaN or infinite") }
        return lines.joined(separator: "\n")
    }

    /// The `--json` object.
    static func json(_ r: ForwardRunReport) -> JSONValue {
        .object([
            ("architecture", .string(r.architecture)),
            ("family", .string(r.family)),
            ("layout", .string(r.layout)),
            ("inputs", .object(r.inputs.map { ($0.name, .array($0.shape.map { .int(Int64($0)) })) })),
            ("adapters", .array(r.adapters.map {
                .object([("path", .string($0.path)), ("scale", .double(Double($0.scale))), ("module_count", .int(Int64($0.modules)))])
            })),
            ("output", .string(r.outputPath)),
            ("output_shape", .array(r.outputShape.map { .int(Int64($0)) })),
            ("non_finite_outputs", .int(Int64(r.nonFiniteOutputs))),
            ("load_seconds", .double(r.loadSeconds)),
            ("forward_seconds", .double(r.forwardSeconds)),
        ])
    }

    private static func formatSeconds(_ s: Double) -> String {
        s < 1 ? "\(Int((s * 1000).rounded())) ms" : String(format: "%.2f s", s)
    }
}
