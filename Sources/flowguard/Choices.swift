import ArgumentParser
import Checkpoints
import GRPOGuard
import LoRA
import SafeTensors

// The values options choose from, as the parser's own `ExpressibleByArgument` types: a bad value is
// a usage error (exit 2) that lists the valid ones, and `--help` shows them.

/// `--dtype`: the floating-point dtypes a checkpoint can be written in. Common spellings
/// (`bfloat16`, `half`, `float32`, `fp8`, and ComfyUI's `fp8_e4m3fn` and `fp8_e5m2`) are accepted too.
enum OutputDType: String, CaseIterable, ExpressibleByArgument {
    case bf16, fp16, fp32
    case f8e4m3 = "f8_e4m3"
    case f8e5m2 = "f8_e5m2"

    init?(argument: String) {
        guard let dtype = DType(userSpelling: argument),
              let match = Self.allCases.first(where: { $0.dtype == dtype }) else { return nil }
        self = match
    }

    /// The dtype written.
    var dtype: DType {
        switch self {
        case .bf16: return .bf16
        case .fp16: return .f16
        case .fp32: return .f32
        case .f8e4m3: return .f8e4m3
        case .f8e5m2: return .f8e5m2
        }
    }
}

/// `--dtype` of an adapter: the factors' dtype (α stays float32). Common spellings are accepted.
enum AdapterDType: String, CaseIterable, ExpressibleByArgument {
    case bf16, fp16, fp32

    init?(argument: String) {
        guard let dtype = DType(userSpelling: argument),
              let match = Self.allCases.first(where: { $0.dtype == dtype }) else { return nil }
        self = match
    }

    /// The dtype written.
    var dtype: DType {
        switch self {
        case .bf16: return .bf16
        case .fp16: return .f16
        case .fp32: return .f32
        }
    }
}

/// `--layout`: a key layout, in either case.
extension KeyLayout: ExpressibleByArgument {
    public init?(argument: String) {
        self.init(rawValue: argument.lowercased())
    }
}

/// `--prefix`: an original-layout key prefix by its short name (`sai`, `comfy`, `none`).
extension KeyPrefix: ExpressibleByArgument {
    public init?(argument: String) {
        guard let match = Self.allCases.first(where: { $0.argumentName == argument.lowercased() }) else { return nil }
        self = match
    }

    public static var allValueStrings: [String] { allCases.map(\.argumentName) }

    public static var allValueDescriptions: [String: String] {
        ["sai": "model.diffusion_model. (Stability AI)", "comfy": "diffusion_model. (ComfyUI)", "none": "no prefix (BFL)"]
    }

    public var defaultValueDescription: String { argumentName }

    /// The name the command line uses for the prefix.
    var argumentName: String {
        switch self {
        case .sai: return "sai"
        case .comfy: return "comfy"
        case .none: return "none"
        }
    }
}

/// `--to`: an adapter dialect FlowGuard writes (XLabs is read only, so it is not a choice).
extension LoRAFormat: ExpressibleByArgument {
    public init?(argument: String) {
        guard let format = LoRAFormat(rawValue: argument.lowercased()), format != .xlabs else { return nil }
        self = format
    }

    public static var allValueStrings: [String] { allCases.filter { $0 != .xlabs }.map(\.rawValue) }
}

/// `synth --distribution`.
extension SyntheticOptions.Distribution: ExpressibleByArgument {
    public init?(argument: String) {
        self.init(rawValue: argument.lowercased())
    }
}

/// `train --objective`.
extension ObjectiveKind: ExpressibleByArgument {}

/// `train --bias-mode`: `batch` or `per-sample`, as in a training config.
extension RatioBiasMode: ExpressibleByArgument {
    public init?(argument: String) {
        guard let match = Self.allCases.first(where: { $0.configName == argument }) else { return nil }
        self = match
    }

    public static var allValueStrings: [String] { allCases.map(\.configName) }

    public static var allValueDescriptions: [String: String] { [:] }

    public var defaultValueDescription: String { configName }

    /// The spelling of a training config.
    var configName: String {
        switch self {
        case .batch: return "batch"
        case .perSample: return "per-sample"
        }
    }
}

/// `train --advantage-scale`: `per-group` or `global`, as in a training config.
extension AdvantageScale: ExpressibleByArgument {
    public init?(argument: String) {
        guard let match = Self.allCases.first(where: { $0.configName == argument }) else { return nil }
        self = match
    }

    public static var allValueStrings: [String] { allCases.map(\.configName) }

    public static var allValueDescriptions: [String: String] { [:] }

    public var defaultValueDescription: String { configName }

    /// The spelling of a training config.
    var configName: String {
        switch self {
        case .perGroup: return "per-group"
        case .global: return "global"
        }
    }
}

/// `--shard-size`: a byte count as people write it (`5GB`, `500MB`, `1.5G`, `2GiB`, `1048576`).
enum ByteSize {
    /// The size in bytes, or a usage error saying what a size looks like.
    static func parse(_ text: String) throws -> Int {
        guard let bytes = Converter.parseByteSize(text) else {
            throw ValidationError("expected a positive size such as 5GB, 500MB, 1.5G, 2GiB or 1048576")
        }
        return bytes
    }
}
