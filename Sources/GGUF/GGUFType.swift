/// A ggml tensor type as GGUF files store it (`ggml_type`, gguf-py `GGMLQuantizationType`), with
/// the block geometry from gguf-py's `GGML_QUANT_SIZES`: `blockSize` values are stored in
/// `typeSize` bytes, and a tensor's innermost dimension is a whole number of blocks.
///
/// Every type ggml defines today is known here, so any GGUF file's layout can be checked;
/// `isDecodable` says which ones `dequantize` reads and `isQuantizable` which ones `quantize` writes.
public enum GGUFType: UInt32, Sendable, CaseIterable, CustomStringConvertible {
    case f32 = 0
    case f16 = 1
    case q4_0 = 2
    case q4_1 = 3
    case q5_0 = 6
    case q5_1 = 7
    case q8_0 = 8
    case q8_1 = 9
    case q2_K = 10
    case q3_K = 11
    case q4_K = 12
    case q5_K = 13
    case q6_K = 14
    case q8_K = 15
    case iq2_XXS = 16
    case iq2_XS = 17
    case iq3_XXS = 18
    case iq1_S = 19
    case iq4_NL = 20
    case iq3_S = 21
    case iq2_S = 22
    case iq4_XS = 23
    case i8 = 24
    case i16 = 25
    case i32 = 26
    case i64 = 27
    case f64 = 28
    case iq1_M = 29
    case bf16 = 30
    case tq1_0 = 34
    case tq2_0 = 35
    case mxfp4 = 39
    case nvfp4 = 40
    case q1_0 = 41

    /// The ggml name, as gguf-py and llama.cpp print it (`Q8_0`, `BF16`, `IQ4_XS`).
    public var name: String {
        switch self {
        case .f32: return "F32"
        case .f16: return "F16"
        case .q4_0: return "Q4_0"
        case .q4_1: return "Q4_1"
        case .q5_0: return "Q5_0"
        case .q5_1: return "Q5_1"
        case .q8_0: return "Q8_0"
        case .q8_1: return "Q8_1"
        case .q2_K: return "Q2_K"
        case .q3_K: return "Q3_K"
        case .q4_K: return "Q4_K"
        case .q5_K: return "Q5_K"
        case .q6_K: return "Q6_K"
        case .q8_K: return "Q8_K"
        case .iq2_XXS: return "IQ2_XXS"
        case .iq2_XS: return "IQ2_XS"
        case .iq3_XXS: return "IQ3_XXS"
        case .iq1_S: return "IQ1_S"
        case .iq4_NL: return "IQ4_NL"
        case .iq3_S: return "IQ3_S"
        case .iq2_S: return "IQ2_S"
        case .iq4_XS: return "IQ4_XS"
        case .i8: return "I8"
        case .i16: return "I16"
        case .i32: return "I32"
        case .i64: return "I64"
        case .f64: return "F64"
        case .iq1_M: return "IQ1_M"
        case .bf16: return "BF16"
        case .tq1_0: return "TQ1_0"
        case .tq2_0: return "TQ2_0"
        case .mxfp4: return "MXFP4"
        case .nvfp4: return "NVFP4"
        case .q1_0: return "Q1_0"
        }
    }

    public var description: String { name }

    /// The type called `name` (case-insensitive: `q8_0`, `Q8_0`, `bf16`), if there is one.
    public init?(name: String) {
        let upper = name.uppercased()
        guard let match = GGUFType.allCases.first(where: { $0.name == upper }) else { return nil }
        self = match
    }

    /// Values per block (1 for the plain number types, 32 for Q4_0…Q8_0, 256 for the K-quants).
    public var blockSize: Int { geometry.blockSize }

    /// Bytes per block.
    public var typeSize: Int { geometry.typeSize }

    /// Storage cost per value, in bits (`typeSize × 8 / blockSize`; 8.5 for Q8_0).
    public var bitsPerWeight: Double { Double(typeSize * 8) / Double(blockSize) }

