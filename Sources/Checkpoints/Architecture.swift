/// A transformer architecture: a family and the sizes of one model of it, with the name of the
/// published model it matches (or the family's custom name, "SD3-style"/"FLUX-style", when it
/// matches none).
public struct Architecture: Sendable, Hashable {
    /// The sizes.
    public let config: ModelConfig

    /// An architecture with the given sizes; throws `CheckpointError.invalidConfig` when they
    /// describe no buildable model.
    public init(config: ModelConfig) throws(CheckpointError) {
        try config.validate()
        self.config = config
    }

    /// The architecture of a published model.
    public init(_ variant: KnownVariant) {
        self.config = variant.config
    }

    /// The family.
    public var family: ModelFamily { config.family }

    /// The published model of the family with exactly these sizes, if any.
    public var variant: KnownVariant? {
        family.variants.first { $0.config == config }
    }

    /// "SD3.5 Medium", "FLUX.1-dev", or the family's custom name ("SD3-style") for other sizes.
    public var name: String { variant?.name ?? family.customName }

    /// The layout table of the family.
    public var table: LayoutTable { family.table }

    /// One line naming the model and its defining sizes, for `inspect`.
    public var summary: String {
        "\(name) (" + config.base.summaryParts.joined(separator: ", ") + ")"
    }

    /// diffusers configuration keys whose values the weights do not determine (the caller must
    /// supply them, e.g. with `--config`): `attention_head_dim`/`num_attention_heads` for an SD3
    /// model without q/k norm whose width is not a multiple of 64, `axes_dims_rope` for a FLUX model
    /// whose head size is not 128.
    public var underivedConfigKeys: [String] { config.base.underivedConfigKeys }

    /// Sentences about values that were assumed or could not be derived from the weights.
    public var notes: [String] { config.base.notes }
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
