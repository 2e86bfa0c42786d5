/// Published models whose sizes FlowGuard recognises by name.
///
/// Several published models share their sizes with one listed here and cannot be told apart from
/// weights alone: SD3.5 Large Turbo looks like SD3.5 Large, FLUX.1 Kontext-dev like FLUX.1-dev,
/// FLUX.1 Canny-dev like FLUX.1 Depth-dev.
public enum KnownVariant: String, Sendable, Hashable, CaseIterable, Codable {
    /// SD3 Medium: 24 blocks, width 1536, no `attn2`, no q/k norm, 192² position table.
    case sd3Medium = "SD3 Medium"
    /// SD3.5 Medium: 24 blocks, width 1536, `attn2` on blocks 0–12, RMS q/k norm, 384² table.
    case sd35Medium = "SD3.5 Medium"
    /// SD3.5 Large: 38 blocks, width 2432, RMS q/k norm, 192² table.
    case sd35Large = "SD3.5 Large"
    /// FLUX.1-dev: 19 double + 38 single blocks, width 3072, guidance embedder.
    case flux1Dev = "FLUX.1-dev"
    /// FLUX.1-schnell: as dev without the guidance embedder.
    case flux1Schnell = "FLUX.1-schnell"
    /// FLUX.1-Fill-dev: dev with 384 input channels (latent, masked latent, mask).
    case flux1Fill = "FLUX.1-Fill-dev"
    /// FLUX.1-Depth-dev (and Canny-dev, same sizes): dev with 128 input channels.
    case flux1Depth = "FLUX.1-Depth-dev"

    /// The family of the model.
    public var family: ModelFamily {
        switch self {
        case .sd3Medium, .sd35Medium, .sd35Large: return .sd3
        case .flux1Dev, .flux1Schnell, .flux1Fill, .flux1Depth: return .flux
        }
    }

    /// The model's configuration as derived from its published weights.
    public var config: ModelConfig {
        switch self {
        case .sd3Medium:
            return .sd3(SD3Config(hiddenSize: 1536, numLayers: 24, attentionHeadDim: 64, attentionHeadDimIsAssumed: true,
                                  qkNorm: false, posEmbedMaxSize: 192))
        case .sd35Medium:
            return .sd3(SD3Config(hiddenSize: 1536, numLayers: 24, attentionHeadDim: 64,
                                  dualAttentionLayers: Array(0...12), qkNorm: true, posEmbedMaxSize: 384))
        case .sd35Large:
            return .sd3(SD3Config(hiddenSize: 2432, numLayers: 38, attentionHeadDim: 64, qkNorm: true,
                                  posEmbedMaxSize: 192))
        case .flux1Dev:
            return .flux(FluxConfig(hiddenSize: 3072, numLayers: 19, numSingleLayers: 38, attentionHeadDim: 128,
                                    guidanceEmbeds: true))
        case .flux1Schnell:
            return .flux(FluxConfig(hiddenSize: 3072, numLayers: 19, numSingleLayers: 38, attentionHeadDim: 128,
                                    guidanceEmbeds: false))
        case .flux1Fill:
            return .flux(FluxConfig(hiddenSize: 3072, numLayers: 19, numSingleLayers: 38, attentionHeadDim: 128,
                                    guidanceEmbeds: true, inChannels: 384))
        case .flux1Depth:
            return .flux(FluxConfig(hiddenSize: 3072, numLayers: 19, numSingleLayers: 38, attentionHeadDim: 128,
                                    guidanceEmbeds: true, inChannels: 128))
        }
    }
}

/// A transformer architecture: a family and the sizes of one model of it, with the name of the
/// published model it matches (or "SD3-style"/"FLUX-style" when it matches none).
public struct Architecture: Sendable, Hashable {
    /// The sizes.
    public let config: ModelConfig

    /// An architecture with the given sizes; throws `CheckpointError.invalidConfig` when they
    /// describe no buildable model.
    public init(config: ModelConfig) throws {
        try config.validate()
        self.config = config
    }

