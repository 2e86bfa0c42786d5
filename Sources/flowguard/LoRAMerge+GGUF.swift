import Checkpoints
import GGUF
import LoRA
import SafeTensors
import SystemSupport

extension LoRAMergeCommand {
    /// The GGUF type a merged GGUF output is written in: `--dtype` when given, else the type most
    /// of the base's parameters are stored in (re-quantized by the same city96 rule, so every
    /// tensor gets the type the base gave it when the base was written that way).
    static func ggufType(for base: TensorCollection, dtype: DType?) -> GGUFType {
        switch dtype {
        case .bf16?: return .bf16
        case .f16?: return .f16
        case .f32?: return .f32
        default: break
        }
        var parameters: [GGUFType: Int] = [:]
        for entry in base.entries where entry.info.shape.count >= 2 {
            let type = entry.encoding.flatMap { GGUFType(name: $0.name) }
                ?? (entry.info.dtype == .bf16 ? .bf16 : entry.info.dtype == .f16 ? .f16 : .f32)
            parameters[type, default: 0] += entry.info.elementCount
        }
        let best = parameters.max { $0.value != $1.value ? $0.value < $1.value : $0.key.rawValue > $1.key.rawValue }?.key ?? .f16
        return Converter.ggufOutputTypes.contains(best) ? best : .q8_0
    }

    /// Merges into a float32 staging file beside `output`, then writes `output` as GGUF from it
    /// (city96 names and rule, `type`); the staging file is removed whatever happens, and `output`
    /// appears only when complete.
    static func mergeToGGUF(base: TensorCollection, adapter: LoRAAdapter, scale: Float, unmerge: Bool,
                            output: String, type: GGUFType, threads: Int) throws -> (MergeReport, GGUFConversionResult) {
        let staging = FileSystem.parentFolder(of: output) + "/.flowguard-merge-\(ProcessControl.currentID).safetensors"
        defer { _ = FileSystem.removeFile(staging) }
        let report = try LoRAMerge.merge(base: base, adapter: adapter, scale: scale, output: staging, dtype: .f32, unmerge: unmerge,
                                         threads: threads)
        let merged = try TensorCollection.checkpoint(staging)
        let converter = try Converter(source: merged, to: .original, prefix: KeyPrefix.none)
        let written = try converter.writeGGUF(to: output, type: type, threads: threads)
        return (report, written)
    }
}
