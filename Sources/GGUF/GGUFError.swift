import SafeTensors
import SystemSupport

/// Everything that can go wrong reading, validating or planning a GGUF file. The description is
/// the sentence a user reads: it names the file, the tensor or metadata key, and the byte offset
/// (from the start of the file) of the field that is wrong.
public enum GGUFError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The file does not start with the 4 bytes `GGUF`.
    case badMagic(file: String, found: [UInt8])
    /// The format version is not 2 or 3 (or the file was written big-endian).
    case unsupportedVersion(file: String, version: UInt32)
    /// A field runs past the end of the file. `what` names the field.
    case truncated(file: String, tensor: String?, what: String, offset: Int, needed: Int, fileSize: Int)
    /// The tensor or metadata count cannot fit in the bytes that follow the header.
    case countTooLarge(file: String, what: String, declared: UInt64, minimumBytes: Int, available: Int, offset: Int)
    /// A string length is larger than the bytes left in the file.
    case stringTooLong(file: String, tensor: String?, what: String, declared: UInt64, available: Int, offset: Int)
    /// An array length times its elements' smallest size is larger than the bytes left in the file.
    case lengthTooLarge(file: String, tensor: String?, what: String, declared: UInt64, minimumBytes: Int, available: Int, offset: Int)
    /// The metadata and tensor infos would run past `GGUFHeader.maximumHeaderBytes`.
    case headerTooLarge(file: String, tensor: String?, what: String, offset: Int)
    /// A key, tensor name or string value is not valid UTF-8.
    case notUTF8(file: String, tensor: String?, what: String, offset: Int)
    /// The same metadata key appears twice.
    case duplicateKey(file: String, key: String, offset: Int)
    /// A metadata value type is not one of the 13 GGUF value types.
    case invalidValueType(file: String, key: String, type: UInt32, offset: Int)
    /// Arrays nested deeper than `GGUFHeader.maximumArrayNesting`.
    case nestingTooDeep(file: String, key: String, offset: Int)
    /// `general.alignment` is not a u32, or is zero or not a power of two.
    case invalidAlignment(file: String, reason: String, offset: Int)
    /// A tensor has more than 4 dimensions (ggml's GGML_MAX_DIMS).
    case tooManyDimensions(file: String, tensor: String, count: UInt32, offset: Int)
    /// A dimension is larger than 2^63 − 1 (ggml stores dimensions as int64).
    case invalidDimension(file: String, tensor: String, index: Int, value: UInt64, offset: Int)
    /// The dimensions, or the bytes they take, multiply past 2^63 − 1.
    case shapeOverflow(file: String, tensor: String, dims: [UInt64], offset: Int)
    /// The ggml type number is not one ggml defines.
    case unknownType(file: String, tensor: String, type: UInt32, offset: Int)
    /// The innermost dimension is not a whole number of the type's blocks.
    case rowNotMultipleOfBlock(file: String, tensor: String, type: GGUFType, rowLength: Int, offset: Int)
    /// The same tensor name appears twice.
    case duplicateTensor(file: String, tensor: String, offset: Int)
    /// A tensor's data offset is not a multiple of the alignment.
    case misalignedData(file: String, tensor: String, dataOffset: UInt64, alignment: Int, offset: Int)
    /// A tensor's bytes do not lie inside the file.
    case dataOutsideFile(file: String, tensor: String, dataOffset: UInt64, dataStart: Int, byteCount: Int, fileSize: Int, offset: Int)
    /// Two tensors share bytes.
    case overlappingData(file: String, tensor: String, other: String, begin: Int, otherEnd: Int, offset: Int)
    /// The tensor's type cannot be decoded to Float (or encoded) by FlowGuard.
    case unsupportedType(file: String, tensor: String?, type: GGUFType, operation: String)
    /// The tensor is not in the file.
    case tensorNotFound(file: String, tensor: String)
    /// A tensor or metadata entry given to the writer is impossible.
    case invalidSpec(file: String, tensor: String?, reason: String)

    public var description: String {
        let at = errorLocation
        switch self {
        case let .badMagic(file, found):
            let shown = found.map { (0x20..<0x7F).contains($0) ? String(UnicodeScalar($0)) : "\\x" + hex($0) }.joined()
            return "\(at(file, nil, 0)): not a GGUF file: it starts with '\(shown)', expected 'GGUF'"
        case let .unsupportedVersion(file, version):
            if version & 0xFFFF == 0 && version != 0 {
                return "\(at(file, nil, 4)): GGUF version field reads \(version): a big-endian (byte-swapped) GGUF file, which is not supported (little-endian versions 2 and 3 are)"
            }
            return "\(at(file, nil, 4)): unsupported GGUF version \(version) (versions 2 and 3 are supported)"
        case let .truncated(file, tensor, what, offset, needed, fileSize):
            return "\(at(file, tensor, offset)): truncated: \(what) needs \(needed) bytes here but the file ends at byte \(fileSize)"
        case let .countTooLarge(file, what, declared, minimumBytes, available, offset):
            return "\(at(file, nil, offset)): \(what) \(declared) is impossible: each takes at least \(minimumBytes) bytes and only \(available) bytes follow (the file is truncated or the count is corrupt)"
        case let .stringTooLong(file, tensor, what, declared, available, offset):
            return "\(at(file, tensor, offset)): \(what) declares a length of \(declared) bytes but only \(available) bytes follow"
        case let .lengthTooLarge(file, tensor, what, declared, minimumBytes, available, offset):
            let unit = minimumBytes == 1 ? "" : " of at least \(minimumBytes) bytes each"
            return "\(at(file, tensor, offset)): \(what) declares \(declared) items\(unit) but only \(available) bytes follow"
        case let .headerTooLarge(file, tensor, what, offset):
            return "\(at(file, tensor, offset)): \(what) would take the GGUF header (metadata and tensor infos) past FlowGuard's limit of \(GGUFHeader.maximumHeaderBytes) bytes"
        case let .notUTF8(file, tensor, what, offset):
            return "\(at(file, tensor, offset)): \(what) is not valid UTF-8"
        case let .duplicateKey(file, key, offset):
            return "\(at(file, nil, offset)): metadata key '\(escapeForDisplay(key))' appears twice"
        case let .invalidValueType(file, key, type, offset):
            return "\(at(file, nil, offset)): metadata key '\(escapeForDisplay(key))' has value type \(type), which is not a GGUF value type (0–12)"
        case let .nestingTooDeep(file, key, offset):
            return "\(at(file, nil, offset)): metadata key '\(escapeForDisplay(key))' nests arrays more than \(GGUFHeader.maximumArrayNesting) deep"
        case let .invalidAlignment(file, reason, offset):
            return "\(at(file, nil, offset)): invalid general.alignment: \(reason)"
        case let .tooManyDimensions(file, tensor, count, offset):
            return "\(at(file, tensor, offset)): \(count) dimensions, but ggml tensors have at most 4"
        case let .invalidDimension(file, tensor, index, value, offset):
            return "\(at(file, tensor, offset)): dimension \(index) (innermost first) is \(value), larger than 2^63-1"
        case let .shapeOverflow(file, tensor, dims, offset):
            return "\(at(file, tensor, offset)): dimensions \(dims) (innermost first) multiply past 2^63-1 elements or bytes"
        case let .unknownType(file, tensor, type, offset):
            return "\(at(file, tensor, offset)): unknown ggml type \(type)"
        case let .rowNotMultipleOfBlock(file, tensor, type, rowLength, offset):
            return "\(at(file, tensor, offset)): innermost dimension \(rowLength) is not a multiple of \(type.name)'s block size \(type.blockSize)"
        case let .duplicateTensor(file, tensor, offset):
            return "\(at(file, tensor, offset)): duplicate tensor name"
        case let .misalignedData(file, tensor, dataOffset, alignment, offset):
            return "\(at(file, tensor, offset)): data offset \(dataOffset) is not a multiple of the alignment \(alignment)"
        case let .dataOutsideFile(file, tensor, dataOffset, dataStart, byteCount, fileSize, offset):
            return "\(at(file, tensor, offset)): data (\(byteCount) bytes at offset \(dataOffset) of the data section, which starts at byte \(dataStart)) lies outside the file of \(fileSize) bytes"
        case let .overlappingData(file, tensor, other, begin, otherEnd, offset):
            return "\(at(file, tensor, offset)): data begins at byte \(begin), inside tensor '\(escapeForDisplay(other))' (which ends at byte \(otherEnd)): tensors may not overlap"
        case let .unsupportedType(file, tensor, type, operation):
            return "\(at(file, tensor, nil)): type \(type.name) cannot be \(operation) by FlowGuard"
        case let .tensorNotFound(file, tensor):
            return "\(at(file, tensor, nil)): no such tensor"
        case let .invalidSpec(file, tensor, reason):
            return "\(at(file, tensor, nil)): \(reason)"
        }
    }
}

private func hex(_ byte: UInt8) -> String {
    let digits = Array("0123456789ABCDEF")
    return String(digits[Int(byte >> 4)]) + String(digits[Int(byte & 0x0F)])
}