    /// The architecture of a published model.
    public init(_ variant: KnownVariant) {
        self.config = variant.config
    }

    /// The family.
    public var family: ModelFamily { config.family }

    /// The published model with exactly these sizes, if any.
    public var variant: KnownVariant? {
        KnownVariant.allCases.first { $0.config == config }
    }

    /// "SD3.5 Medium", "FLUX.1-dev", or "SD3-style"/"FLUX-style" for other sizes.
    public var name: String { variant?.rawValue ?? family.customName }

    /// The layout table of the family.
    public var table: LayoutTable { LayoutTable.of(family) }

    /// One line naming the model and its defining sizes, for `inspect`.
    public var summary: String {
        switch config {
        case .sd3(let c):
            var parts = ["\(c.numLayers) blocks", "hidden \(c.hiddenSize)"]
            if let heads = c.numAttentionHeads, let d = c.attentionHeadDim {
                parts.append("\(heads) heads × \(d)\(c.attentionHeadDimIsAssumed ? " (assumed)" : "")")
            }
            parts.append(c.dualAttentionLayers.isEmpty ? "no attn2" : "attn2 on blocks " + ranges(c.dualAttentionLayers))
            parts.append(c.qkNorm ? "RMS q/k norm" : "no q/k norm")
            parts.append("pos table \(c.posEmbedMaxSize)²")
            return "\(name) (" + parts.joined(separator: ", ") + ")"
        case .flux(let c):
            var parts = ["\(c.numLayers) double + \(c.numSingleLayers) single blocks", "hidden \(c.hiddenSize)",
                         "\(c.numAttentionHeads) heads × \(c.attentionHeadDim)"]
            parts.append(c.guidanceEmbeds ? "guidance embedder" : "no guidance embedder")
            parts.append("\(c.inChannels) → \(c.outChannels) channels")
            return "\(name) (" + parts.joined(separator: ", ") + ")"
        }
    }

    /// diffusers configuration keys whose values the weights do not determine (the caller must
    /// supply them, e.g. with `--config`): `attention_head_dim`/`num_attention_heads` for an SD3
    /// model without q/k norm whose width is not a multiple of 64, `axes_dims_rope` for a FLUX model
    /// whose head size is not 128.
    public var underivedConfigKeys: [String] {
        switch config {
        case .sd3(let c): return c.attentionHeadDim == nil ? ["attention_head_dim", "num_attention_heads"] : []
        case .flux(let c): return c.axesDimsRope == nil ? ["axes_dims_rope"] : []
        }
    }

    /// Sentences about values that were assumed or could not be derived from the weights.
    public var notes: [String] {
        switch config {
        case .sd3(let c):
            if c.attentionHeadDim == nil {
                return ["attention_head_dim cannot be derived: the checkpoint has no q/k norm weights and width "
                        + "\(c.hiddenSize) is not a multiple of 64; supply it with --config"]
            }
            if c.attentionHeadDimIsAssumed, let d = c.attentionHeadDim {
                return ["attention_head_dim \(d) is assumed (SD3 convention): the checkpoint has no q/k norm weights"]
            }
            return []
        case .flux(let c):
            if c.axesDimsRope == nil {
                return ["axes_dims_rope cannot be derived from the weights (head size \(c.attentionHeadDim), "
                        + "not 128); supply it with --config"]
            }
            return []
        }
    }
}

/// `[0,1,2,5]` → "0–2, 5".
func ranges(_ values: [Int]) -> String {
    var out: [String] = []
    var i = 0
    let v = values.sorted()
    while i < v.count {
        var j = i
        while j + 1 < v.count && v[j + 1] == v[j] + 1 { j += 1 }
        out.append(j > i ? "\(v[i])–\(v[j])" : "\(v[i])")
        i = j + 1
    }
    return out.joined(separator: ", ")
}
