/// The element type of a tensor, exactly as named in a safetensors header.
///
/// The raw value is the header spelling (`"BF16"`, `"F8_E4M3"`, ...). Sub-byte kinds (`F4`, the
/// two `F6` kinds) are packed little-endian: see `docs/safetensors.md`.
public enum DType: String, CaseIterable, Sendable, Hashable, Codable {
    case bool = "BOOL"
    case f4 = "F4"
    case f6e2m3 = "F6_E2M3"
    case f6e3m2 = "F6_E3M2"
    case u8 = "U8"
    case i8 = "I8"
    case f8e5m2 = "F8_E5M2"
    case f8e4m3 = "F8_E4M3"
    case f8e8m0 = "F8_E8M0"
    case f8e4m3fnuz = "F8_E4M3FNUZ"
    case f8e5m2fnuz = "F8_E5M2FNUZ"
    case i16 = "I16"
    case u16 = "U16"
    case f16 = "F16"
    case bf16 = "BF16"
    case i32 = "I32"
    case u32 = "U32"
    case f32 = "F32"
    case c64 = "C64"
    case f64 = "F64"
    case i64 = "I64"
    case u64 = "U64"

    /// Size of one element in bits.
    public var bits: Int {
        switch self {
        case .f4: return 4
        case .f6e2m3, .f6e3m2: return 6
        case .bool, .u8, .i8, .f8e5m2, .f8e4m3, .f8e8m0, .f8e4m3fnuz, .f8e5m2fnuz: return 8
        case .i16, .u16, .f16, .bf16: return 16
        case .i32, .u32, .f32: return 32
        case .c64, .f64, .i64, .u64: return 64
        }
    }

    /// The writer's ordering rank: the reference writer sorts tensors by this rank, descending,
    /// then by name. It is the declaration order of the reference implementation's enum.
    public var alignmentRank: Int { DType.allCases.firstIndex(of: self)! }

    /// Whether the kind holds real floating-point numbers that convert to and from `Float`.
    public var isFloatingPoint: Bool {
        switch self {
        case .f4, .f6e2m3, .f6e3m2, .f8e5m2, .f8e4m3, .f8e8m0, .f8e4m3fnuz, .f8e5m2fnuz,
             .f16, .bf16, .f32, .f64:
            return true
        default:
            return false
        }
    }

    /// Parses the names users type on the command line (`bf16`, `fp16`, `float32`, `f8_e4m3`, ...)
    /// as well as the exact header spellings.
    public init?(userSpelling text: String) {
        if let exact = DType(rawValue: text) { self = exact; return }
        switch text.lowercased() {
        case "bf16", "bfloat16": self = .bf16
        case "fp16", "f16", "half", "float16": self = .f16
        case "fp32", "f32", "float", "float32": self = .f32
        case "fp64", "f64", "double", "float64": self = .f64
        case "f8_e4m3", "fp8", "fp8_e4m3", "f8e4m3", "float8_e4m3fn", "fp8_e4m3fn", "f8_e4m3fn": self = .f8e4m3
        case "f8_e5m2", "fp8_e5m2", "f8e5m2", "float8_e5m2": self = .f8e5m2
        default:
            if let upper = DType(rawValue: text.uppercased()) { self = upper } else { return nil }
        }
    }

    /// Number of bytes `count` elements occupy, or nil when the count is not a whole number of
    /// bytes (sub-byte kinds) or the product overflows.
    public func byteCount(elements count: Int) -> Int? {
        let (bitTotal, overflow) = count.multipliedReportingOverflow(by: bits)
        guard !overflow, bitTotal % 8 == 0 else { return nil }
        return bitTotal / 8
    }
}
