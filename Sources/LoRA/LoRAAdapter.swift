import BLAS
import Checkpoints
import SafeTensors

/// A dense row-major Float32 matrix (or vector) held in memory: LoRA factors are small.
public struct Matrix: Sendable, Hashable {
    /// Shape as stored (`[rows, cols]` for matrices, `[n]` for vectors).
    public var shape: [Int]
    /// Row-major values.
    public var values: [Float]

    /// Creates a matrix; `values.count` must equal the product of `shape`.
    public init(shape: [Int], values: [Float]) {
        precondition(values.count == shape.reduce(1, *), "Matrix: \(values.count) values for shape \(shape)")
        self.shape = shape
        self.values = values
    }

    /// Rows (first dimension).
    public var rows: Int { shape.first ?? 1 }
    /// Columns (product of the remaining dimensions; 1 for a vector).
    public var columns: Int { shape.dropFirst().reduce(1, *) }

    /// Rows `range` as a new matrix.
    public func rows(_ range: Range<Int>) -> Matrix {
        var s = shape
        s[0] = range.count
        return Matrix(shape: s, values: Array(values[(range.lowerBound * columns)..<(range.upperBound * columns)]))
    }
}

/// One adapted linear layer: ΔW = scale · up · down, with down (A) [r, in] and up (B) [out, r].
public struct LoRAModule: Sendable, Hashable {
    /// The module path in the adapter's layout, without any key prefix
    /// (`transformer_blocks.0.attn.to_q` in diffusers naming, `joint_blocks.0.x_block.attn.qkv`
    /// in original naming).
    public var name: String
    /// A / lora_down: [rank, in_features] (conv adapters: [rank, in, kh, kw]).
    public var down: Matrix
    /// B / lora_up: [out_features, rank] (conv adapters: [out, rank, 1, 1]).
    public var up: Matrix
    /// α; nil means α = rank (kohya's rule for a missing or zero alpha).
    public var alpha: Float?
    /// An optional bias on B (PEFT `lora_bias`), [out_features].
    public var upBias: Matrix?

    /// Creates a module.
    public init(name: String, down: Matrix, up: Matrix, alpha: Float?, upBias: Matrix? = nil) {
        self.name = name
        self.down = down
        self.up = up
        self.alpha = alpha
        self.upBias = upBias
    }

    /// The rank r.
    public var rank: Int { down.rows }
    /// Input features (columns of A).
    public var inFeatures: Int { down.columns }
    /// Output features (rows of B).
    public var outFeatures: Int { up.rows }

    /// The multiplier of B·A: α/r, or α/√r with rsLoRA.
    public func scale(rsLoRA: Bool) -> Float {
        let r = Float(rank)
        let a = alpha ?? r
        return rsLoRA ? a / r.squareRoot() : a / r
    }

    /// ΔW = scale · B · A as an [out, in] matrix (times `extra`, e.g. a user's --scale).
    public func delta(rsLoRA: Bool, extra: Float = 1) -> Matrix {
        let values = BLAS.matmul(up.values, down.values, m: outFeatures, k: rank, n: inFeatures,
                                 alpha: scale(rsLoRA: rsLoRA) * extra)
        return Matrix(shape: [outFeatures, inFeatures], values: values)
    }
}

/// The dialects adapters are written in.
public enum LoRAFormat: String, Sendable, Hashable, CaseIterable {
    /// A PEFT folder: `adapter_config.json` + `adapter_model.safetensors`, keys
    /// `base_model.model.<module>.lora_A.weight`.
    case peft
    /// diffusers `pytorch_lora_weights.safetensors`: keys `transformer.<module>.lora_A.weight`,
    /// config in `__metadata__["lora_adapter_metadata"]`.
    case diffusers
    /// kohya sd-scripts: `lora_unet_<original module, dots→_>.lora_down.weight` + 0-d `.alpha`.
    case kohya
    /// ComfyUI: `diffusion_model.<original module>.lora_down.weight` / `lora_up` (+ `.alpha`).
    case comfy
    /// XLabs FLUX adapters, with or without the `diffusion_model.` prefix (read only).
    case xlabs
    /// OneTrainer: `lora_transformer_<diffusers module, dots→_>` + `.alpha`, `lora_te1_`/`lora_te2_` (read only).
    case onetrainer
    /// LyCORIS: `lycoris_<module, dots→_>` with LoKr, LoHa, LoCon and DoRA tensors (read only).
    case lycoris
    /// BFL Control LoRAs: BFL names without prefix, `lora_A`/`lora_B` (+ `lora_B.bias`), full norm scales (read only).
    case bflControl = "bfl-control"
    /// fal Kontext: BFL names under `base_model.model.` with `lora_A`/`lora_B` (read only).
    case falKontext = "fal-kontext"

