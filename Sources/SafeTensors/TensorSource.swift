/// How the rows of a tensor stored in blocks (a GGUF quantization type) become `Float` values.
/// Implemented by the container module that knows the blocks (`GGUF`); the layers above read
/// such tensors row by row through `TensorEntry.decodeRows`, never by dtype arithmetic.
public protocol BlockEncoding: Sendable {
    /// The storage type's name as users see it (`Q8_0`).
    var name: String { get }
    /// Average bits one stored value takes.
    var bitsPerWeight: Double { get }
    /// Whether FlowGuard can decode this encoding (it can list, but not read, the others).
    var isDecodable: Bool { get }
    /// Bytes one row of `rowLength` values takes (`rowLength` is a whole number of blocks).
    func rowByteCount(rowLength: Int) -> Int
    /// Decodes whole rows: `raw` holds `output.count / rowLength` rows' bytes.
    func decode(_ raw: UnsafeRawBufferPointer, into output: UnsafeMutableBufferPointer<Float>)
}

/// What a container other than safetensors hands `SafeTensorsFile` after reading its own header:
/// the tensors with row-major shapes and byte ranges relative to `dataStart`, the block encoding of
/// each tensor that is not plain little-endian `dtype` values, and metadata to show.
public struct ContainerLayout: Sendable {
    /// The container's name (`GGUF`).
    public var format: String
    /// The tensors, each with a byte range relative to `dataStart`. A block-encoded tensor's
    /// `dtype` is the type its values decode to (`F32`).
    public var tensors: [TensorInfo]
    /// Absolute offset of the data section.
    public var dataStart: Int
    /// The block encoding of each tensor stored in blocks, by name.
    public var encodings: [String: any BlockEncoding]
    /// Metadata as display text, in file order (`general.architecture = flux`).
    public var details: [(key: String, value: String)]
    /// Metadata a converter may carry into a safetensors output.
    public var metadata: [(key: String, value: String)]?

    /// A layout as read by a container's reader.
    public init(format: String, tensors: [TensorInfo], dataStart: Int, encodings: [String: any BlockEncoding],
                details: [(key: String, value: String)], metadata: [(key: String, value: String)]? = nil) {
        self.format = format
        self.tensors = tensors
        self.dataStart = dataStart
        self.encodings = encodings
        self.details = details
        self.metadata = metadata
    }
}

/// A reader of another checkpoint container, handed to `TensorCollection` / `SafeTensorsFile` by
/// the module that owns "open any container" (`Checkpoints`): SafeTensors does not know GGUF.
public protocol ContainerReader: Sendable {
    /// Whether a file beginning with `magic` (its first 8 bytes, fewer for a shorter file) is one
    /// of this container's.
    func recognises(_ magic: [UInt8]) -> Bool
    /// Reads and validates the header of the whole mapped file `bytes`; `file` names it in errors.
    func read(_ bytes: UnsafeRawBufferPointer, file: String) throws(SafeTensorsError) -> ContainerLayout
}

/// Files that are not safetensors, recognised by their first bytes so a wrong input gets a
/// sentence saying what it is instead of a header-length error.
public enum ForeignFile {
    /// What the file that begins with `magic` is, and what to do, when it is not a safetensors file
    /// and no reader for it was given; nil when the bytes could be a safetensors header.
    public static func describe(_ magic: [UInt8], path: String) -> String? {
        if magic.starts(with: Array("GGUF".utf8)) {
            return "is a GGUF file; this command reads safetensors only (convert it first: "
                + "flowguard convert \(path) OUT.safetensors --layout original)"
        }
        if magic.starts(with: Array("FGDELTA".utf8)) {
            return "is a FlowGuard delta archive (.fgdelta), not a checkpoint; "
                + "unpack it with `flowguard lora unpack` or give it as an adapter"
        }
        // A zip archive (torch.save since 1.6) or a raw pickle stream (protocol 2–5 opcode).
        let isZip = magic.starts(with: [0x50, 0x4B, 0x03, 0x04])
        let isPickle = magic.count >= 2 && magic[0] == 0x80 && (2...5).contains(magic[1])
        if isZip || isPickle {
            return "is a pickle checkpoint (torch.save \(isZip ? "zip archive" : "stream")); pickle checkpoints are not read: "
                + "convert them with `python -c \"import torch, safetensors.torch as s; "
                + "s.save_file(torch.load('IN', weights_only=True), 'OUT.safetensors')\"` "
                + "(or ComfyUI / diffusers' save) first"
        }
        return nil
    }
}

