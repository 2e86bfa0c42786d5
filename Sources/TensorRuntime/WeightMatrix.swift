/// How the rows of a weight stored in an encoding the runtime does not decode by itself (GGUF
/// Q4_0…Q6_K blocks, ComfyUI scaled fp8) become Float32 values. The module that reads the
/// checkpoint supplies its own decoder, so the runtime decodes exactly the values that module
/// would give when reading the tensor eagerly. Called from several threads at once.
public protocol WeightEncoding: Sendable {
    /// The stored type as users see it (`Q4_K`).
    var name: String { get }
    /// Bytes `count` values take; `count` is a whole number of matrix rows.
    func byteCount(values count: Int) -> Int
    /// Decodes `count` values (a whole number of matrix rows) whose bytes start at `source` into
    /// `target`. `source` holds `byteCount(values: count)` bytes, not necessarily aligned.
    func decode(_ source: UnsafeRawPointer, count: Int, into target: UnsafeMutablePointer<Float>)
}

/// A frozen weight matrix (`rows` = output features, `columns` = input features, row-major) as it
/// is stored: Float32, BFloat16, Float16, Q8_0 blocks or any other `WeightEncoding`, either in
/// memory the matrix owns or in memory kept alive by an owner (typically a mapped checkpoint
/// file). Weights other than aligned Float32 stay in their stored form and are decoded to Float32
/// panel by panel when a linear layer uses them, so a model stored in bf16 needs about two bytes
/// per parameter and one stored in Q4_K about 4.5 bits.
public struct WeightMatrix: @unchecked Sendable {
    /// How each element is stored.
    public enum Element: Sendable, Hashable {
        case float32, bfloat16, float16
        /// ggml's Q8_0 blocks (GGUF): per 32 values an fp16 scale d and 32 int8 q, value = d·q.
        /// Rows are whole blocks (`columns` a multiple of 32). Decoded by the runtime's own kernel.
        case q8_0
        /// Rows decoded by the encoding of the module that read them (other GGUF block types,
        /// scaled fp8). Rows are whole bytes of the encoding.
        case encoded(any WeightEncoding)

        /// Values per Q8_0 block, and the block's bytes.
        public static let q8BlockValues = 32, q8BlockBytes = 34

        /// Bytes per element (for Q8_0 and encoded rows, 1: use `rowByteCount`, which counts
        /// the scales).
        public var byteWidth: Int {
            switch self {
            case .float32: return 4
            case .bfloat16, .float16: return 2
            case .q8_0, .encoded: return 1
            }
        }

        /// Bytes one row of `columns` values takes.
        public func rowByteCount(_ columns: Int) -> Int {
            switch self {
            case .q8_0: return columns / Self.q8BlockValues * Self.q8BlockBytes
            case .encoded(let encoding): return encoding.byteCount(values: columns)
            default: return columns * byteWidth
            }
        }

        /// The stored type's name: `F32`, `BF16`, `F16`, `Q8_0`, or the encoding's (`Q4_K`).
        public var name: String {
            switch self {
            case .float32: return "F32"
            case .bfloat16: return "BF16"
            case .float16: return "F16"
            case .q8_0: return "Q8_0"
            case .encoded(let encoding): return encoding.name
            }
        }

        /// Elements are equal when they name the same stored type (two encodings of one name
        /// decode the same way up to their parameters, such as a scaled-fp8 scale).
        public static func == (a: Element, b: Element) -> Bool {
            switch (a, b) {
            case (.float32, .float32), (.bfloat16, .bfloat16), (.float16, .float16), (.q8_0, .q8_0): return true
            case (.encoded(let x), .encoded(let y)): return x.name == y.name
            default: return false
            }
        }

        /// Hashes the stored type's name, consistently with `==`.
        public func hash(into hasher: inout Hasher) {
            if case .encoded = self { hasher.combine(1) } else { hasher.combine(0) }
            hasher.combine(name)
        }
    }

    /// Output features.
    public let rows: Int
    /// Input features.
    public let columns: Int
    /// The stored element type.
    public let element: Element
    /// Start of the row-major elements (`rows * element.rowByteCount(columns)` bytes). Valid as long
    /// as `owner` is alive. Not necessarily aligned to the element size.
    public let baseAddress: UnsafeRawPointer
    /// Keeps the memory behind `baseAddress` alive.
    public let owner: AnyObject

    /// A matrix over memory kept alive by `owner`. The caller guarantees `bytes` holds
    /// `rows` rows of `columns` elements of `element` (`byteCount` bytes) for as long as `owner`
    /// lives.
    public init(rows: Int, columns: Int, element: Element, bytes: UnsafeRawPointer, owner: AnyObject) {
        precondition(element != .q8_0 || columns % Element.q8BlockValues == 0, "WeightMatrix: Q8_0 rows of \(columns) values are not whole blocks")
        precondition(rows >= 0 && columns >= 0, "WeightMatrix: negative size")
        self.rows = rows
        self.columns = columns
        self.element = element
        self.baseAddress = bytes
        self.owner = owner
    }

    /// A matrix owning a copy of `bytes` (`rows` rows of `columns` elements of `element`,
    /// little-endian).
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

    /// Bytes occupied by the elements as stored (what the matrix keeps resident, in the mapping
    /// or in memory it owns; decoding for a product uses a bounded scratch panel besides).
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
