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
    /// XLabs FLUX adapters (read only).
    case xlabs
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
}
