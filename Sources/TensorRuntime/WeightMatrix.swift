/// A frozen weight matrix (`rows` = output features, `columns` = input features, row-major) as it
/// is stored: Float32, BFloat16 or Float16, either in memory the matrix owns or in memory kept
/// alive by an owner (typically a mapped checkpoint file). Half-precision weights stay half
/// precision and are widened to Float32 tile by tile when a linear layer uses them, so a model
/// stored in bf16 needs about two bytes per parameter.
public struct WeightMatrix: @unchecked Sendable {
    /// How each element is stored.
    public enum Element: Sendable, Hashable {
        case float32, bfloat16, float16
        /// ggml's Q8_0 blocks (GGUF): per 32 values an fp16 scale d and 32 int8 q, value = d·q.
        /// Rows are whole blocks (`columns` a multiple of 32).
        case q8_0

        /// Values per Q8_0 block, and the block's bytes.
        public static let q8BlockValues = 32, q8BlockBytes = 34

        /// Bytes per element (for Q8_0, 1: use `rowByteCount`, which counts the scales).
        public var byteWidth: Int {
            switch self {
            case .float32: return 4
            case .bfloat16, .float16: return 2
            case .q8_0: return 1
            }
        }

        /// Bytes one row of `columns` values takes.
        public func rowByteCount(_ columns: Int) -> Int {
            self == .q8_0 ? columns / Self.q8BlockValues * Self.q8BlockBytes : columns * byteWidth
        }
    }

    /// Output features.
    public let rows: Int
    /// Input features.
    public let columns: Int
    /// The stored element type.
    public let element: Element
    /// Start of the row-major elements (`rows * columns * element.byteWidth` bytes). Valid as long
    /// as `owner` is alive. Not necessarily aligned to the element size.
    public let baseAddress: UnsafeRawPointer
    /// Keeps the memory behind `baseAddress` alive.
    public let owner: AnyObject

    /// A matrix over memory kept alive by `owner`. The caller guarantees `bytes` holds
    /// `rows * columns` elements of `element` for as long as `owner` lives.
    public init(rows: Int, columns: Int, element: Element, bytes: UnsafeRawPointer, owner: AnyObject) {
        precondition(element != .q8_0 || columns % Element.q8BlockValues == 0, "WeightMatrix: Q8_0 rows of \(columns) values are not whole blocks")
        precondition(rows >= 0 && columns >= 0, "WeightMatrix: negative size")
        self.rows = rows
        self.columns = columns
        self.element = element
        self.baseAddress = bytes
        self.owner = owner
    }

    /// A matrix owning a copy of `bytes` (`rows * columns` elements of `element`, little-endian).
    public init(rows: Int, columns: Int, element: Element, copying bytes: UnsafeRawBufferPointer) {
        precondition(element != .q8_0 || columns % Element.q8BlockValues == 0, "WeightMatrix: Q8_0 rows of \(columns) values are not whole blocks")
        precondition(bytes.count == rows * element.rowByteCount(columns),
                     "WeightMatrix: \(bytes.count) bytes do not hold \(rows)×\(columns) \(element)")
        let storage = OwnedBytes(copying: bytes)
        self.init(rows: rows, columns: columns, element: element, bytes: storage.pointer, owner: storage)
    }

    /// A Float32 matrix owning the values of `tensor` (shape `[rows, columns...]`; trailing
    /// dimensions are flattened into the columns, as a convolution kernel used as a linear map).
    public init(_ tensor: Tensor) {
        let rows = tensor.shape.first ?? 1
        let columns = rows == 0 ? 0 : tensor.count / rows
        let copy = tensor.scalars.withUnsafeBytes { OwnedBytes(copying: $0) }
        self.init(rows: rows, columns: columns, element: .float32, bytes: copy.pointer, owner: copy)
    }

    /// Bytes occupied by the elements.
    public var byteCount: Int { rows * element.rowByteCount(columns) }
}

/// Heap memory owned by a `WeightMatrix`, 64-byte aligned, freed with the last reference.
final class OwnedBytes: @unchecked Sendable {
    let pointer: UnsafeRawPointer
    let count: Int

    init(copying bytes: UnsafeRawBufferPointer) {
        // Invariant: the allocation is at least one byte so `pointer` is never dangling.
        let memory = UnsafeMutableRawPointer.allocate(byteCount: max(1, bytes.count), alignment: 64)
        if let source = bytes.baseAddress, bytes.count > 0 {
            memory.copyMemory(from: source, byteCount: bytes.count)
        }
        pointer = UnsafeRawPointer(memory)
        count = bytes.count
    }

    deinit { UnsafeMutableRawPointer(mutating: pointer).deallocate() }
}
