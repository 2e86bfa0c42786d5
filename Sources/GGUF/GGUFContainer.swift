import SafeTensors
import SystemSupport

/// ggml block types read row by row through the tensor source (`TensorEntry.decodeRows`).
extension GGUFType: BlockEncoding {
    /// Bytes one row of `rowLength` values takes (`rowLength` is a whole number of blocks).
    public func rowByteCount(rowLength: Int) -> Int { rowLength / blockSize * typeSize }

    /// Decodes whole rows; types FlowGuard cannot decode never reach here (`GGUFContainerReader`
    /// refuses them when reading rows is asked for: see `TensorEntry.decodeRows`).
    public func decode(_ raw: UnsafeRawBufferPointer, into output: UnsafeMutableBufferPointer<Float>) {
        precondition(isDecodable, "GGUF type \(name) cannot be decoded")
        dequantize(raw, into: output)
    }
}

/// Reads GGUF files for `TensorCollection` / `SafeTensorsFile`: the validated GGUF header becomes
/// tensors with row-major shapes; F32, F16 and BF16 tensors are plain values (copied raw when the
/// output dtype matches), every other type is a block encoding decoded row by row.
public struct GGUFContainerReader: ContainerReader {
    /// A reader.
    public init() {}

    /// Whether the file begins with `GGUF`.
    public func recognises(_ magic: [UInt8]) -> Bool { magic.starts(with: GGUFHeader.magic) }

    /// Parses and validates the header (see `GGUFHeader.parse`).
    public func read(_ bytes: UnsafeRawBufferPointer, file: String) throws(SafeTensorsError) -> ContainerLayout {
        let header: GGUFHeader
        do { header = try GGUFHeader.parse(bytes, file: file) } catch { throw .container(file: file, reason: error.description) }
        return GGUFContainerReader.layout(header)
    }

    /// The tensor-source view of a parsed header.
    public static func layout(_ header: GGUFHeader) -> ContainerLayout {
        var tensors: [TensorInfo] = []
        var encodings: [String: any BlockEncoding] = [:]
        for tensor in header.tensors.sorted(by: { $0.byteRange.lowerBound < $1.byteRange.lowerBound }) {
            let range = (tensor.byteRange.lowerBound - header.dataStart)..<(tensor.byteRange.upperBound - header.dataStart)
            let plain: DType?
            switch tensor.type {
            case .f32: plain = .f32
            case .f16: plain = .f16
            case .bf16: plain = .bf16
            case .f64: plain = .f64
            case .i8: plain = .i8
            case .i16: plain = .i16
            case .i32: plain = .i32
            case .i64: plain = .i64
            default: plain = nil
            }
            if plain == nil { encodings[tensor.name] = tensor.type }
            tensors.append(TensorInfo(name: tensor.name, dtype: plain ?? .f32, shape: tensor.shape, dataRange: range))
        }
        let details = header.metadata.map { (key: escapeForDisplay($0.key), value: displayText($0.value)) }
        return ContainerLayout(format: "GGUF", tensors: tensors, dataStart: header.dataStart, encodings: encodings,
                               details: [(key: "GGUF version", value: String(header.version))] + details)
    }

    /// A metadata value as one line of display text: strings escaped and quoted, long arrays
    /// summarised by element type and count.
    public static func displayText(_ value: GGUFValue) -> String {
        switch value {
        case let .uint8(v): return String(v)
        case let .int8(v): return String(v)
        case let .uint16(v): return String(v)
        case let .int16(v): return String(v)
        case let .uint32(v): return String(v)
        case let .int32(v): return String(v)
        case let .uint64(v): return String(v)
        case let .int64(v): return String(v)
        case let .float32(v): return String(v)
        case let .float64(v): return String(v)
        case let .bool(v): return String(v)
        case let .string(s):
            let shown = s.count > 200 ? String(s.prefix(200)) + "…" : s
            return "\"" + escapeForDisplay(shown) + "\""
        case let .array(a): return "[\(a.elementType) × \(a.count)]"
        }
    }
}
