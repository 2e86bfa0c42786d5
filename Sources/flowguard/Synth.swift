import ArgumentParser
import Checkpoints
import JSON
import SafeTensors
import SystemSupport

/// `flowguard synth`: write a full-size checkpoint of random values with a real model's names and shapes.
struct Synth: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write a synthetic checkpoint: a real model's tensor names and shapes, random values.",
        discussion: """
        The names and shapes are exactly those of the published transformer (SD3.5 Medium: 665 original / 909 diffusers tensors; FLUX.1-dev: 780 / 1160). Values are seeded random numbers with standard deviation --scale (approximately normal, or uniform), generated and written in bounded memory at about disk speed, so a 24 GB FLUX file needs no download. The same seed gives the same values in both layouts (diff --map-layouts finds them identical).

        --layout original writes OUT as one .safetensors file (SD3 keys under model.diffusion_model.). --layout diffusers writes OUT as a folder holding diffusion_pytorch_model.safetensors (shards of at most 10 GB plus an index when larger) and config.json. --like FILE copies the architecture of an existing checkpoint instead of naming a --variant (handy for small test models).

        Examples:
          flowguard synth --variant flux-dev --layout original --dtype bf16 \\
              flux1-dev-random.safetensors
          flowguard synth --variant sd3.5-medium --layout diffusers --dtype fp16 \\
              --seed 7 transformer/
          flowguard synth --like tiny.safetensors --layout original --dtype f8_e4m3 \\
              --json tiny-random.safetensors
        """
    )

    @Option(help: "Published model to imitate.")
    var variant: Variant?

    @Option(help: "Copy the architecture detected in this checkpoint instead of a --variant.")
    var like: String?

    @Option(help: "Key layout of the output: original writes one file, diffusers a folder.")
    var layout: KeyLayout

    @Option(help: "Dtype of every tensor.")
    var dtype: OutputDType

    @Option(help: "Seed of the random values.")
    var seed: UInt64 = 0

    @Option(parsing: .unconditional, help: "Standard deviation of the values.")
    var scale: Float = 0.02

    @Option(help: "Distribution of the values (normal is approximate, bounded at ±3.46·scale).")
    var distribution: SyntheticOptions.Distribution = .normal

    @OptionGroup var overwrite: OutputOptions

    @OptionGroup var style: JSONOutput

    @OptionGroup var log: LogOptions

    @Argument(help: "Output .safetensors file (original layout) or folder (diffusers layout).")
    var output: String

    /// The published models `--variant` names.
    enum Variant: String, CaseIterable, ExpressibleByArgument {
        case sd35Medium = "sd3.5-medium", sd35Large = "sd3.5-large", sd3Medium = "sd3-medium"
        case flux1Dev = "flux-dev", flux1Schnell = "flux-schnell", flux1Fill = "flux-fill", flux1Depth = "flux-depth"

        init?(argument: String) {
            self.init(rawValue: argument.lowercased())
        }

        /// The model's sizes.
        var known: KnownVariant {
            switch self {
            case .sd35Medium: return .sd35Medium
            case .sd35Large: return .sd35Large
            case .sd3Medium: return .sd3Medium
            case .flux1Dev: return .flux1Dev
            case .flux1Schnell: return .flux1Schnell
            case .flux1Fill: return .flux1Fill
            case .flux1Depth: return .flux1Depth
            }
        }
    }

    func validate() throws {
        guard (variant == nil) != (like == nil) else {
            throw ValidationError("Give exactly one of --variant and --like.")
        }
        guard scale.isFinite, scale >= 0 else {
            throw ValidationError("--scale must be a finite number >= 0, not \(scale).")
        }
        try overwrite.check(output, writes: layout == .diffusers ? .folder : .file)
    }

    func run() throws {
        let architecture = try like.map(Architecture.init(checkpointAt:)) ?? Architecture(variant!.known)
        let dtype = self.dtype.dtype
        let total = SyntheticWriter.specs(architecture, layout: layout, dtype: dtype).reduce(0) { $0 + ($1.byteCount ?? 0) }
        let progress = log.progress("writing \(output)", total: total)
        let start = monotonicSeconds()
        let result = try SyntheticWriter.write(
            architecture: architecture, layout: layout, dtype: dtype, to: output,
            options: SyntheticOptions(seed: seed, scale: scale, distribution: distribution)) { done, _ in progress?.update(done) }
        progress?.finish()
        let seconds = monotonicSeconds() - start
        if style.json {
            print(JSONValue.object([
                ("architecture", .string(result.architecture)), ("layout", .string(result.layout.rawValue)),
                ("dtype", .string(result.dtype.rawValue)), ("seed", .uint(seed)), ("scale", .double(Double(scale))),
                ("distribution", .string(distribution.rawValue)),
                ("tensor_count", .int(Int64(result.tensorCount))), ("parameter_count", .int(Int64(result.parameterCount))),
                ("data_bytes", .int(Int64(result.dataBytes))), ("saturated_count", .int(Int64(result.report.saturated))),
                ("files", .array(result.paths.map { .string($0) })), ("elapsed_seconds", .double(seconds)),
            ]).compactText)
        } else {
            print("wrote \(result.architecture) (\(result.layout.rawValue) layout, \(result.dtype.rawValue)): "
                  + "\(formatCount(result.tensorCount)) tensors, \(formatCount(result.parameterCount)) parameters, "
                  + "\(formatBytes(result.dataBytes)) in \(StatsReport.number(seconds)) s")
            for path in result.paths { print("  \(path)") }
            if result.report.saturated > 0 {
                print("  note: \(formatCount(result.report.saturated)) values saturated at the \(result.dtype.rawValue) range")
            }
        }
    }
}
