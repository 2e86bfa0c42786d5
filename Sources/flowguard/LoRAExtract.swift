import ArgumentParser
import Checkpoints
import JSON
import LoRA
import SafeTensors
import SystemSupport

/// `flowguard lora extract`: a low-rank adapter from the difference of two checkpoints.
struct LoRAExtractCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "extract",
        abstract: "Extract a rank-R LoRA adapter from the difference between a fine-tuned checkpoint and its base.",
        discussion: """
        BASE and TUNED must be the same architecture in the same key layout (convert one first if not). For every linear weight that differs, D = TUNED − BASE is factored by a truncated SVD: B = U·√S, A = √S·Vᵀ with α = rank, so ΔW = B·A is the best rank-R approximation of D. The rank is capped at min(out, in) per module. Changes to biases, norms and other non-linear tensors cannot be expressed as a LoRA and are listed.

        OUT is written in the --to dialect (default diffusers: a pytorch_lora_weights-style file; peft: a folder). For an original-layout format (kohya, comfy) from diffusers checkpoints, or the reverse, D is assembled in that layout's modules (fused qkv, FLUX linear1) before factoring.

        For each module the captured energy Σ_{i<R} s_i² / Σ s_i² and the relative Frobenius error ‖D − B·A‖/‖D‖ are printed.

        Examples:
          flowguard lora extract sd3.5_medium.safetensors finetuned.safetensors \\
              lora.safetensors --rank 32
          flowguard lora extract base/ tuned/ adapter --rank 16 --to peft --json
          flowguard lora extract flux1-dev.safetensors flux-tuned.safetensors \\
              lora_kohya.safetensors --rank 64 --to kohya
        """
    )

    @Argument(help: "Base checkpoint: a .safetensors file, a shard index or a model folder.")
    var base: String

    @Argument(help: "Fine-tuned checkpoint of the same model and layout.")
    var tuned: String

    @Argument(help: "Output adapter: a .safetensors file, or a folder for --to peft.")
    var output: String

    @Option(help: "Rank of the extracted adapter (capped at min(out, in) per module).")
    var rank: Int

    @Option(name: .customLong("to"), help: ArgumentHelp("Adapter dialect.", valueName: "format"))
    var format: LoRAFormat = .diffusers

    @Option(help: "Dtype of the factors written (α stays float32).")
    var dtype: AdapterDType = .fp32

    @OptionGroup var overwrite: OutputOptions

    @OptionGroup var style: JSONOutput

    @OptionGroup var log: LogOptions

    func validate() throws {
        guard rank >= 1 else { throw ValidationError("--rank must be at least 1, not \(rank).") }
        try LoRAConvert.checkOutput(output, format: format, overwrite: overwrite)
    }

    func run() throws {
        do {
            if format == .peft { try AtomicFolder.checkWritable(output) } else { try AtomicFile.checkWritable(output) }
        } catch { throw SafeTensorsError.system(error) }
        let baseCollection = try TensorCollection.transformerCheckpoint(base)
        let tunedCollection = try TensorCollection.transformerCheckpoint(tuned)
        let progress = log.progress("extracting", total: 1)
        var (adapter, report) = try LoRAExtract.extract(base: baseCollection, tuned: tunedCollection, rank: rank,
                                                        naming: LoRAWriter.layout(of: format)) { done, total in
            progress?.update(done * 1_000_000 / max(total, 1))
        }
        progress?.finish()
        if adapter.modules.isEmpty {
            throw CommandFailure(message: "error: \(base) and \(tuned) have no differing linear weights: nothing to extract.")
        }
        adapter.format = format
        let architecture = try Architecture.detect(baseCollection.infos).architecture
        try LoRAWriter.write(adapter, format: format, to: output, architecture: architecture, dtype: dtype.dtype)
        if style.json {
            print(Self.json(report, base: base, tuned: tuned, output: output, format: format).compactText)
        } else {
            print(Self.text(report, base: base, tuned: tuned, output: output, format: format), terminator: "")
        }
    }

    /// The table printed on success.
    static func text(_ r: ExtractReport, base: String, tuned: String, output: String, format: LoRAFormat) -> String {
        var out = "extracted \(r.modules.count) modules at rank \(r.requestedRank) from \(tuned) − \(base) "
            + "(\(r.architecture), \(r.checkpointLayout.rawValue)) to \(output) (\(format.rawValue))\n"
        let width = max(6, r.modules.map(\.name.count).max() ?? 0)
        func pad(_ s: String, _ n: Int) -> String { s + String(repeating: " ", count: max(0, n - s.count)) }
        func fixed(_ x: Double, _ digits: Int) -> String {
            let p = (0..<digits).reduce(1.0) { r, _ in r * 10 }
            let v = (x * p).rounded() / p
            var s = "\(v)"
            if let dot = s.firstIndex(of: "."), s.distance(from: dot, to: s.endIndex) - 1 < digits {
                s += String(repeating: "0", count: digits - s.distance(from: dot, to: s.endIndex) + 1)
            }
            return s
        }
        out += "  \(pad("module", width))  rank  shape        energy    rel. error\n"
        for m in r.modules {
            out += "  \(pad(m.name, width))  \(pad(String(m.rank), 4))  \(pad("[\(m.outFeatures), \(m.inFeatures)]", 11))  "
                + "\(pad(fixed(m.capturedEnergy, 6), 8))  \(fixed(m.relativeError, 6))\n"
        }
        out += "  energy captured overall: \(fixed(r.totalCapturedEnergy, 6)); \(r.unchangedModules) unchanged linear weights skipped\n"
        if !r.otherChangedTensors.isEmpty {
            out += "  not expressible as LoRA (changed, left out): \(r.otherChangedTensors.map { escapeForDisplay($0) }.joined(separator: ", "))\n"
        }
        return out
    }

    /// The `--json` object.
    static func json(_ r: ExtractReport, base: String, tuned: String, output: String, format: LoRAFormat) -> JSONValue {
        .object([
            ("base", .string(base)),
            ("tuned", .string(tuned)),
            ("output", .string(output)),
            ("format", .string(format.rawValue)),
            ("architecture", .string(r.architecture)),
            ("layout", .string(r.checkpointLayout.rawValue)),
            ("naming", .string(r.naming.rawValue)),
            ("rank", .int(Int64(r.requestedRank))),
            ("captured_energy", .double(r.totalCapturedEnergy)),
            ("unchanged_module_count", .int(Int64(r.unchangedModules))),
            ("other_changed_tensors", .array(r.otherChangedTensors.map { .string($0) })),
            ("modules", .array(r.modules.map { m in
                .object([
                    ("name", .string(m.name)),
                    ("rank", .int(Int64(m.rank))),
                    ("shape", .array([.int(Int64(m.outFeatures)), .int(Int64(m.inFeatures))])),
                    ("captured_energy", .double(m.capturedEnergy)),
                    ("frobenius_error", .double(m.frobeniusError)),
                    ("relative_error", .double(m.relativeError)),
                    ("delta_norm", .double(m.deltaNorm)),
                ])
            })),
            ("elapsed_seconds", .double(r.elapsedSeconds)),
        ])
    }
}
