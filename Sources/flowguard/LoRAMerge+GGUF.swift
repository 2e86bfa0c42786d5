import Checkpoints
import GGUF
import LoRA
import SafeTensors
import SystemSupport

extension LoRAMergeCommand {
    /// The GGUF type a merged GGUF output is written in: `requested` (`--dtype`) when given, else
    /// the type most of the base's parameters are stored in (re-quantized by the same city96 rule,
    /// so every tensor gets the type the base gave it when the base was written that way); Q8_0
    /// for fp8 weights, plain or scaled.
    static func ggufType(for base: TensorCollection, requested: GGUFType?) -> GGUFType {
        if let requested { return requested }
        var parameters: [GGUFType: Int] = [:]
        for entry in base.transformerOnly().entries where entry.info.shape.count >= 2 {
            let type: GGUFType
            if let encoding = entry.encoding {
                // A GGUF block type, or a scaled-fp8 weight (8 bits: Q8_0).
                type = GGUFType(name: encoding.name) ?? (encoding.bitsPerWeight <= 8 ? .q8_0 : .f16)
            } else {
                switch entry.info.dtype {
                case .bf16: type = .bf16
                case .f16: type = .f16
                case .f32, .f64: type = .f32
                default: type = .q8_0  // 8-bit floats (scaled fp8): the 8-bit GGUF type
                }
            }
            parameters[type, default: 0] += entry.info.elementCount
        }
        let best = parameters.max { $0.value != $1.value ? $0.value < $1.value : $0.key.rawValue > $1.key.rawValue }?.key ?? .f16
        return Converter.ggufOutputTypes.contains(best) ? best : .q8_0
    }
}
