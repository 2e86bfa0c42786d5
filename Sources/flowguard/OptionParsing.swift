import ArgumentParser
import Checkpoints
import SafeTensors

/// Parsers for option values several commands share, so every command accepts the same
/// spellings and answers a bad value with the same usage error (exit 2).
enum OptionParsing {
    /// The dtypes a checkpoint can be written in.
    static let outputDTypes: [DType] = [.bf16, .f16, .f32, .f8e4m3]

    /// `--dtype`: bf16, fp16, fp32 or f8_e4m3 (other common spellings accepted).
    static func outputDType(_ text: String) throws -> DType {
        guard let dtype = DType(userSpelling: text), outputDTypes.contains(dtype) else {
            throw ValidationError("--dtype must be bf16, fp16, fp32 or f8_e4m3, not '\(text)'.")
        }
        return dtype
    }

    /// `--layout`: diffusers or original.
    static func layout(_ text: String) throws -> KeyLayout {
        guard let layout = KeyLayout(rawValue: text.lowercased()) else {
            throw ValidationError("--layout must be 'diffusers' or 'original', not '\(text)'.")
        }
        return layout
    }
}
