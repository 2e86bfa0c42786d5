/// The two transformer families FlowGuard knows.
public enum ModelFamily: String, Sendable, Hashable, CaseIterable, Codable {
    /// Stable Diffusion 3 / 3.5: MMDiT and MMDiT-X (`SD3Transformer2DModel`).
    case sd3
    /// FLUX.1: double-stream and single-stream blocks (`FluxTransformer2DModel`).
    case flux

    /// The family's name in sentences ("SD3", "FLUX").
    public var displayName: String { self == .sd3 ? "SD3" : "FLUX" }

    /// The name given to a checkpoint of this family whose sizes match no published model.
    public var customName: String { self == .sd3 ? "SD3-style" : "FLUX-style" }

    /// diffusers' model class for this family.
    public var diffusersClassName: String {
        self == .sd3 ? "SD3Transformer2DModel" : "FluxTransformer2DModel"
    }
}

/// The sizes of an SD3-family transformer, named after diffusers' `SD3Transformer2DModel`
/// configuration. `hiddenSize` (diffusers' inner dim) is stored because the head size is not always
/// known: checkpoints without q/k norm weights do not record it.
public struct SD3Config: Sendable, Hashable {
    /// Width of the token streams (`num_attention_heads × attention_head_dim`).
    public var hiddenSize: Int
    /// Number of joint blocks; the last one has a pre-only context stream.
    public var numLayers: Int
    /// Channels per attention head: the length of the q/k norm weights when present, otherwise
    /// 64 by convention (`attentionHeadDimIsAssumed`), or nil when even that does not divide the width.
    public var attentionHeadDim: Int?
    /// True when `attentionHeadDim` is the conventional 64 rather than read from a tensor.
    public var attentionHeadDimIsAssumed: Bool
    /// Blocks that carry the second image self-attention `attn2` (MMDiT-X), ascending.
    public var dualAttentionLayers: [Int]
    /// Whether attention uses RMS q/k normalisation (`qk_norm: "rms_norm"`).
    public var qkNorm: Bool
    /// Side of a square patch (2 for all published models).
    public var patchSize: Int
    /// Latent channels in.
    public var inChannels: Int
    /// Latent channels out.
    public var outChannels: Int
    /// Width of the text-encoder token embeddings (4096, T5-XXL).
    public var jointAttentionDim: Int
    /// Width of the pooled text embedding (2048, CLIP-L ⊕ CLIP-G).
    public var pooledProjectionDim: Int
    /// Side of the stored square position table (`pos_embed` holds `posEmbedMaxSize²` rows).
    public var posEmbedMaxSize: Int
    /// diffusers' `sample_size` (latent side used for the default crop); not stored in weights.
    public var sampleSize: Int

    /// Creates a configuration; defaults are those of the published models.
    public init(hiddenSize: Int, numLayers: Int, attentionHeadDim: Int?, attentionHeadDimIsAssumed: Bool = false,
                dualAttentionLayers: [Int] = [], qkNorm: Bool, patchSize: Int = 2, inChannels: Int = 16,
                outChannels: Int = 16, jointAttentionDim: Int = 4096, pooledProjectionDim: Int = 2048,
                posEmbedMaxSize: Int = 192, sampleSize: Int = 128) {
        self.hiddenSize = hiddenSize
        self.numLayers = numLayers
        self.attentionHeadDim = attentionHeadDim
        self.attentionHeadDimIsAssumed = attentionHeadDimIsAssumed
        self.dualAttentionLayers = dualAttentionLayers.sorted()
        self.qkNorm = qkNorm
        self.patchSize = patchSize
        self.inChannels = inChannels
        self.outChannels = outChannels
        self.jointAttentionDim = jointAttentionDim
        self.pooledProjectionDim = pooledProjectionDim
        self.posEmbedMaxSize = posEmbedMaxSize
        self.sampleSize = sampleSize
    }

    /// Number of attention heads, when the head size is known.
    public var numAttentionHeads: Int? {
        guard let d = attentionHeadDim, d > 0, hiddenSize % d == 0 else { return nil }
        return hiddenSize / d
    }

    /// Output width of the text-token projection; equal to `hiddenSize` in every SD3 model (the
    /// joint blocks project both streams at the same width).
    public var captionProjectionDim: Int { hiddenSize }
}

/// The sizes of a FLUX-family transformer, named after diffusers' `FluxTransformer2DModel`
/// configuration.
public struct FluxConfig: Sendable, Hashable {
    /// Width of the token streams (`num_attention_heads × attention_head_dim`).
    public var hiddenSize: Int
    /// Number of double-stream blocks (diffusers `num_layers`).
    public var numLayers: Int
    /// Number of single-stream blocks (diffusers `num_single_layers`).
    public var numSingleLayers: Int
    /// Channels per head: the length of the q/k norm scales.
    public var attentionHeadDim: Int
    /// Whether the distilled-guidance embedder is present (dev, Fill, Depth; not schnell).
    public var guidanceEmbeds: Bool
    /// Packed latent channels in (64; 384 for Fill, 128 for Depth/Canny).
    public var inChannels: Int
    /// Packed latent channels out (64).
    public var outChannels: Int
    /// Width of the T5 token embeddings (4096).
    public var jointAttentionDim: Int
    /// Width of the pooled CLIP embedding (768).
    public var pooledProjectionDim: Int
    /// RoPE channels per position axis. Weights do not record it: it is `[16, 56, 56]` when the head
    /// size is 128 (every published model) and nil (not derivable) otherwise.
    public var axesDimsRope: [Int]?

