import SafeTensors

/// Everything that can go wrong packing, reading or unpacking a delta archive. The description is
/// the sentence a user reads: it names the file, the tensor and the byte offset in the archive
/// wherever they are known.
public enum DeltaArchiveError: Error, Sendable, Equatable, CustomStringConvertible {
    /// A system call failed.
    case io(file: String, operation: String, message: String)
    /// The file ends before a structure it must hold.
    case truncated(file: String, reason: String, offset: Int)
    /// The file does not start with `FGDELTA\0` or does not end with `FGDTAIL\0`.
    case badMagic(file: String, offset: Int)
    /// The format version (or flags) is not one this reader knows.
    case unsupportedVersion(file: String, version: UInt32, offset: Int)
    /// The index is damaged or inconsistent.
    case corruptIndex(file: String, tensor: String?, reason: String, offset: Int)
    /// A compressed frame is damaged: bad zstd data, wrong size, or a checksum mismatch.
    case corruptFrame(file: String, tensor: String, reason: String, offset: Int)
    /// Declared sizes exceed what the reader allows (a decompression bomb or a damaged index).
    case tooLarge(file: String, tensor: String?, declared: UInt64, limit: UInt64, offset: Int)
    /// The tensor is not in the archive.
    case tensorNotFound(file: String, tensor: String)
    /// A tensor is stored as an XOR delta and no (or the wrong) reference was given.
    case reference(file: String, tensor: String, reason: String, offset: Int)
    /// The options or the input cannot be packed.
    case invalidInput(file: String, reason: String)
    /// The source or reference safetensors file is invalid.
    case source(SafeTensorsError)

    public var description: String {
        let at = errorLocation
        switch self {
        case let .io(file, operation, message): return "\(file): \(operation) failed: \(message)"
        case let .truncated(file, reason, offset): return "\(at(file, nil, offset)): truncated delta archive: \(reason)"
        case let .badMagic(file, offset): return "\(at(file, nil, offset)): not a FlowGuard delta archive (bad magic bytes)"
        case let .unsupportedVersion(file, version, offset):
            return "\(at(file, nil, offset)): unsupported delta archive version or flags \(version) (this reader knows version \(DeltaArchiveFormat.version), flags 0)"
        case let .corruptIndex(file, tensor, reason, offset): return "\(at(file, tensor, offset)): corrupt archive index: \(reason)"
        case let .corruptFrame(file, tensor, reason, offset): return "\(at(file, tensor, offset)): corrupt compressed frame: \(reason)"
        case let .tooLarge(file, tensor, declared, limit, offset):
            return "\(at(file, tensor, offset)): declared size \(declared) bytes exceeds the limit of \(limit) bytes (refused before allocating)"
        case let .tensorNotFound(file, tensor): return "\(at(file, tensor, nil)): no such tensor in the archive"
        case let .reference(file, tensor, reason, offset): return "\(at(file, tensor, offset)): \(reason)"
        case let .invalidInput(file, reason): return "\(file): \(reason)"
        case let .source(error): return error.description
        }
    }
}
