/// A tensor to be written to a GGUF file: name, row-major shape and type.
public struct GGUFTensorSpec: Sendable, Hashable {
    /// The tensor's name.
    public let name: String
    /// Row-major shape (outermost first), at most 4 dimensions; the innermost is a whole
    /// number of the type's blocks.
    public let shape: [Int]
    /// How the values are stored.
    public let type: GGUFType

    /// A tensor description.
    public init(name: String, shape: [Int], type: GGUFType) {
        self.name = name
        self.shape = shape
        self.type = type
    }
}

/// The planned layout of a GGUF file, computed from metadata and tensor descriptions alone,
/// before any tensor data exists: the header bytes (magic, version 3, counts, metadata, tensor
/// infos), the zero padding that follows them up to the alignment, and where each tensor's bytes go.
///
/// The layout is gguf-py's `GGUFWriter`: metadata in the order given, tensors in the order given,
/// each tensor's bytes followed by zeros up to the next multiple of the alignment (the last one
/// too). A writer streams `headerBytes`, `headerPadding` zero bytes, then for each tensor its
/// bytes and `padding(after:)` zero bytes; the file is then `totalSize` bytes long. The padding is
/// a count, never an array: an alignment may be as large as 2^31.
public struct GGUFLayout: Sendable {
    /// The file's display name, for errors.
    public let file: String
    /// Metadata as written (with `general.alignment` added when the alignment is not 32 and the
    /// caller did not give it).
    public let metadata: [GGUFMetadataEntry]
    /// Tensors in file order, with their absolute byte ranges.
    public let tensors: [GGUFTensorInfo]
    /// Alignment of the data section and of every tensor.
    public let alignment: Int
    /// Everything before the data section except the zero padding that ends it.
    public let headerBytes: [UInt8]
    /// Byte offset of the data section: `headerBytes` rounded up to the alignment.
    public let dataStart: Int
    /// Size of the whole file.
    public let totalSize: Int

    /// Zero bytes between `headerBytes` and the data section.
    public var headerPadding: Int { dataStart - headerBytes.count }

    /// Zero bytes that follow tensor `index`'s data.
    public func padding(after index: Int) -> Int {
        let end = tensors[index].byteRange.upperBound
        let next = index + 1 < tensors.count ? tensors[index + 1].byteRange.lowerBound : totalSize
        return next - end
    }

    /// Plans a file. Keys must be unique and tensor names too; shapes must have at most 4
    /// non-negative dimensions whose innermost is a whole number of blocks; `alignment` must be
    /// a power of two that fits a u32 (and agree with a `general.alignment` entry, which must be
    /// a u32, if one is given).
    public init(metadata: [GGUFMetadataEntry], tensors specs: [GGUFTensorSpec], alignment: Int = GGUFHeader.defaultAlignment,
                file: String = "<output>") throws(GGUFError) {
        guard alignment > 0, alignment & (alignment - 1) == 0, alignment <= Int(UInt32.max) else {
            throw .invalidSpec(file: file, tensor: nil, reason: "alignment \(alignment) is not a power of two that fits in 32 bits")
        }
        var entries = metadata
        var keys = Set<String>()
        for entry in entries {
            guard keys.insert(entry.key).inserted else {
                throw .invalidSpec(file: file, tensor: nil, reason: "metadata key '\(entry.key)' given twice")
            }
            if entry.key == "general.alignment" {
                guard case let .uint32(value) = entry.value, Int(value) == alignment else {
                    throw .invalidSpec(file: file, tensor: nil, reason: "general.alignment must be the u32 \(alignment), the alignment being written")
                }
            }
        }
        if alignment != GGUFHeader.defaultAlignment && !keys.contains("general.alignment") {
            entries.append(GGUFMetadataEntry(key: "general.alignment", value: .uint32(UInt32(alignment))))
        }

        var out = ByteWriter()
        out.bytes.append(contentsOf: GGUFHeader.magic)
        out.append(UInt32(3))
        out.append(UInt64(specs.count))
        out.append(UInt64(entries.count))
        for entry in entries {
            out.append(string: entry.key)
            out.append(UInt32(entry.value.type.rawValue))
            out.append(entry.value)
        }

        var names = Set<String>()
        var relative: [(spec: GGUFTensorSpec, offset: Int, byteCount: Int)] = []
        var next = 0
        for spec in specs {
            guard names.insert(spec.name).inserted else { throw .invalidSpec(file: file, tensor: spec.name, reason: "tensor name given twice") }
            let byteCount = try Self.byteCount(of: spec, file: file)
            out.append(string: spec.name)
            out.append(UInt32(spec.shape.count))
            for d in spec.shape.reversed() { out.append(UInt64(d)) }
            out.append(spec.type.rawValue)
            out.append(UInt64(next))
            relative.append((spec, next, byteCount))
            let (padded, overflow) = Self.roundUp(byteCount, alignment)
            let (sum, overflow2) = next.addingReportingOverflow(padded)
            guard !overflow, !overflow2 else { throw .invalidSpec(file: file, tensor: spec.name, reason: "the file would exceed 2^63 bytes") }
            next = sum
        }
        let (dataStart, overflow) = Self.roundUp(out.bytes.count, alignment)
        let (total, overflow2) = dataStart.addingReportingOverflow(next)
        guard !overflow, !overflow2 else { throw .invalidSpec(file: file, tensor: nil, reason: "the file would exceed 2^63 bytes") }

        self.file = file
        self.metadata = entries
        self.alignment = alignment
        self.headerBytes = out.bytes
        self.dataStart = dataStart
        self.tensors = relative.map { item in
            GGUFTensorInfo(name: item.spec.name, shape: item.spec.shape, type: item.spec.type,
                           byteRange: (dataStart + item.offset)..<(dataStart + item.offset + item.byteCount))
        }
        self.totalSize = total
    }