extension TensorEntry {
    /// Whether the bytes are plain little-endian `info.dtype` values (safetensors, GGUF F32/F16/BF16):
    /// byte ranges may be copied raw and decoded with `FloatCodec`.
    public var isPlain: Bool { encoding == nil }

    /// The stored type's name: the dtype (`BF16`), or the block encoding (`Q8_0`).
    public var storageName: String { encoding?.name ?? info.dtype.rawValue }

    /// Bits one stored value takes.
    public var bitsPerWeight: Double { encoding?.bitsPerWeight ?? Double(info.dtype.bits) }

    /// Values per dim-0 row (1 for a scalar or 1-d tensor).
    public var rowElements: Int { info.shape.dropFirst().reduce(1, *) }

    /// Number of dim-0 rows (1 for a scalar).
    public var rowCount: Int { info.shape.first ?? 1 }

    /// Bytes one dim-0 row takes, nil for sub-byte plain dtypes whose rows are not whole bytes.
    /// For a block-encoded tensor the innermost dimension is a whole number of blocks, so every
    /// dim-0 row (a run of innermost rows) is a whole number of bytes.
    public var rowByteCount: Int? {
        guard let encoding else { return info.dtype.byteCount(elements: rowElements) }
        // The blocks of a 0- or 1-d tensor run along dim 0: its rows are not whole bytes.
        guard info.shape.count >= 2 else { return nil }
        let inner = info.shape.last ?? 1
        guard inner > 0 else { return 0 }
        return encoding.rowByteCount(rowLength: inner) * (rowElements / inner)
    }

    /// Decodes dim-0 rows `rows` to Float into `output` (`rows.count × rowElements` values).
    /// Plain float dtypes decode with `FloatCodec`; blocks with their encoding.
    public func decodeRows(_ rows: Range<Int>, into output: UnsafeMutableBufferPointer<Float>) throws(SafeTensorsError) {
        precondition(rows.lowerBound >= 0 && rows.upperBound <= rowCount, "decodeRows: rows outside the tensor")
        precondition(output.count == rows.count * rowElements, "decodeRows: output size does not match the rows")
        if let encoding, !encoding.isDecodable {
            throw .conversion(file: file.path, tensor: info.name, reason: "\(encoding.name) blocks cannot be decoded by FlowGuard "
                              + "(it decodes F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1 and Q2_K–Q6_K)")
        }
        guard encoding != nil || FloatCodec.canDecode(info.dtype) else {
            throw .conversion(file: file.path, tensor: info.name, reason: "\(info.dtype.rawValue) values cannot be read as numbers")
        }
        guard let rowBytes = rowByteCount else {
            // Sub-byte plain kinds and 1-d block tensors: decode the whole tensor, take the rows.
            let all = try floats()
            _ = output.initialize(from: all[(rows.lowerBound * rowElements)..<(rows.upperBound * rowElements)])
            return
        }
        let begin = file.fileOffset(of: info) + rows.lowerBound * rowBytes
        file.withBytes(fileRange: begin..<(begin + rows.count * rowBytes)) { raw in
            if let encoding { encoding.decode(raw, into: output) } else { FloatCodec.decode(info.dtype, from: raw, into: output) }
        }
    }

    /// Decodes dim-0 rows `rows` as `decodeRows(_:into:)` does, but reads their bytes with one
    /// `pread` into `scratch` (at least `rows.count × rowByteCount` bytes) instead of faulting
    /// the mapping in page by page: for streams that read each byte once, on several threads.
    /// Tensors whose rows are not whole bytes take the mapped path.
    public func decodeRows(_ rows: Range<Int>, into output: UnsafeMutableBufferPointer<Float>,
                           reading scratch: UnsafeMutableRawBufferPointer) throws(SafeTensorsError) {
        guard let rowBytes = rowByteCount, encoding?.isDecodable ?? FloatCodec.canDecode(info.dtype) else {
            return try decodeRows(rows, into: output)
        }
        precondition(rows.lowerBound >= 0 && rows.upperBound <= rowCount, "decodeRows: rows outside the tensor")
        precondition(output.count == rows.count * rowElements, "decodeRows: output size does not match the rows")
        try read(bytes: file.fileOffset(of: info) + rows.lowerBound * rowBytes, count: rows.count * rowBytes, into: output, scratch)
    }

