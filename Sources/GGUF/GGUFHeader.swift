import SafeTensors
import SystemSupport

/// The parsed and validated header of a GGUF file: version, metadata, tensor infos, alignment
/// and where the data section starts.
///
/// `parse` checks everything FlowGuard relies on before any tensor is read: magic, version,
/// counts and lengths against the bytes present (before allocating), value types, UTF-8 keys and
/// names, duplicate keys and tensor names, `general.alignment`, dimensions (at most 4, each at
/// most 2^63 − 1, products and byte sizes that fit), known ggml types, rows that are whole
/// blocks, data offsets that are aligned and inside the file, and tensors that do not overlap.
public struct GGUFHeader: Sendable {
    /// The 4 bytes every GGUF file starts with.
    public static let magic: [UInt8] = Array("GGUF".utf8)
    /// The alignment of tensor data when `general.alignment` is absent.
    public static let defaultAlignment = 32
    /// The most ggml dimensions a tensor may have (GGML_MAX_DIMS).
    public static let maximumDimensions = 4
    /// How deep metadata arrays may nest (arrays of arrays of …); gguf-py writes nested arrays,
    /// ggml reads none, and real files have at most 2 levels.
    public static let maximumArrayNesting = 16
    /// The most bytes the metadata and tensor infos may take (128 MiB). Real files use a few MB
    /// (a large LLM vocabulary is about 12 MB); the limit keeps a hostile count or length in a
    /// many-gigabyte file from making the parser copy tensor data as metadata.
    public static let maximumHeaderBytes = 128 << 20
    /// The fewest bytes a tensor info takes (name length, n_dims, type, offset).
    static let minimumTensorInfoBytes = 8 + 4 + 4 + 8
    /// The fewest bytes a metadata entry takes (key length, value type, a 1-byte value).
    static let minimumEntryBytes = 8 + 4 + 1

    /// The file's display name, as given to `parse`.
    public let file: String
    /// Format version (2 or 3).
    public let version: UInt32
    /// Metadata entries in file order.
    public let metadata: [GGUFMetadataEntry]
    /// Tensors in file (info) order.
    public let tensors: [GGUFTensorInfo]
    /// Alignment of the data section and of every tensor's data offset.
    public let alignment: Int
    /// Byte offset of the data section: the end of the tensor infos rounded up to the alignment.
    public let dataStart: Int
    /// Size of the file.
    public let fileSize: Int

    private let tensorIndex: [String: Int]
    private let keyIndex: [String: Int]

    /// The tensor called `name`.
    public func tensor(_ name: String) -> GGUFTensorInfo? { tensorIndex[name].map { tensors[$0] } }

    /// The metadata value of `key`.
    public func value(_ key: String) -> GGUFValue? { keyIndex[key].map { metadata[$0].value } }

    /// `general.architecture` (`flux`, `sd3`), which city96's files carry and
    /// stable-diffusion.cpp's do not.
    public var architecture: String? { value("general.architecture")?.stringValue }

    /// Parses and validates the GGUF file held in `bytes` (the whole file). `file` names it in errors.
    public static func parse(_ bytes: UnsafeRawBufferPointer, file: String) throws(GGUFError) -> GGUFHeader {
        var parser = HeaderParser(cursor: ByteCursor(bytes, file: file))
        return try parser.parse()
    }

    fileprivate init(file: String, version: UInt32, metadata: [GGUFMetadataEntry], keyIndex: [String: Int],
                     tensors: [GGUFTensorInfo], tensorIndex: [String: Int], alignment: Int, dataStart: Int, fileSize: Int) {
        self.file = file
        self.version = version
        self.metadata = metadata
        self.keyIndex = keyIndex
        self.tensors = tensors
        self.tensorIndex = tensorIndex
        self.alignment = alignment
        self.dataStart = dataStart
        self.fileSize = fileSize
    }
}

/// A tensor info as read, before the data section's position is known.
private struct RawTensorInfo {
    let name: String
    let shape: [Int]
    let type: GGUFType
    let byteCount: Int
    let dataOffset: UInt64
    let infoOffset: Int
    let offsetFieldOffset: Int
}

/// The parsing state: one cursor over the file.
private struct HeaderParser {
    var cursor: ByteCursor
    var file: String { cursor.file }

