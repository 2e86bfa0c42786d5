import SafeTensors

/// FLUX.1: double-stream and single-stream blocks (`FluxTransformer2DModel`). Everything the
/// checkpoint side knows about the family beyond its layout table (`LayoutTable.flux`).
public struct FluxFamily: ModelFamilyDescriptor {
    /// The descriptor (use `ModelFamily.flux`).
    public init() {}

    /// The identifier written into prompt sets and reports.
    public var id: String { "flux" }
    /// The name in sentences.
    public var displayName: String { "FLUX" }
    /// diffusers' model class.
    public var diffusersClassName: String { "FluxTransformer2DModel" }
    /// diffusers' module defining the class.
    public var diffusersParentLibrary: String { "diffusers.models.transformers.transformer_flux" }
    /// kohya's `ss_network_module`.
    public var kohyaNetworkModule: String { "networks.lora_flux" }
    /// No prefix, as Black Forest Labs ships its files.
    public var defaultOriginalPrefix: KeyPrefix { .none }
    /// The trainer's learning rate when none is configured.
    public var defaultLearningRate: Double { 2e-4 }
    /// The layout table.
    public var table: LayoutTable { .flux }
    /// The published models.
    public var variants: [KnownVariant] { [.flux1Dev, .flux1Schnell, .flux1Fill, .flux1Depth] }
    /// Module-name substrings only this family has.
    public var moduleNameMarkers: [String] {
        ["single_transformer_blocks.", "proj_mlp", "double_blocks.", "single_blocks.", "x_embedder", "guidance_in", "img_attn", "txt_attn"]
    }

    /// Class names starting with `Flux`.
    public func claims(diffusersClassName name: String) -> Bool { name.hasPrefix("Flux") }

    /// A config without `_class_name` is FLUX's when it has `num_single_layers`.
    public func claimsUnnamedDiffusersConfig(_ config: DiffusersConfigFields) -> Bool {
        config.json["num_single_layers"] != nil
    }

    /// Width and input channels from `img_in`, text widths from `txt_in` and `vector_in`, output
    /// channels from the final layer, the head size from the q/k norm scales, block counts from
    /// the highest indices, the guidance embedder from its tensors.
    public func deriveConfig(_ shapes: ShapeEvidence) throws(CheckpointError) -> ModelConfig {
        let img = try shapes.anchor("img_in", "weight", rank: 2)
        let txt = try shapes.anchor("txt_in", "weight", rank: 2)
        let vec = try shapes.anchor("vector_in.in_layer", "weight", rank: 2)
        let final = try shapes.anchor("final_layer.linear", "weight", rank: 2)
        let (double, single) = (try shapes.blockCount(.joint), try shapes.blockCount(.single))
        if double + single == 0 { throw shapes.missingFirstBlock("double_blocks.{i}.img_attn.qkv", "weight") }
        guard let head = try shapes.headDim() else {
            throw shapes.missingFirstBlock(double > 0 ? "double_blocks.{i}.img_attn.norm.query_norm" : "single_blocks.{i}.norm.query_norm",
                                           "scale")
        }
        try shapes.checkHeads(head, hidden: img.shape[0])
        return .flux(FluxConfig(hiddenSize: img.shape[0], numLayers: double,
                                numSingleLayers: single, attentionHeadDim: head.size,
                                guidanceEmbeds: !shapes.blocks(with: .guidance).isEmpty, inChannels: img.shape[1],
                                outChannels: final.shape[0], jointAttentionDim: txt.shape[1],
                                pooledProjectionDim: vec.shape[1]))
    }

    /// The configuration of a diffusers `config.json`; defaults are those of diffusers.
    public func config(diffusers c: DiffusersConfigFields) throws(CheckpointError) -> ModelConfig {
        let headDim = try c.int("attention_head_dim")
        let heads = try c.int("num_attention_heads")
        let inChannels = try c.int("in_channels", default: 64)
        return .flux(FluxConfig(
            hiddenSize: heads * headDim, numLayers: try c.int("num_layers"), numSingleLayers: try c.int("num_single_layers"),
            attentionHeadDim: headDim, guidanceEmbeds: c.isTrue("guidance_embeds"), inChannels: inChannels,
            outChannels: try c.int("out_channels", default: inChannels), jointAttentionDim: try c.int("joint_attention_dim", default: 4096),
            pooledProjectionDim: try c.int("pooled_projection_dim", default: 768), axesDimsRope: try c.ints("axes_dims_rope")))
    }

    /// One more double and single block than the highest seen, with the guidance embedder.
    public func moduleNamingConfig(highestBlocks: [BlockScope: Int]) -> ModelConfig? {
        .flux(FluxConfig(hiddenSize: 128, numLayers: (highestBlocks[.joint] ?? 0) + 1,
                         numSingleLayers: (highestBlocks[.single] ?? 0) + 1, attentionHeadDim: 128, guidanceEmbeds: true))
    }

    /// Double and single blocks: the highest adapted index + 1 each; head size 128 when it
    /// divides the width; guidance embedder assumed.
    public func adapterConfig(width: Int, blocks: [BlockScope: [Int]], moduleNames: [String],
                              layout: KeyLayout) -> (config: ModelConfig, notes: [String]) {
        let nd = (blocks[.joint]?.max() ?? -1) + 1, ns = (blocks[.single]?.max() ?? -1) + 1
        let head = width % 128 == 0 ? 128 : width
        return (.flux(FluxConfig(hiddenSize: width, numLayers: nd, numSingleLayers: ns, attentionHeadDim: head, guidanceEmbeds: true)),
                ["\(nd) double + \(ns) single blocks (highest adapted index + 1)"])
    }
}