    /// The whole file for tensors held in memory (each tensor's bytes in its type), as a writer
    /// would stream it; for small files and tests.
    public static func serialize(metadata: [GGUFMetadataEntry], tensors: [(spec: GGUFTensorSpec, bytes: [UInt8])],
                                 alignment: Int = GGUFHeader.defaultAlignment, file: String = "<output>") throws(GGUFError) -> [UInt8] {
        let layout = try GGUFLayout(metadata: metadata, tensors: tensors.map(\.spec), alignment: alignment, file: file)
        var out = layout.headerBytes
        out.reserveCapacity(layout.totalSize)
        out.append(contentsOf: repeatElement(0, count: layout.headerPadding))
        for (i, tensor) in tensors.enumerated() {
            guard tensor.bytes.count == layout.tensors[i].byteCount else {
                throw .invalidSpec(file: file, tensor: tensor.spec.name,
                                   reason: "expected \(layout.tensors[i].byteCount) bytes of data, got \(tensor.bytes.count)")
            }
            out.append(contentsOf: tensor.bytes)
            out.append(contentsOf: repeatElement(0, count: layout.padding(after: i)))
        }
        return out
    }

    /// Bytes of a tensor spec, after checking its shape against its type.
    static func byteCount(of spec: GGUFTensorSpec, file: String) throws(GGUFError) -> Int {
        guard spec.shape.count <= GGUFHeader.maximumDimensions else {
            throw .invalidSpec(file: file, tensor: spec.name, reason: "\(spec.shape.count) dimensions, but ggml tensors have at most 4")
        }
        guard spec.shape.allSatisfy({ $0 >= 0 }) else {
            throw .invalidSpec(file: file, tensor: spec.name, reason: "negative dimension in \(spec.shape)")
        }
        var product = 1
        for d in spec.shape where d != 0 {
            let (p, overflow) = product.multipliedReportingOverflow(by: d)
            guard !overflow else { throw .invalidSpec(file: file, tensor: spec.name, reason: "shape \(spec.shape) overflows") }
            product = p
        }
        let elements = spec.shape.contains(0) ? 0 : product
        guard (spec.shape.last ?? 1) % spec.type.blockSize == 0 else {
            throw .invalidSpec(file: file, tensor: spec.name,
                               reason: "innermost dimension \(spec.shape.last ?? 1) is not a multiple of \(spec.type.name)'s block size \(spec.type.blockSize)")
        }
        guard let bytes = spec.type.byteCount(elements: elements) else {
            throw .invalidSpec(file: file, tensor: spec.name, reason: "shape \(spec.shape) overflows as \(spec.type.name)")
        }
        return bytes
    }

    /// `value` rounded up to a multiple of `alignment` (a power of two), and whether that overflowed.
    static func roundUp(_ value: Int, _ alignment: Int) -> (value: Int, overflow: Bool) {
        let (sum, overflow) = value.addingReportingOverflow(alignment - 1)
        return (sum & ~(alignment - 1), overflow)
    }
}

/// Little-endian serialization of GGUF fields, as gguf-py's `GGUFWriter._pack_val` writes them.
struct ByteWriter {
    var bytes: [UInt8] = []

    mutating func append<T: FixedWidthInteger>(_ value: T) {
        withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) }
    }

    mutating func append(string: String) {
        let utf8 = Array(string.utf8)
        append(UInt64(utf8.count))
        bytes.append(contentsOf: utf8)
    }

    mutating func append(_ value: GGUFValue) {
        switch value {
        case let .uint8(v): append(v)
        case let .int8(v): append(v)
        case let .uint16(v): append(v)
        case let .int16(v): append(v)
        case let .uint32(v): append(v)
        case let .int32(v): append(v)
        case let .float32(v): append(v.bitPattern)
        case let .bool(v): append(UInt8(v ? 1 : 0))
        case let .string(v): append(string: v)
        case let .array(v): append(v)
        case let .uint64(v): append(v)
        case let .int64(v): append(v)
        case let .float64(v): append(v.bitPattern)
        }
    }

    mutating func append(_ array: GGUFArray) {
        append(array.elementType.rawValue)
        append(UInt64(array.count))
        switch array {
        case let .uint8(a): for v in a { append(v) }
        case let .int8(a): for v in a { append(v) }
        case let .uint16(a): for v in a { append(v) }
        case let .int16(a): for v in a { append(v) }
        case let .uint32(a): for v in a { append(v) }
        case let .int32(a): for v in a { append(v) }
        case let .float32(a): for v in a { append(v.bitPattern) }
        case let .bool(a): for v in a { append(UInt8(v ? 1 : 0)) }
        case let .string(a): for v in a { append(string: v) }
        case let .array(a): for v in a { append(v) }
        case let .uint64(a): for v in a { append(v) }
        case let .int64(a): for v in a { append(v) }
        case let .float64(a): for v in a { append(v.bitPattern) }
        }
    }
}