    mutating func parse() throws(GGUFError) -> GGUFHeader {
        let magic = try cursor.slice(4, "the magic 'GGUF'")
        guard magic.elementsEqual(GGUFHeader.magic) else { throw .badMagic(file: file, found: Array(magic)) }
        let version = try cursor.read(UInt32.self, "the version")
        guard version == 2 || version == 3 else { throw .unsupportedVersion(file: file, version: version) }
        let tensorCountOffset = cursor.position
        let tensorCount = try cursor.read(UInt64.self, "the tensor count")
        let kvCountOffset = cursor.position
        let kvCount = try cursor.read(UInt64.self, "the metadata count")

        // Count bombs fail here, before anything is allocated: each entry and each tensor info
        // takes a known minimum of bytes, and both sections must fit in what follows. Nothing is
        // reserved by count: arrays grow only with entries actually read.
        if let error = cursor.refusal(kvCount, unit: GGUFHeader.minimumEntryBytes, at: kvCountOffset, what: "the metadata count",
                                      tensor: nil, bomb: { available in
            .countTooLarge(file: file, what: "metadata count", declared: kvCount,
                           minimumBytes: GGUFHeader.minimumEntryBytes, available: available, offset: kvCountOffset)
        }) { throw error }
        let afterEntries = cursor.remaining - Int(kvCount) * GGUFHeader.minimumEntryBytes
        guard tensorCount <= UInt64(afterEntries / GGUFHeader.minimumTensorInfoBytes) else {
            let inFile = cursor.bytes.count - cursor.position - Int(kvCount) * GGUFHeader.minimumEntryBytes
            if tensorCount <= UInt64(inFile / GGUFHeader.minimumTensorInfoBytes) {
                throw .headerTooLarge(file: file, tensor: nil, what: "the tensor count", offset: tensorCountOffset)
            }
            throw .countTooLarge(file: file, what: "tensor count", declared: tensorCount,
                                 minimumBytes: GGUFHeader.minimumTensorInfoBytes, available: inFile, offset: tensorCountOffset)
        }

        var metadata: [GGUFMetadataEntry] = []
        var keyIndex: [String: Int] = [:]
        for n in 0..<Int(kvCount) {
            let entryOffset = cursor.position
            let key = try cursor.string("the key of metadata entry \(n)")
            guard keyIndex[key] == nil else { throw .duplicateKey(file: file, key: key, offset: entryOffset) }
            let typeOffset = cursor.position
            let rawType = try cursor.read(UInt32.self, "the value type of metadata key '\(escapeForDisplay(key))'")
            guard let type = GGUFValueType(rawValue: rawType) else {
                throw .invalidValueType(file: file, key: key, type: rawType, offset: typeOffset)
            }
            let value = try readValue(type, key: key, depth: 0)
            keyIndex[key] = metadata.count
            metadata.append(GGUFMetadataEntry(key: key, value: value, offset: entryOffset))
        }

        var alignment = GGUFHeader.defaultAlignment
        if let index = keyIndex["general.alignment"] {
            let entry = metadata[index]
            guard case let .uint32(value) = entry.value else {
                throw .invalidAlignment(file: file, reason: "it is a \(entry.value.type), not a u32", offset: entry.offset)
            }
            guard value != 0, value & (value - 1) == 0 else {
                throw .invalidAlignment(file: file, reason: "\(value) is not a nonzero power of two", offset: entry.offset)
            }
            alignment = Int(value)
        }

        var raw: [RawTensorInfo] = []
        var tensorIndex: [String: Int] = [:]
        for n in 0..<Int(tensorCount) {
            let info = try readTensorInfo(n)
            guard tensorIndex[info.name] == nil else { throw .duplicateTensor(file: file, tensor: info.name, offset: info.infoOffset) }
            tensorIndex[info.name] = raw.count
            raw.append(info)
        }

        // The data section starts at the next multiple of the alignment (alignment ≤ 2^32, so
        // this cannot overflow).
        let infosEnd = cursor.position
        let dataStart = (infosEnd + alignment - 1) / alignment * alignment
        let fileSize = cursor.bytes.count
        if !raw.isEmpty && dataStart > fileSize {
            throw .truncated(file: file, tensor: nil, what: "the padding before the data section (alignment \(alignment))",
                             offset: infosEnd, needed: dataStart - infosEnd, fileSize: fileSize)
        }
        let tensors = try placeData(raw, dataStart: dataStart, alignment: alignment, fileSize: fileSize)
        return GGUFHeader(file: file, version: version, metadata: metadata, keyIndex: keyIndex, tensors: tensors,
                          tensorIndex: tensorIndex, alignment: alignment, dataStart: dataStart, fileSize: fileSize)
    }