    /// Creates a configuration; defaults are those of the published models. When `axesDimsRope` is
    /// not given it is `[16, 56, 56]` for head size 128 and nil otherwise.
    public init(hiddenSize: Int, numLayers: Int, numSingleLayers: Int, attentionHeadDim: Int,
                guidanceEmbeds: Bool, inChannels: Int = 64, outChannels: Int = 64,
                jointAttentionDim: Int = 4096, pooledProjectionDim: Int = 768, axesDimsRope: [Int]? = nil) {
        self.hiddenSize = hiddenSize
        self.numLayers = numLayers
        self.numSingleLayers = numSingleLayers
        self.attentionHeadDim = attentionHeadDim
        self.guidanceEmbeds = guidanceEmbeds
        self.inChannels = inChannels
        self.outChannels = outChannels
        self.jointAttentionDim = jointAttentionDim
        self.pooledProjectionDim = pooledProjectionDim
        self.axesDimsRope = axesDimsRope ?? (attentionHeadDim == 128 ? [16, 56, 56] : nil)
    }

    /// diffusers' `patch_size`: always 1, the 2×2 packing is folded into the channels.
    public var patchSize: Int { 1 }

    /// Number of attention heads.
    public var numAttentionHeads: Int { attentionHeadDim > 0 ? hiddenSize / attentionHeadDim : 0 }
}

/// The configuration of a transformer of either family.
public enum ModelConfig: Sendable, Hashable {
    /// An SD3 / SD3.5 (MMDiT, MMDiT-X) transformer.
    case sd3(SD3Config)
    /// A FLUX.1 transformer.
    case flux(FluxConfig)

    /// The family the configuration belongs to.
    public var family: ModelFamily {
        switch self {
        case .sd3: return .sd3
        case .flux: return .flux
        }
    }

    /// Width of the token streams.
    public var hiddenSize: Int {
        switch self {
        case .sd3(let c): return c.hiddenSize
        case .flux(let c): return c.hiddenSize
        }
    }

    /// Throws `CheckpointError.invalidConfig` when the sizes describe no buildable model.
    public func validate() throws {
        func require(_ ok: Bool, _ reason: @autoclosure () -> String) throws {
            if !ok { throw CheckpointError.invalidConfig(reason()) }
        }
        switch self {
        case .sd3(let c):
            try require(c.hiddenSize > 0, "the width must be positive")
            try require(c.numLayers > 0, "an SD3 transformer needs at least one joint block")
            try require(c.patchSize > 0 && c.inChannels > 0 && c.outChannels > 0,
                        "patch size and channel counts must be positive")
            try require(c.jointAttentionDim > 0 && c.pooledProjectionDim > 0 && c.posEmbedMaxSize > 0,
                        "text widths and the position table side must be positive")
            try require(c.dualAttentionLayers.allSatisfy { (0..<c.numLayers).contains($0) },
                        "dual-attention block \(c.dualAttentionLayers.max() ?? 0) is past the last block")
            try require(Set(c.dualAttentionLayers).count == c.dualAttentionLayers.count,
                        "a dual-attention block is listed twice")
            try require(!c.qkNorm || c.attentionHeadDim != nil, "q/k norm needs a head size")
            if let d = c.attentionHeadDim {
                try require(d > 0 && c.hiddenSize % d == 0,
                            "width \(c.hiddenSize) is not a whole number of \(d)-channel heads")
            }
        case .flux(let c):
            try require(c.hiddenSize > 0, "the width must be positive")
            try require(c.numLayers >= 0 && c.numSingleLayers >= 0 && c.numLayers + c.numSingleLayers > 0,
                        "a FLUX transformer needs at least one block")
            try require(c.attentionHeadDim > 0 && c.hiddenSize % c.attentionHeadDim == 0,
                        "width \(c.hiddenSize) is not a whole number of \(c.attentionHeadDim)-channel heads")
            try require(c.inChannels > 0 && c.outChannels > 0, "channel counts must be positive")
            try require(c.jointAttentionDim > 0 && c.pooledProjectionDim > 0, "text widths must be positive")
            if let axes = c.axesDimsRope {
                try require(axes.reduce(0, +) == c.attentionHeadDim,
                            "RoPE axes \(axes) do not add up to the head size \(c.attentionHeadDim)")
            }
        }
    }
}
