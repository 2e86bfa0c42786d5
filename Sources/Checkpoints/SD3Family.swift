import SafeTensors

/// Stable Diffusion 3 / 3.5: MMDiT and MMDiT-X (`SD3Transformer2DModel`). Everything the checkpoint
/// side knows about the family beyond its layout table (`LayoutTable.sd3`).
public struct SD3Family: ModelFamilyDescriptor {
    /// The descriptor (use `ModelFamily.sd3`).
    public init() {}

    /// The identifier written into prompt sets and reports.
    public var id: String { "sd3" }
    /// The name in sentences.
    public var displayName: String { "SD3" }
    /// "an SD3".
    public var indefiniteArticle: String { "an" }
    /// diffusers' model class.
    public var diffusersClassName: String { "SD3Transformer2DModel" }
    /// diffusers' module defining the class.
    public var diffusersParentLibrary: String { "diffusers.models.transformers.transformer_sd3" }
    /// kohya's `ss_network_module`.
    public var kohyaNetworkModule: String { "networks.lora_sd3" }
    /// `model.diffusion_model.`, as Stability AI ships its single files.
    public var defaultOriginalPrefix: KeyPrefix { .sai }
    /// The trainer's learning rate when none is configured.
    public var defaultLearningRate: Double { 1e-4 }
    /// The layout table.
    public var table: LayoutTable { .sd3 }
    /// The published models.
    public var variants: [KnownVariant] { [.sd3Medium, .sd35Medium, .sd35Large] }
    /// Module-name substrings only this family has.
    public var moduleNameMarkers: [String] { ["joint_blocks.", ".attn2.", "x_block", "context_block", "pos_embed"] }

    /// Class names starting with `SD3`.
    public func claims(diffusersClassName name: String) -> Bool { name.hasPrefix("SD3") }

    /// A config without `_class_name` is SD3's unless it has `num_single_layers` (FLUX's).
    public func claimsUnnamedDiffusersConfig(_ config: DiffusersConfigFields) -> Bool {
        config.json["num_single_layers"] == nil
    }

    /// Width and patch from `x_embedder.proj`, text widths from the context and pooled embedders,
    /// output channels from the final layer, the position table side from `pos_embed`, the head
    /// size from the q/k norms (64 assumed without them), `attn2` blocks from their tensors.
    public func deriveConfig(_ shapes: ShapeEvidence) throws(CheckpointError) -> ModelConfig {
        let x = try shapes.anchor("x_embedder.proj", "weight", rank: 4)
        let (hidden, inChannels, patch) = (x.shape[0], x.shape[1], x.shape[2])
        guard x.shape[3] == patch, patch > 0 else {
            throw .underivableConfig(tensor: x.key, reason: "the patch \(x.shape[2])×\(x.shape[3]) is not square")
        }
        let context = try shapes.anchor("context_embedder", "weight", rank: 2)
        let pooled = try shapes.anchor("y_embedder.mlp.0", "weight", rank: 2)
        let final = try shapes.anchor("final_layer.linear", "weight", rank: 2)
        guard final.shape[0] % (patch * patch) == 0 else {
            throw .underivableConfig(
                tensor: final.key, reason: "\(final.shape[0]) outputs are not a whole number of \(patch)×\(patch) patches")
        }
        let pos = try shapes.anchor("pos_embed", "", rank: 3)
        let side = Int(Double(pos.shape[1]).squareRoot().rounded())
        guard side * side == pos.shape[1] else {
            throw .underivableConfig(tensor: pos.key, reason: "the table length \(pos.shape[1]) is not a perfect square")
        }
        let layers = try shapes.blockCount(.joint)
        if layers == 0 { throw shapes.missingFirstBlock("joint_blocks.{i}.x_block.attn.qkv", "weight") }
        let measured = shapes.blocks(with: .qkNorm).isEmpty ? nil : try shapes.headDim()
        var head = measured?.size
        if let measured { try shapes.checkHeads(measured, hidden: hidden) } else { head = hidden % 64 == 0 ? 64 : nil }
        let dual = Set(shapes.blocks(with: .dualAttention).compactMap { $0 }).sorted()
        return .sd3(SD3Config(hiddenSize: hidden, numLayers: layers, attentionHeadDim: head,
                              attentionHeadDimIsAssumed: measured == nil && head != nil, dualAttentionLayers: dual,
                              qkNorm: measured != nil, patchSize: patch, inChannels: inChannels,
                              outChannels: final.shape[0] / (patch * patch), jointAttentionDim: context.shape[1],
                              pooledProjectionDim: pooled.shape[1], posEmbedMaxSize: side))
    }

