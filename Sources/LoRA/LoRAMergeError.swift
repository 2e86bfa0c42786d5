import Checkpoints
import SafeTensors
import SystemSupport

/// What can go wrong merging an adapter into a checkpoint or extracting one from two
/// checkpoints, beyond the adapter's own problems (`LoRAError`) and the checkpoints' (`CheckpointError`,
/// `SafeTensorsError`). The description is the sentence the user sees.
public enum LoRAMergeError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The base and the tuned checkpoint of an extraction are not the same model in the same layout.
    case checkpointsDiffer(base: String, tuned: String, reason: String)
    /// The requested rank is not a positive number.
    case badRank(Int)
    /// The output path would overwrite an input, or is a folder.
    case badOutput(path: String, reason: String)
    /// The requested output dtype cannot hold floating-point weights.
    case badDType(DType)
    /// A base tensor receiving a delta is not a floating-point tensor.
    case notFloatingPoint(file: String, tensor: String, dtype: DType)

    /// The sentence the user sees.
    public var description: String {
        switch self {
        case let .checkpointsDiffer(base, tuned, reason):
            return "\(base) and \(tuned) are not the same model: \(reason)."
        case let .badRank(rank):
            return "The rank must be at least 1, not \(rank)."
        case let .badOutput(path, reason):
            return "\(path): \(reason)."
        case let .badDType(dtype):
            return "Cannot write merged weights as \(dtype.rawValue): not a floating-point dtype."
        case let .notFloatingPoint(file, tensor, dtype):
            return "\(file): tensor \"\(escapeForDisplay(tensor))\" is \(dtype.rawValue), not floating point: a LoRA delta cannot be added to it."
        }
    }
}