extension ModelFamily {
    /// FLUX.1 (`FluxTransformer2DModel`).
    public static let flux = ModelFamily(FluxFamily())
}

extension ModelConfig {
    /// A FLUX.1 configuration.
    public static func flux(_ config: FluxConfig) -> ModelConfig { ModelConfig(config) }
}

extension KnownVariant {
    /// FLUX.1-dev: 19 double + 38 single blocks, width 3072, guidance embedder.
    public static let flux1Dev = KnownVariant(name: "FLUX.1-dev", config: .flux(FluxConfig(
        hiddenSize: 3072, numLayers: 19, numSingleLayers: 38, attentionHeadDim: 128, guidanceEmbeds: true)))
    /// FLUX.1-schnell: as dev without the guidance embedder.
    public static let flux1Schnell = KnownVariant(name: "FLUX.1-schnell", config: .flux(FluxConfig(
        hiddenSize: 3072, numLayers: 19, numSingleLayers: 38, attentionHeadDim: 128, guidanceEmbeds: false)))
    /// FLUX.1-Fill-dev: dev with 384 input channels (latent, masked latent, mask).
    public static let flux1Fill = KnownVariant(name: "FLUX.1-Fill-dev", config: .flux(FluxConfig(
        hiddenSize: 3072, numLayers: 19, numSingleLayers: 38, attentionHeadDim: 128, guidanceEmbeds: true, inChannels: 384)))
    /// FLUX.1-Depth-dev (and Canny-dev, same sizes): dev with 128 input channels.
    public static let flux1Depth = KnownVariant(name: "FLUX.1-Depth-dev", config: .flux(FluxConfig(
        hiddenSize: 3072, numLayers: 19, numSingleLayers: 38, attentionHeadDim: 128, guidanceEmbeds: true, inChannels: 128)))
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


extension FluxConfig: FamilyConfiguration {
    /// `ModelFamily.flux`.
    public var family: ModelFamily { .flux }

    /// Throws `CheckpointError.invalidConfig` naming the first size that describes no buildable model.
    public func validate() throws(CheckpointError) {
        let c = self
        try requireConfig(c.hiddenSize > 0, "the width must be positive")
        try requireConfig(c.numLayers >= 0 && c.numSingleLayers >= 0 && c.numLayers + c.numSingleLayers > 0,
                          "a FLUX transformer needs at least one block")
        try requireConfig(c.attentionHeadDim > 0 && c.hiddenSize % c.attentionHeadDim == 0,
                          "width \(c.hiddenSize) is not a whole number of \(c.attentionHeadDim)-channel heads")
        try requireConfig(c.inChannels > 0 && c.outChannels > 0, "channel counts must be positive")
        try requireConfig(c.jointAttentionDim > 0 && c.pooledProjectionDim > 0, "text widths must be positive")
        if let axes = c.axesDimsRope {
            try requireConfig(axes.reduce(0, +) == c.attentionHeadDim,
                              "RoPE axes \(axes) do not add up to the head size \(c.attentionHeadDim)")
        }
    }

    /// The numbers the layout table is evaluated with.
    public var layoutDimensions: LayoutDimensions {
        LayoutDimensions(hidden: hiddenSize, headDim: attentionHeadDim, jointAttentionDim: jointAttentionDim,
                         pooledProjectionDim: pooledProjectionDim, inChannels: inChannels, patchSize: 1,
                         outputFeatures: outChannels, posEmbedLength: 0, jointBlocks: numLayers, singleBlocks: numSingleLayers,
                         dualAttention: [], qkNorm: true, guidance: guidanceEmbeds)
    }

    /// The defining sizes in words, for `inspect`.
    public var summaryParts: [String] {
        ["\(numLayers) double + \(numSingleLayers) single blocks", "hidden \(hiddenSize)",
         "\(numAttentionHeads) heads × \(attentionHeadDim)",
         guidanceEmbeds ? "guidance embedder" : "no guidance embedder",
         "\(inChannels) → \(outChannels) channels"]
    }

    /// `axes_dims_rope` when the head size is not 128.
    public var underivedConfigKeys: [String] { axesDimsRope == nil ? ["axes_dims_rope"] : [] }

    /// Sentences about values that were assumed or could not be derived.
    public var notes: [String] {
        if axesDimsRope == nil {
            return ["axes_dims_rope cannot be derived from the weights (head size \(attentionHeadDim), "
                    + "not 128) and is written as null; pass --config with the model's config.json"]
        }
        return []
    }

    /// diffusers' `config.json` entries.
    public var diffusersConfigEntries: [(key: String, value: ConfigValue)] {
        [
            ("patch_size", .int(patchSize)),
            ("in_channels", .int(inChannels)),
            ("out_channels", .int(outChannels)),
            ("num_layers", .int(numLayers)),
            ("num_single_layers", .int(numSingleLayers)),
            ("attention_head_dim", .int(attentionHeadDim)),
            ("num_attention_heads", .int(numAttentionHeads)),
            ("joint_attention_dim", .int(jointAttentionDim)),
            ("pooled_projection_dim", .int(pooledProjectionDim)),
            ("guidance_embeds", .bool(guidanceEmbeds)),
            ("axes_dims_rope", axesDimsRope.map(ConfigValue.ints) ?? .null),
        ]
    }
}
