import Checkpoints
import Foundation

/// Writes adapters as PEFT folders, diffusers files, kohya files or ComfyUI files.
public enum LoRAWriter {
    /// The key layout a format's names use.
    public static func layout(of format: LoRAFormat) -> KeyLayout {
        format == .peft || format == .diffusers ? .diffusers : .original
    }

    /// Writes `adapter` as `format` at `path` (a folder for PEFT, a file otherwise), atomically per
    /// file. When the adapter's naming differs from the format's, `architecture` is needed to
    /// convert it exactly (see `LoRAAdapter.converted(to:architecture:)`).
    public static func write(_ adapter: LoRAAdapter, format: LoRAFormat, to path: String,
                             architecture: Architecture? = nil) throws {
        var a = adapter
        let target = layout(of: format)
        if adapter.modules.isEmpty && adapter.deltas.isEmpty {
            a.layout = target  // text encoders only: nothing is named in a transformer layout
        } else if let architecture {
            a = try adapter.converted(to: target, architecture: architecture)
        } else if adapter.layout != target {
            let inferred = try adapter.inferredArchitecture().architecture
            a = try adapter.converted(to: target, architecture: inferred)
        }
        a.format = format
        if !a.isLowRankOnly {
            throw LoRAError.needsOption(file: adapter.sourceFile.isEmpty ? "adapter" : adapter.sourceFile,
                                        reason: "it holds \(a.kinds.filter { $0 != "lora" }.joined(separator: ", ")) deltas, which a \(format.displayName) LoRA cannot hold exactly; give --rank R to write a truncated-SVD LoRA of each module's delta (with --base for DoRA)")
        }
        switch format {
        case .peft, .diffusers: try PEFTDialect.write(a, format: format, to: path)
        case .kohya, .comfy: try OriginalDialect.write(a, format: format, to: path)
        case .xlabs, .onetrainer, .lycoris, .bflControl, .falKontext:
            throw LoRAError.unsupportedFormat(format: format, reason: "\(format.displayName) adapters are read only")
        }
    }
}
