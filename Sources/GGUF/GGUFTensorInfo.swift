/// One tensor of a GGUF file: its name, row-major shape, ggml type and where its bytes are.
public struct GGUFTensorInfo: Sendable, Hashable {
    /// The tensor's name (`double_blocks.0.img_attn.qkv.weight`).
    public let name: String
    /// Row-major shape, outermost dimension first (ggml stores dimensions innermost first; this
    /// is their reverse). Empty for a 0-dimensional (scalar) tensor.
    public let shape: [Int]
    /// How the values are stored.
    public let type: GGUFType
    /// The tensor's bytes, as absolute offsets in the file.
    public let byteRange: Range<Int>
    /// Byte offset of the tensor's info record (its name length field) in the file; 0 for a
    /// tensor planned by the writer.
    public let infoOffset: Int

    /// A tensor description. `byteRange` must match the shape and type (the parser and the
    /// writer guarantee it).
    public init(name: String, shape: [Int], type: GGUFType, byteRange: Range<Int>, infoOffset: Int = 0) {
        self.name = name
        self.shape = shape
        self.type = type
        self.byteRange = byteRange
        self.infoOffset = infoOffset
    }

    /// Number of values (the product of the shape; 1 for a scalar).
    public var elementCount: Int { shape.reduce(1, *) }

    /// Values per row: the innermost dimension (1 for a scalar), a whole number of blocks.
    public var rowLength: Int { shape.last ?? 1 }

    /// Number of rows (elements / row length; 0 when the tensor is empty).
    public var rowCount: Int { rowLength == 0 ? 0 : elementCount / rowLength }

    /// Bytes per row.
    public var rowByteCount: Int { rowLength / type.blockSize * type.typeSize }

    /// Number of bytes.
    public var byteCount: Int { byteRange.count }
}
