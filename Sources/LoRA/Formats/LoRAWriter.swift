import Checkpoints
import Foundation
import SafeTensors

/// Writes adapters as PEFT folders, diffusers files, kohya files or ComfyUI files.
public enum LoRAWriter {
    /// The key layout a format's names use.
    public static func layout(of format: LoRAFormat) -> KeyLayout {
        format == .peft || format == .diffusers ? .diffusers : .original
    }

    /// Writes `adapter` as `format` at `path` (a folder for PEFT, a file otherwise), atomically per
    /// file. When the adapter's naming differs from the format's, `architecture` is needed to
    /// convert it exactly (see `LoRAAdapter.converted(to:architecture:)`).
    /// Factors are written in `dtype` (float32, bf16 or fp16; kohya α stays float32). Modules
    /// fused from split LoRAs (block-diagonal B) are named in the metadata of kohya and ComfyUI files.
    public static func write(_ adapter: LoRAAdapter, format: LoRAFormat, to path: String,
                             architecture: Architecture? = nil, dtype: DType = .f32) throws {
        guard [.f32, .bf16, .f16].contains(dtype) else {
            throw LoRAError.unsupportedFormat(format: format, reason: "adapters are written as F32, BF16 or F16, not \(dtype.rawValue)")
        }
        var a = adapter
        let target = layout(of: format)
        var fused: [FusedModule] = []
        if let architecture {
            fused = try adapter.fusedModules(to: target, architecture: architecture)
            a = try adapter.converted(to: target, architecture: architecture)
        } else if adapter.layout != target {
            let inferred = try adapter.inferredArchitecture().architecture
            fused = try adapter.fusedModules(to: target, architecture: inferred)
            a = try adapter.converted(to: target, architecture: inferred)
        }
        a.format = format
        switch format {
        case .peft, .diffusers: try PEFTDialect.write(a, format: format, to: path, dtype: dtype)
        case .kohya, .comfy: try OriginalDialect.write(a, format: format, to: path, dtype: dtype, fused: fused)
        case .xlabs: throw LoRAError.unsupportedFormat(format: .xlabs, reason: "XLabs adapters are read only")
        }
    }
}