    /// The formats FlowGuard writes.
    public static let writable: [LoRAFormat] = [.peft, .diffusers, .kohya, .comfy]

    /// True for the formats FlowGuard writes.
    public var isWritable: Bool { Self.writable.contains(self) }
}

/// A LoRA adapter: its modules in one layout's naming, the scaling rule, and where it came from.
public struct LoRAAdapter: Sendable {
    /// The adapted modules.
    public var modules: [LoRAModule]
    /// Which naming `modules` use.
    public var layout: KeyLayout
    /// α/√r instead of α/r.
    public var rsLoRA: Bool
    /// The format it was read from (or will be written as).
    public var format: LoRAFormat
    /// The model family, when known.
    public var family: ModelFamily?
    /// Other configuration worth carrying (PEFT config members, kohya `ss_*`, modelspec), as
    /// found in the source.
    public var extraMetadata: [String: String]
    /// Transformer deltas that are not B·A (LoKr, LoHa, full `.diff`/`.diff_b`, replaced norm
    /// scales), named in `layout`.
    public var deltas: [WeightDelta] = []
    /// DoRA magnitudes by module name (of `modules` or `deltas`), in `layout`.
    public var magnitudes: [String: DoRAMagnitude] = [:]
    /// Low-rank modules of text encoders, named `<component>.<module>` in transformers' naming
    /// (`text_encoder.text_model.encoder.layers.0.self_attn.q_proj`,
    /// `text_encoder_3.encoder.block.0.layer.0.SelfAttention.q`). Not part of a transformer merge.
    public var textEncoderModules: [LoRAModule] = []
    /// The file the tensors were read from ("" when built in memory), for error messages.
    public var sourceFile: String = ""
    /// Byte offset of each tensor's data in `sourceFile`, by key, for error messages.
    public var keyOffsets: [String: Int] = [:]

    /// Creates an adapter.
    public init(modules: [LoRAModule], layout: KeyLayout, rsLoRA: Bool = false, format: LoRAFormat,
                family: ModelFamily? = nil, extraMetadata: [String: String] = [:]) {
        self.modules = modules
        self.layout = layout
        self.rsLoRA = rsLoRA
        self.format = format
        self.family = family
        self.extraMetadata = extraMetadata
    }

    /// The module called `name`, if adapted.
    public func module(_ name: String) -> LoRAModule? { modules.first { $0.name == name } }

    /// What the adapter adapts: `transformer` (when it has transformer modules or deltas) and each
    /// text-encoder component (`text_encoder`, `text_encoder_2`, `text_encoder_3`), in that order.
    public var components: [String] {
        var out: [String] = []
        if !modules.isEmpty || !deltas.isEmpty { out.append("transformer") }
        for m in textEncoderModules {
            let c = textEncoderComponent(of: m.name)
            if !out.contains(c) { out.append(c) }
        }
        let te = out.dropFirst(out.first == "transformer" ? 1 : 0).sorted()
        return (out.first == "transformer" ? ["transformer"] : []) + te
    }

    /// The kinds of delta present: `lora`, `lokr`, `loha`, `full`, `replace`, `dora`.
    public var kinds: [String] {
        var out: [String] = []
        if !modules.isEmpty || !textEncoderModules.isEmpty { out.append("lora") }
        for d in deltas where !out.contains(d.kindName) { out.append(d.kindName) }
        if !magnitudes.isEmpty { out.append("dora") }
        return out
    }

    /// True when every transformer delta is a plain B·A without DoRA (exact in every low-rank format).
    public var isLowRankOnly: Bool { deltas.isEmpty && magnitudes.isEmpty }
}

/// The component (`text_encoder`, `text_encoder_2`, …) of a text-encoder module name.
func textEncoderComponent(of name: String) -> String {
    String(name.prefix { $0 != "." })
}