    /// Whether `dequantize` decodes this type (F32, F16, BF16, F64, I8–I64, Q4_0, Q4_1, Q5_0,
    /// Q5_1, Q8_0 and Q2_K–Q6_K).
    public var isDecodable: Bool {
        switch self {
        case .f32, .f16, .bf16, .f64, .i8, .i16, .i32, .i64,
             .q4_0, .q4_1, .q5_0, .q5_1, .q8_0, .q2_K, .q3_K, .q4_K, .q5_K, .q6_K:
            return true
        default:
            return false
        }
    }

    /// Whether `quantize` encodes this type (F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1: the
    /// types gguf-py's `gguf.quants.quantize` writes that FlowGuard writes too).
    public var isQuantizable: Bool {
        switch self {
        case .f32, .f16, .bf16, .q8_0, .q4_0, .q4_1, .q5_0, .q5_1: return true
        default: return false
        }
    }

    /// Whether the type stores blocks of several values with shared scales (everything except
    /// the plain number types F32, F16, BF16, F64 and I8–I64).
    public var isBlockQuantized: Bool { blockSize > 1 }

    /// Bytes that `elements` values occupy, or nil when `elements` is not a whole number of
    /// blocks or the size overflows `Int`.
    public func byteCount(elements: Int) -> Int? {
        guard elements >= 0, elements % blockSize == 0 else { return nil }
        let (bytes, overflow) = (elements / blockSize).multipliedReportingOverflow(by: typeSize)
        return overflow ? nil : bytes
    }

    /// Block geometry, from gguf-py `gguf/constants.py` `GGML_QUANT_SIZES` (QK_K = 256).
    private var geometry: (blockSize: Int, typeSize: Int) {
        let qkK = 256
        switch self {
        case .f32: return (1, 4)
        case .f16: return (1, 2)
        case .q4_0: return (32, 2 + 16)
        case .q4_1: return (32, 2 + 2 + 16)
        case .q5_0: return (32, 2 + 4 + 16)
        case .q5_1: return (32, 2 + 2 + 4 + 16)
        case .q8_0: return (32, 2 + 32)
        case .q8_1: return (32, 4 + 4 + 32)
        case .q2_K: return (qkK, 2 + 2 + qkK / 16 + qkK / 4)
        case .q3_K: return (qkK, 2 + qkK / 4 + qkK / 8 + 12)
        case .q4_K: return (qkK, 2 + 2 + qkK / 2 + 12)
        case .q5_K: return (qkK, 2 + 2 + qkK / 2 + qkK / 8 + 12)
        case .q6_K: return (qkK, 2 + qkK / 2 + qkK / 4 + qkK / 16)
        case .q8_K: return (qkK, 4 + qkK + qkK / 8)
        case .iq2_XXS: return (qkK, 2 + qkK / 4)
        case .iq2_XS: return (qkK, 2 + qkK / 4 + qkK / 32)
        case .iq3_XXS: return (qkK, 2 + qkK / 4 + qkK / 8)
        case .iq1_S: return (qkK, 2 + qkK / 8 + qkK / 16)
        case .iq4_NL: return (32, 2 + 16)
        case .iq3_S: return (qkK, 2 + qkK / 4 + qkK / 8 + qkK / 32 + 4)
        case .iq2_S: return (qkK, 2 + qkK / 4 + qkK / 16)
        case .iq4_XS: return (qkK, 2 + 2 + qkK / 2 + qkK / 64)
        case .i8: return (1, 1)
        case .i16: return (1, 2)
        case .i32: return (1, 4)
        case .i64: return (1, 8)
        case .f64: return (1, 8)
        case .iq1_M: return (qkK, qkK / 8 + qkK / 16 + qkK / 32)
        case .bf16: return (1, 2)
        case .tq1_0: return (qkK, 2 + 4 * 13)
        case .tq2_0: return (qkK, 2 + 64)
        case .mxfp4: return (32, 1 + 16)
        case .nvfp4: return (64, 4 + 32)
        case .q1_0: return (128, 2 + 16)
        }
    }
}
