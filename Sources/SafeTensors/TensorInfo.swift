/// The description of one tensor in a safetensors file: its name, element type, shape and the
/// byte range of its data relative to the start of the byte buffer (end exclusive).
public struct TensorInfo: Sendable, Hashable {
    /// The tensor's key in the header.
    public var name: String
    /// Element type.
    public var dtype: DType
    /// Row-major shape; `[]` is a scalar.
    public var shape: [Int]
    /// Byte range inside the data buffer (relative to the end of the header).
    public var dataRange: Range<Int>

    /// Creates a description; `dataRange` is relative to the start of the data buffer.
    public init(name: String, dtype: DType, shape: [Int], dataRange: Range<Int>) {
        self.name = name
        self.dtype = dtype
        self.shape = shape
        self.dataRange = dataRange
    }

    /// Number of elements (product of the shape; 1 for a scalar).
    public var elementCount: Int { shape.reduce(1, *) }

    /// Number of bytes of data.
    public var byteCount: Int { dataRange.count }
}

/// What a writer needs to know about a tensor before any of its bytes exist.
public struct TensorSpec: Sendable, Hashable {
    /// The tensor's key.
    public var name: String
    /// Element type.
    public var dtype: DType
    /// Row-major shape.
    public var shape: [Int]

    /// Creates a description of a tensor to be written.
    public init(name: String, dtype: DType, shape: [Int]) {
        self.name = name
        self.dtype = dtype
        self.shape = shape
    }

    /// Number of elements, or nil if the product overflows.
    public var elementCount: Int? {
        var total = 1
        for d in shape {
            guard d >= 0 else { return nil }
            let (p, o) = total.multipliedReportingOverflow(by: d)
            if o { return nil }
            total = p
        }
        return total
    }

    /// Number of bytes, or nil when it is not a whole number of bytes or overflows.
    public var byteCount: Int? { elementCount.flatMap { dtype.byteCount(elements: $0) } }
}