    /// Bytes one innermost row (a run of `shape.last` values) takes; nil for 0- and 1-d tensors
    /// and for sub-byte plain dtypes whose innermost rows are not whole bytes.
    public var innerRowByteCount: Int? {
        guard info.shape.count >= 2, let inner = info.shape.last else { return nil }
        guard let encoding else { return info.dtype.byteCount(elements: inner) }
        return inner > 0 ? encoding.rowByteCount(rowLength: inner) : 0
    }

    /// Decodes innermost rows `rows` (row i holds values i·inner ..< (i + 1)·inner of the tensor
    /// in row-major order, inner = `shape.last`) into `output`, their bytes read with one `pread`
    /// into `scratch`: for a dim-0 row too large to hold at once (SD3's `pos_embed`, one row of
    /// 226 M values). Requires `innerRowByteCount`.
    public func decodeInnerRows(_ rows: Range<Int>, into output: UnsafeMutableBufferPointer<Float>,
                                reading scratch: UnsafeMutableRawBufferPointer) throws(SafeTensorsError) {
        guard let rowBytes = innerRowByteCount, let inner = info.shape.last else {
            preconditionFailure("decodeInnerRows: '\(info.name)' has no whole-byte innermost rows")
        }
        if let encoding, !encoding.isDecodable {
            throw .conversion(file: file.path, tensor: info.name, reason: "\(encoding.name) blocks cannot be decoded by FlowGuard "
                              + "(it decodes F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1 and Q2_K–Q6_K)")
        }
        guard encoding != nil || FloatCodec.canDecode(info.dtype) else {
            throw .conversion(file: file.path, tensor: info.name, reason: "\(info.dtype.rawValue) values cannot be read as numbers")
        }
        precondition(rows.lowerBound >= 0 && rows.upperBound * inner <= info.elementCount, "decodeInnerRows: rows outside the tensor")
        precondition(output.count == rows.count * inner, "decodeInnerRows: output size does not match the rows")
        try read(bytes: (file.fileOffset(of: info) + rows.lowerBound * rowBytes), count: rows.count * rowBytes, into: output, scratch)
    }

    /// Reads `count` bytes at file offset `begin` into `scratch` with one `pread` and decodes them
    /// into `output`.
    private func read(bytes begin: Int, count: Int, into output: UnsafeMutableBufferPointer<Float>,
                      _ scratch: UnsafeMutableRawBufferPointer) throws(SafeTensorsError) {
        precondition(scratch.count >= count, "decode: scratch smaller than the rows' bytes")
        let bytes = UnsafeMutableRawBufferPointer(rebasing: scratch[0..<count])
        let read: Int
        do { read = try file.descriptor.read(into: bytes, at: begin) } catch { throw .system(error) }
        guard read == count else {
            throw .io(file: file.path, operation: "read tensor '\(info.name)'",
                      message: "the file ends at byte \(begin + read), inside the tensor's data (bytes \(begin)..<\(begin + count)): it was truncated after it was opened")
        }
        let raw = UnsafeRawBufferPointer(bytes)
        if let encoding { encoding.decode(raw, into: output) } else { FloatCodec.decode(info.dtype, from: raw, into: output) }
    }

    /// Every value widened to Float.
    public func floats() throws(SafeTensorsError) -> [Float] {
        guard let encoding else { return try file.floats(of: info) }
        if !encoding.isDecodable {
            throw .conversion(file: file.path, tensor: info.name, reason: "\(encoding.name) blocks cannot be decoded by FlowGuard "
                              + "(it decodes F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1 and Q2_K–Q6_K)")
        }
        let count = info.elementCount
        return file.withBytes(of: info) { raw in
            [Float](unsafeUninitializedCapacity: count) { buffer, initialized in
                encoding.decode(raw, into: buffer)
                initialized = count
            }
        }
    }
}