    /// Reads one value of `type` for `key`; arrays recurse up to `maximumArrayNesting` deep.
    mutating func readValue(_ type: GGUFValueType, key: String, depth: Int) throws(GGUFError) -> GGUFValue {
        let what = "the value of metadata key '\(escapeForDisplay(key))'"
        switch type {
        case .uint8: return .uint8(try cursor.read(UInt8.self, what))
        case .int8: return .int8(try cursor.read(Int8.self, what))
        case .uint16: return .uint16(try cursor.read(UInt16.self, what))
        case .int16: return .int16(try cursor.read(Int16.self, what))
        case .uint32: return .uint32(try cursor.read(UInt32.self, what))
        case .int32: return .int32(try cursor.read(Int32.self, what))
        case .float32: return .float32(Float(bitPattern: try cursor.read(UInt32.self, what)))
        case .bool: return .bool(try cursor.read(UInt8.self, what) != 0)
        case .uint64: return .uint64(try cursor.read(UInt64.self, what))
        case .int64: return .int64(try cursor.read(Int64.self, what))
        case .float64: return .float64(Double(bitPattern: try cursor.read(UInt64.self, what)))
        case .string: return .string(try cursor.string("the string value of metadata key '\(escapeForDisplay(key))'"))
        case .array: return .array(try readArray(key: key, depth: depth + 1))
        }
    }

    /// Reads an array (u32 element type, u64 count, elements). The count is checked against the
    /// bytes left (times the element type's minimum size) before anything is allocated.
    mutating func readArray(key: String, depth: Int) throws(GGUFError) -> GGUFArray {
        let start = cursor.position
        guard depth <= GGUFHeader.maximumArrayNesting else { throw .nestingTooDeep(file: file, key: key, offset: start) }
        let what = "the array of metadata key '\(escapeForDisplay(key))'"
        let rawType = try cursor.read(UInt32.self, "the element type of \(what)")
        guard let elementType = GGUFValueType(rawValue: rawType) else {
            throw .invalidValueType(file: file, key: key, type: rawType, offset: start)
        }
        let countOffset = cursor.position
        let declared = try cursor.read(UInt64.self, "the length of \(what)")
        let minimum = elementType.minimumByteCount
        if let error = cursor.refusal(declared, unit: minimum, at: countOffset, what: what, tensor: nil, bomb: { available in
            .lengthTooLarge(file: file, tensor: nil, what: "\(what) (\(elementType))",
                            declared: declared, minimumBytes: minimum, available: available, offset: countOffset)
        }) { throw error }
        let count = Int(declared)
        switch elementType {
        case .uint8: return .uint8(try readScalars(count, what))
        case .int8: return .int8(try readScalars(count, what))
        case .uint16: return .uint16(try readScalars(count, what))
        case .int16: return .int16(try readScalars(count, what))
        case .uint32: return .uint32(try readScalars(count, what))
        case .int32: return .int32(try readScalars(count, what))
        case .uint64: return .uint64(try readScalars(count, what))
        case .int64: return .int64(try readScalars(count, what))
        case .float32: return .float32((try readScalars(count, what) as [UInt32]).map { Float(bitPattern: $0) })
        case .float64: return .float64((try readScalars(count, what) as [UInt64]).map { Double(bitPattern: $0) })
        case .bool: return .bool((try readScalars(count, what) as [UInt8]).map { $0 != 0 })
        case .string:
            var strings: [String] = []
            for _ in 0..<count { strings.append(try cursor.string("a string in \(what)")) }
            return .string(strings)
        case .array:
            var arrays: [GGUFArray] = []
            for _ in 0..<count { arrays.append(try readArray(key: key, depth: depth + 1)) }
            return .array(arrays)
        }
    }

    /// Reads `count` fixed-size integers (the caller checked that `count` of them can fit).
    mutating func readScalars<T: FixedWidthInteger>(_ count: Int, _ what: String) throws(GGUFError) -> [T] {
        let raw = try cursor.slice(count * MemoryLayout<T>.size, what)
        return Self.loadScalars(raw, count)
    }

    /// The `count` little-endian integers in `raw`, which holds exactly `count × size` bytes
    /// (`slice` checked it), copied out with unaligned loads.
    static func loadScalars<T: FixedWidthInteger>(_ raw: UnsafeRawBufferPointer, _ count: Int) -> [T] {
        let size = MemoryLayout<T>.size
        return (0..<count).map { T(littleEndian: raw.loadUnaligned(fromByteOffset: $0 * size, as: T.self)) }
    }

