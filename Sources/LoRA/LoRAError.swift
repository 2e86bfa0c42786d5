import Checkpoints
import SafeTensors
import SystemSupport

/// Everything that can go wrong while reading, checking, converting or writing a LoRA adapter.
/// Each case carries the file, tensor keys and byte offsets involved where known; `description`
/// is the sentence a user reads.
public enum LoRAError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The keys match no known adapter dialect (or keys are left over in a known one): up to five
    /// of them, and the total count.
    case unknownDialect(file: String, format: LoRAFormat?, keys: [String], count: Int)
    /// A and B of a module disagree on the rank, or a factor has the wrong number of dimensions.
    case rankMismatch(file: String, downKey: String, downShape: [Int], upKey: String, upShape: [Int])
    /// A module that the base architecture does not have, or whose sizes differ from it.
    case moduleNotInArchitecture(module: String, architecture: String, reason: String)
    /// One factor of a pair without the other (`lora_A` without `lora_B`).
    case missingPartner(file: String, key: String, missing: String)
    /// NaN or ±Inf values in a factor (raised when non-finite values are rejected).
    case nonFinite(file: String, key: String, byteOffset: Int?, nanCount: Int, infCount: Int)
    /// `adapter_config.json` (or `lora_adapter_metadata`) is malformed: the field and why.
    case badConfig(file: String, field: String, reason: String)
    /// A tensor whose dtype cannot be read as floats, or a scalar alpha that is not a scalar.
    case badTensor(file: String, key: String, byteOffset: Int?, reason: String)
    /// The adapter cannot be written in `format` (for instance XLabs, which is read only).
    case unsupportedFormat(format: LoRAFormat, reason: String)
    /// The input path is neither a `.safetensors` file nor a PEFT folder.
    case notAnAdapter(path: String, reason: String)
    /// The adapter's names do not tell which architecture it belongs to.
    case unknownArchitecture(reason: String)
    /// A delta whose size does not fit the base tensor it lands on (LoKr factors whose Kronecker
    /// product differs from the weight, a `.diff` of the wrong shape, a DoRA magnitude of the
    /// wrong length): the adapter file, key, its data's byte offset, and why.
    case deltaMisfit(file: String, key: String, byteOffset: Int?, reason: String)
    /// The adapter holds nothing for the transformer being merged into (text encoders only).
    case nothingToMerge(file: String, reason: String)
    /// The adapter needs a step the user must ask for (a rank for a non-low-rank adapter, a base).
    case needsOption(file: String, reason: String)

    /// The sentence shown to the user.
    public var description: String {
        switch self {
        case let .unknownDialect(file, format, keys, count):
            let list = keys.map { "\"\(escapeForDisplay($0))\"" }.joined(separator: ", ")
            if let format {
                return "\(file): \(count) key\(count == 1 ? "" : "s") not part of a \(format.displayName) adapter: \(list)\(count > keys.count ? ", …" : "")."
            }
            return "\(file): not a LoRA adapter in any known dialect (PEFT, diffusers, kohya, ComfyUI, OneTrainer, LyCORIS, XLabs, BFL Control, fal Kontext); \(count) unexplained key\(count == 1 ? "" : "s"): \(list)\(count > keys.count ? ", …" : "")."
        case let .rankMismatch(file, downKey, downShape, upKey, upShape):
            return "\(file): rank mismatch: \"\(escapeForDisplay(downKey))\" has shape \(downShape) but \"\(escapeForDisplay(upKey))\" has shape \(upShape) (A must be [r, in] and B [out, r])."
        case let .moduleNotInArchitecture(module, architecture, reason):
            return "Module \"\(escapeForDisplay(module))\" does not fit the base model \(architecture): \(reason)."
        case let .missingPartner(file, key, missing):
            return "\(file): \"\(escapeForDisplay(key))\" has no partner \"\(escapeForDisplay(missing))\"."
        case let .nonFinite(file, key, offset, nan, inf):
            let at = offset.map { " (data at byte \($0))" } ?? ""
            return "\(file): tensor \"\(escapeForDisplay(key))\"\(at) holds \(nan) NaN and \(inf) infinite value\(nan + inf == 1 ? "" : "s")."
        case let .badConfig(file, field, reason):
            return "\(file): field \"\(field)\" of the adapter configuration is invalid: \(reason)."
        case let .badTensor(file, key, offset, reason):
            let at = offset.map { " (data at byte \($0))" } ?? ""
            return "\(file): tensor \"\(escapeForDisplay(key))\"\(at): \(reason)."
        case let .unsupportedFormat(format, reason):
            return "Cannot write the \(format.displayName) format: \(reason)."
        case let .notAnAdapter(path, reason):
            return "\(path): \(reason)."
        case let .unknownArchitecture(reason):
            return "Cannot tell the base architecture: \(reason)."
        case let .deltaMisfit(file, key, offset, reason):
            let at = offset.map { " (data at byte \($0))" } ?? ""
            return "\(file): tensor \"\(escapeForDisplay(key))\"\(at) does not fit the base: \(reason)."
        case let .nothingToMerge(file, reason):
            return "\(file): nothing to merge into a transformer: \(reason)."
        case let .needsOption(file, reason):
            return "\(file): \(reason)."
        }
    }
}

extension LoRAFormat {
    /// The format's name in sentences.
    public var displayName: String {
        switch self {
        case .peft: return "PEFT"
        case .diffusers: return "diffusers"
        case .kohya: return "kohya"
        case .comfy: return "ComfyUI"
        case .xlabs: return "XLabs"
        case .onetrainer: return "OneTrainer"
        case .lycoris: return "LyCORIS"
        case .bflControl: return "BFL Control"
        case .falKontext: return "fal Kontext"
        }
    }
}
