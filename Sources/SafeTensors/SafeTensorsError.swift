import SystemSupport

/// Everything that can go wrong reading, validating or writing safetensors files and shard
/// indexes. The description is the sentence a user reads: it names the file, the tensor and the
/// byte offset (from the start of the file) wherever they are known.
public enum SafeTensorsError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The file is shorter than the 8-byte header length.
    case headerTooSmall(file: String, size: Int)
    /// The declared header length exceeds the 100,000,000-byte limit.
    case headerTooLarge(file: String, declared: UInt64)
    /// The declared header runs past the end of the file.
    case invalidHeaderLength(file: String, declared: UInt64, fileSize: Int)
    /// The header bytes are not valid UTF-8.
    case headerNotUTF8(file: String, offset: Int)
    /// The header is not valid JSON (json-c's reason).
    case headerNotJSON(file: String, reason: String, offset: Int)
    /// The header is JSON but not a valid safetensors header.
    case invalidHeader(file: String, tensor: String?, reason: String, offset: Int)
    /// The same tensor name appears twice in the header.
    case duplicateTensor(file: String, tensor: String, offset: Int)
    /// A tensor does not start where the previous one ended, or ends before it begins.
    case invalidOffset(file: String, tensor: String, begin: Int, expected: Int, offset: Int)
    /// Shape product times bits overflows 64 bits.
    case validationOverflow(file: String, tensor: String, offset: Int)
    /// A sub-byte tensor does not fill a whole number of bytes.
    case misalignedSlice(file: String, tensor: String, offset: Int)
    /// The byte range does not match dtype and shape.
    case tensorInvalidInfo(file: String, tensor: String, expectedBytes: Int, actualBytes: Int, offset: Int)
    /// The data buffer is shorter or longer than the tensors describe.
    case incompleteBuffer(file: String, expectedSize: Int, actualSize: Int)
    /// A system call failed.
    case io(file: String, operation: String, message: String)
    /// The tensor is not in the file.
    case tensorNotFound(file: String, tensor: String)
    /// A tensor may not be called `__metadata__`, and names may not repeat.
    case invalidTensorName(file: String, tensor: String, reason: String)
    /// The bytes supplied for a tensor while writing do not match its description.
    case writeSizeMismatch(file: String, tensor: String, expected: Int, written: Int)
    /// The header to be written would exceed the format's limit.
    case headerTooLargeToWrite(file: String, size: Int)
    /// The shape or dtype given for a tensor to be written is impossible.
    case invalidSpec(file: String, tensor: String, reason: String)
    /// A shard index (`*.safetensors.index.json`) is malformed or disagrees with its shards.
    case shardIndex(file: String, tensor: String?, reason: String)
    /// A value could not be converted between dtypes.
    case conversion(file: String, tensor: String, reason: String)
    /// The file is another container (GGUF, a delta archive, a pickle checkpoint), or a
    /// container's own reader rejected it; `reason` says which and what to do.
    case container(file: String, reason: String)

    public var description: String {
        let at = errorLocation
        switch self {
        case let .headerTooSmall(file, size):
            return "\(file): file too small for a safetensors header (\(size) bytes, need at least 8) (byte 0)"
        case let .headerTooLarge(file, declared):
            return "\(file): header length \(declared) exceeds the 100,000,000-byte limit (byte 0)"
        case let .invalidHeaderLength(file, declared, fileSize):
            return "\(file): invalid header length: header claims \(declared) bytes but the file holds only \(max(fileSize - 8, 0)) after the length field (byte 0)"
        case let .headerNotUTF8(file, offset):
            return "\(at(file, nil, offset)): header is not valid UTF-8"
        case let .headerNotJSON(file, reason, offset):
            return "\(at(file, nil, offset)): header is not valid JSON: \(reason)"
        case let .invalidHeader(file, tensor, reason, offset):
            return "\(at(file, tensor, offset)): invalid header: \(reason)"
        case let .duplicateTensor(file, tensor, offset):
            return "\(at(file, tensor, offset)): duplicate tensor name in header"
        case let .invalidOffset(file, tensor, begin, expected, offset):
            return "\(at(file, tensor, offset)): invalid data offsets: begins at \(begin) but the previous tensor ends at \(expected) (holes and overlaps are not allowed)"
        case let .validationOverflow(file, tensor, offset):
            return "\(at(file, tensor, offset)): shape × dtype size overflows 64 bits"
        case let .misalignedSlice(file, tensor, offset):
            return "\(at(file, tensor, offset)): sub-byte tensor does not fill a whole number of bytes"
        case let .tensorInvalidInfo(file, tensor, expected, actual, offset):
            return "\(at(file, tensor, offset)): data_offsets cover \(actual) bytes but dtype and shape need \(expected)"
        case let .incompleteBuffer(file, expected, actual):
            return "\(file): data buffer is \(actual) bytes but the tensors describe \(expected) (truncated or trailing data) (byte \(min(expected, actual)))"
        case let .io(file, operation, message):
            return "\(file): \(operation) failed: \(message)"
        case let .tensorNotFound(file, tensor):
            return "\(at(file, tensor, nil)): no such tensor"
        case let .invalidTensorName(file, tensor, reason):
            return "\(at(file, tensor, nil)): \(reason)"
        case let .writeSizeMismatch(file, tensor, expected, written):
            return "\(at(file, tensor, nil)): expected \(expected) bytes of data, got \(written)"
        case let .headerTooLargeToWrite(file, size):
            return "\(file): header of \(size) bytes exceeds the 100,000,000-byte limit"
        case let .invalidSpec(file, tensor, reason):
            return "\(at(file, tensor, nil)): \(reason)"
        case let .shardIndex(file, tensor, reason):
            return "\(at(file, tensor, nil)): shard index: \(reason)"
        case let .conversion(file, tensor, reason):
            return "\(at(file, tensor, nil)): \(reason)"
        case let .container(file, reason):
            return reason.hasPrefix(file) ? reason : "\(file): \(reason)"
        }
    }
}

extension SafeTensorsError {
    /// A failed system call, as the `io` error naming the same file, operation and message.
    package static func system(_ error: SystemError) -> SafeTensorsError {
        .io(file: error.path, operation: error.operation, message: error.message)
    }
}

/// The start of an error sentence: `FILE: tensor 'NAME' (byte N)`, with the parts that are known.
/// Every module's errors begin this way, so messages read alike everywhere.
public func errorLocation(_ file: String, _ tensor: String?, _ offset: Int?) -> String {
    var s = file
    if let tensor { s += ": tensor '\(escapeForDisplay(tensor))'" }
    if let offset { s += " (byte \(offset))" }
    return s
}