    /// Reads one tensor info: name, n_dims, dims (innermost first), ggml type, data offset.
    mutating func readTensorInfo(_ n: Int) throws(GGUFError) -> RawTensorInfo {
        let infoOffset = cursor.position
        let name = try cursor.string("the name of tensor \(n)")
        let dimsOffset = cursor.position
        let nDims = try cursor.read(UInt32.self, "the dimension count", tensor: name)
        guard nDims <= UInt32(GGUFHeader.maximumDimensions) else {
            throw .tooManyDimensions(file: file, tensor: name, count: nDims, offset: dimsOffset)
        }
        var dims: [UInt64] = []
        for i in 0..<Int(nDims) {
            let at = cursor.position
            let d = try cursor.read(UInt64.self, "dimension \(i)", tensor: name)
            guard d <= UInt64(Int64.max) else { throw .invalidDimension(file: file, tensor: name, index: i, value: d, offset: at) }
            dims.append(d)
        }
        // Every product of dimensions a user may form must fit: the non-zero ones multiply
        // without overflow (a zero dimension makes the tensor empty but not the others small).
        var nonZeroProduct = 1
        for d in dims where d != 0 {
            let (p, overflow) = nonZeroProduct.multipliedReportingOverflow(by: Int(d))
            guard !overflow else { throw .shapeOverflow(file: file, tensor: name, dims: dims, offset: dimsOffset + 4) }
            nonZeroProduct = p
        }
        let elementCount = dims.contains(0) ? 0 : nonZeroProduct
        let typeOffset = cursor.position
        let rawType = try cursor.read(UInt32.self, "the ggml type", tensor: name)
        guard let type = GGUFType(rawValue: rawType) else {
            throw .unknownType(file: file, tensor: name, type: rawType, offset: typeOffset)
        }
        let rowLength = dims.first.map { Int($0) } ?? 1
        guard rowLength % type.blockSize == 0 else {
            throw .rowNotMultipleOfBlock(file: file, tensor: name, type: type, rowLength: rowLength, offset: dimsOffset + 4)
        }
        // One row's bytes must fit as well, even in an empty tensor (a zero outer dimension).
        guard let byteCount = type.byteCount(elements: elementCount), type.byteCount(elements: rowLength) != nil else {
            throw .shapeOverflow(file: file, tensor: name, dims: dims, offset: dimsOffset + 4)
        }
        let offsetFieldOffset = cursor.position
        let dataOffset = try cursor.read(UInt64.self, "the data offset", tensor: name)
        return RawTensorInfo(name: name, shape: dims.reversed().map { Int($0) }, type: type, byteCount: byteCount,
                             dataOffset: dataOffset, infoOffset: infoOffset, offsetFieldOffset: offsetFieldOffset)
    }

    /// Places every tensor in the file: offsets aligned, bytes inside the file, no two tensors
    /// sharing a byte. Errors point at the tensor's data offset field.
    func placeData(_ raw: [RawTensorInfo], dataStart: Int, alignment: Int, fileSize: Int) throws(GGUFError) -> [GGUFTensorInfo] {
        var tensors: [GGUFTensorInfo] = []
        tensors.reserveCapacity(raw.count)
        for info in raw {
            guard info.dataOffset % UInt64(alignment) == 0 else {
                throw .misalignedData(file: file, tensor: info.name, dataOffset: info.dataOffset, alignment: alignment,
                                      offset: info.offsetFieldOffset)
            }
            // dataStart ≤ fileSize here (checked when there are tensors), so the subtractions
            // cannot go negative and nothing below overflows.
            guard info.dataOffset <= UInt64(fileSize - dataStart),
                  info.byteCount <= fileSize - dataStart - Int(info.dataOffset) else {
                throw .dataOutsideFile(file: file, tensor: info.name, dataOffset: info.dataOffset, dataStart: dataStart,
                                       byteCount: info.byteCount, fileSize: fileSize, offset: info.offsetFieldOffset)
            }
            let begin = dataStart + Int(info.dataOffset)
            tensors.append(GGUFTensorInfo(name: info.name, shape: info.shape, type: info.type,
                                          byteRange: begin..<(begin + info.byteCount), infoOffset: info.infoOffset))
        }
        let order = tensors.indices.filter { !tensors[$0].byteRange.isEmpty }.sorted {
            (tensors[$0].byteRange.lowerBound, $0) < (tensors[$1].byteRange.lowerBound, $1)
        }
        var previous: Int? = nil
        for i in order {
            if let p = previous, tensors[i].byteRange.lowerBound < tensors[p].byteRange.upperBound {
                throw .overlappingData(file: file, tensor: tensors[i].name, other: tensors[p].name,
                                       begin: tensors[i].byteRange.lowerBound, otherEnd: tensors[p].byteRange.upperBound,
                                       offset: raw[i].offsetFieldOffset)
            }
            if previous == nil || tensors[i].byteRange.upperBound > tensors[previous!].byteRange.upperBound { previous = i }
        }
        return tensors
    }

}