    /// The configuration of a diffusers `config.json`; defaults are those of diffusers.
    public func config(diffusers c: DiffusersConfigFields) throws(CheckpointError) -> ModelConfig {
        let headDim = try c.int("attention_head_dim")
        let heads = try c.int("num_attention_heads")
        let qk = c.json["qk_norm"]
        return .sd3(SD3Config(
            hiddenSize: heads * headDim, numLayers: try c.int("num_layers"), attentionHeadDim: headDim,
            dualAttentionLayers: try c.ints("dual_attention_layers") ?? [], qkNorm: qk != nil && qk != .null,
            patchSize: try c.int("patch_size", default: 2), inChannels: try c.int("in_channels", default: 16),
            outChannels: try c.int("out_channels", default: 16), jointAttentionDim: try c.int("joint_attention_dim", default: 4096),
            pooledProjectionDim: try c.int("pooled_projection_dim", default: 2048), posEmbedMaxSize: try c.int("pos_embed_max_size", default: 96),
            sampleSize: try c.int("sample_size", default: 128)))
    }

    /// Two more joint blocks than the highest seen (the last block's context stream is pre-only,
    /// so the highest adapted block must not be the last), `attn2` and q/k norm everywhere.
    public func moduleNamingConfig(highestBlocks: [BlockScope: Int]) -> ModelConfig? {
        let n = (highestBlocks[.joint] ?? 0) + 2
        return .sd3(SD3Config(hiddenSize: 64, numLayers: n, attentionHeadDim: 64,
                              dualAttentionLayers: Array(0..<n), qkNorm: true))
    }

    /// Joint blocks: the highest adapted one + 1, + 1 more when that block has a full context
    /// stream; `attn2` on the adapted `attn2` blocks; head size not derivable.
    public func adapterConfig(width: Int, blocks: [BlockScope: [Int]], moduleNames: [String],
                              layout: KeyLayout) -> (config: ModelConfig, notes: [String]) {
        let head = layout == .original ? "joint_blocks." : "transformer_blocks."
        var n = (blocks[.joint]?.max() ?? 0) + 1
        let last = n - 1
        let fullContext = moduleNames.contains { name in
            name.hasPrefix(head + "\(last).")
                && ["context_block.attn.proj", "context_block.mlp", "to_add_out", "ff_context"].contains { name.contains($0) }
        }
        if fullContext { n += 1 }
        let dual = Set(moduleNames.compactMap { name -> Int? in
            guard name.contains(".attn2.") else { return nil }
            return Int(name.dropFirst(head.count).prefix { $0.isNumber })
        }).sorted()
        let note = "\(n) joint blocks (highest adapted block + 1\(fullContext ? ", +1 because it has a full context stream" : "")), attn2 on \(dual.isEmpty ? "no blocks" : "blocks \(dual)")"
        return (.sd3(SD3Config(hiddenSize: width, numLayers: n, attentionHeadDim: nil, dualAttentionLayers: dual, qkNorm: false)),
                [note])
    }
}

extension ModelFamily {
    /// Stable Diffusion 3 / 3.5 (`SD3Transformer2DModel`).
    public static let sd3 = ModelFamily(SD3Family())
}

extension ModelConfig {
    /// An SD3 / SD3.5 (MMDiT, MMDiT-X) configuration.
    public static func sd3(_ config: SD3Config) -> ModelConfig { ModelConfig(config) }
}

extension KnownVariant {
    /// SD3 Medium: 24 blocks, width 1536, no `attn2`, no q/k norm, 192² position table.
    public static let sd3Medium = KnownVariant(name: "SD3 Medium", config: .sd3(SD3Config(
        hiddenSize: 1536, numLayers: 24, attentionHeadDim: 64, attentionHeadDimIsAssumed: true, qkNorm: false, posEmbedMaxSize: 192)))
    /// SD3.5 Medium: 24 blocks, width 1536, `attn2` on blocks 0–12, RMS q/k norm, 384² table.
    public static let sd35Medium = KnownVariant(name: "SD3.5 Medium", config: .sd3(SD3Config(
        hiddenSize: 1536, numLayers: 24, attentionHeadDim: 64, dualAttentionLayers: Array(0...12), qkNorm: true,
        posEmbedMaxSize: 384)))
    /// SD3.5 Large: 38 blocks, width 2432, RMS q/k norm, 192² table.
    public static let sd35Large = KnownVariant(name: "SD3.5 Large", config: .sd3(SD3Config(
        hiddenSize: 2432, numLayers: 38, attentionHeadDim: 64, qkNorm: true, posEmbedMaxSize: 192)))
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


extension SD3Config: FamilyConfiguration {
    /// `ModelFamily.sd3`.
    public var family: ModelFamily { .sd3 }

