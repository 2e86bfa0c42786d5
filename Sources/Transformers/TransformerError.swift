import LoRA
import SafeTensors

/// What can go wrong loading or running a transformer. Each description names the file, tensor
/// and byte offset where known.
public enum TransformerError: Error, Sendable, CustomStringConvertible {
    /// A checkpoint could not be read or is not a known transformer.
    case badCheckpoint(path: String, reason: String)
    /// A weight the model needs is missing.
    case missingWeight(path: String, name: String)
    /// A weight has an unexpected shape.
    case weightShape(path: String, name: String, expected: [Int], found: [Int])
    /// An adapter does not fit the model.
    case badAdapter(path: String, reason: String)
    /// A forward input is missing, has the wrong shape, or is not finite.
    case badInput(path: String, name: String, reason: String)
    /// A checkpoint file could not be opened, mapped or parsed (missing, truncated, corrupt
    /// header): the underlying error names the file, tensor and byte offset.
    case unreadable(SafeTensorsError)
    /// One stored tensor cannot serve as asked (wrong rank, not a floating-point dtype, rows out
    /// of range): the file holding it, its key there, the byte offset of its data, and why.
    case badWeight(file: String, tensor: String, offset: Int?, reason: String)
    /// An adapter file could not be read (unknown dialect, rank mismatch, NaN/Inf factors, ...):
    /// the path given and the LoRA module's own error, which names the file and tensor.
    case unreadableAdapter(path: String, error: LoRAError)

    /// The sentence shown to the user.
    public var description: String {
        switch self {
        case let .badCheckpoint(path, reason): return "\(path): \(reason)"
        case let .missingWeight(path, name): return "\(path): tensor \"\(name)\" is missing"
        case let .weightShape(path, name, expected, found):
            return "\(path): tensor \"\(name)\" has shape \(found), expected \(expected)"
        case let .badAdapter(path, reason): return "\(path): \(reason)"
        case let .badInput(path, name, reason): return "\(path): input \"\(name)\": \(reason)"
        case let .unreadable(error): return error.description
        case let .badWeight(file, tensor, offset, reason):
            return "\(errorLocation(file, tensor, offset)): \(reason)"
        case let .unreadableAdapter(path, error):
            let text = error.description
            return text.hasPrefix(path) ? text : "\(path): \(text)"
        }
    }
}