    /// Throws `CheckpointError.invalidConfig` naming the first size that describes no buildable model.
    public func validate() throws(CheckpointError) {
        let c = self
        try requireConfig(c.hiddenSize > 0, "the width must be positive")
        try requireConfig(c.numLayers > 0, "an SD3 transformer needs at least one joint block")
        try requireConfig(c.patchSize > 0 && c.inChannels > 0 && c.outChannels > 0,
                          "patch size and channel counts must be positive")
        try requireConfig(c.jointAttentionDim > 0 && c.pooledProjectionDim > 0 && c.posEmbedMaxSize > 0,
                          "text widths and the position table side must be positive")
        try requireConfig(c.dualAttentionLayers.allSatisfy { (0..<c.numLayers).contains($0) },
                          "dual-attention block \(c.dualAttentionLayers.max() ?? 0) is past the last block")
        try requireConfig(Set(c.dualAttentionLayers).count == c.dualAttentionLayers.count,
                          "a dual-attention block is listed twice")
        try requireConfig(!c.qkNorm || c.attentionHeadDim != nil, "q/k norm needs a head size")
        if let d = c.attentionHeadDim {
            try requireConfig(d > 0 && c.hiddenSize % d == 0,
                              "width \(c.hiddenSize) is not a whole number of \(d)-channel heads")
        }
    }

    /// The numbers the layout table is evaluated with.
    public var layoutDimensions: LayoutDimensions {
        LayoutDimensions(hidden: hiddenSize, headDim: attentionHeadDim ?? 0, jointAttentionDim: jointAttentionDim,
                         pooledProjectionDim: pooledProjectionDim, inChannels: inChannels, patchSize: patchSize,
                         outputFeatures: patchSize * patchSize * outChannels, posEmbedLength: posEmbedMaxSize * posEmbedMaxSize,
                         jointBlocks: numLayers, singleBlocks: 0, dualAttention: Set(dualAttentionLayers), qkNorm: qkNorm,
                         guidance: false)
    }

    /// The defining sizes in words, for `inspect`.
    public var summaryParts: [String] {
        var parts = ["\(numLayers) blocks", "hidden \(hiddenSize)"]
        if let heads = numAttentionHeads, let d = attentionHeadDim {
            parts.append("\(heads) heads × \(d)\(attentionHeadDimIsAssumed ? " (assumed)" : "")")
        }
        parts.append(dualAttentionLayers.isEmpty ? "no attn2" : "attn2 on blocks " + ranges(dualAttentionLayers))
        parts.append(qkNorm ? "RMS q/k norm" : "no q/k norm")
        parts.append("pos table \(posEmbedMaxSize)²")
        return parts
    }

    /// `sample_size`: the latent side diffusers crops the position table to by default; no weight
    /// holds it.
    public var defaultedConfigKeys: [(key: String, value: String)] { [("sample_size", String(sampleSize))] }

    /// `attention_head_dim`/`num_attention_heads` when the head size is unknown.
    public var underivedConfigKeys: [String] {
        attentionHeadDim == nil ? ["attention_head_dim", "num_attention_heads"] : []
    }

    /// Sentences about values that were assumed or could not be derived.
    public var notes: [String] {
        if attentionHeadDim == nil {
            return ["attention_head_dim cannot be derived: the checkpoint has no q/k norm weights and width "
                    + "\(hiddenSize) is not a multiple of 64; pass --config with the model's config.json"]
        }
        if attentionHeadDimIsAssumed, let d = attentionHeadDim {
            return ["attention_head_dim \(d) is assumed (SD3 convention): the checkpoint has no q/k norm weights"]
        }
        return []
    }

    /// diffusers' `config.json` entries.
    public var diffusersConfigEntries: [(key: String, value: ConfigValue)] {
        [
            ("sample_size", .int(sampleSize)),
            ("patch_size", .int(patchSize)),
            ("in_channels", .int(inChannels)),
            ("num_layers", .int(numLayers)),
            ("attention_head_dim", attentionHeadDim.map(ConfigValue.int) ?? .null),
            ("num_attention_heads", numAttentionHeads.map(ConfigValue.int) ?? .null),
            ("joint_attention_dim", .int(jointAttentionDim)),
            ("caption_projection_dim", .int(captionProjectionDim)),
            ("pooled_projection_dim", .int(pooledProjectionDim)),
            ("out_channels", .int(outChannels)),
            ("pos_embed_max_size", .int(posEmbedMaxSize)),
            ("dual_attention_layers", .ints(dualAttentionLayers)),
            ("qk_norm", qkNorm ? .string("rms_norm") : .null),
        ]
    }
}
