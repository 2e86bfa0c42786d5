/// The sizes of one family's transformer (`SD3Config`, `FluxConfig`), with what the shared code
/// asks of every configuration: checks, the numbers its layout table is evaluated with, the
/// `inspect` summary, the diffusers `config.json` entries and notes about underived values.
public protocol FamilyConfiguration: Sendable, Hashable {
    /// The family the configuration belongs to.
    var family: ModelFamily { get }
    /// Width of the token streams.
    var hiddenSize: Int { get }
    /// Width of the text-encoder token embeddings (`joint_attention_dim`).
    var jointAttentionDim: Int { get }
    /// Width of the pooled text embedding (`pooled_projection_dim`).
    var pooledProjectionDim: Int { get }
    /// Throws `CheckpointError.invalidConfig` when the sizes describe no buildable model.
    func validate() throws(CheckpointError)
    /// The sizes, block counts and flags the family's layout table is evaluated with.
    var layoutDimensions: LayoutDimensions { get }
    /// The defining sizes in words, for the `inspect` line ("24 blocks", "hidden 1536", …).
    var summaryParts: [String] { get }
    /// diffusers configuration keys whose values the weights do not determine.
    var underivedConfigKeys: [String] { get }
    /// Sentences about values that were assumed or could not be derived from the weights.
    var notes: [String] { get }
    /// diffusers configuration keys the weights never hold and that are written with diffusers'
    /// default unless a `config.json` gives them, each with that default (`sample_size` 128 for SD3).
    var defaultedConfigKeys: [(key: String, value: String)] { get }
    /// The diffusers `config.json` entries other than `_class_name`, in any order; values the
    /// weights do not determine are `.null`.
    var diffusersConfigEntries: [(key: String, value: ConfigValue)] { get }
}

extension FamilyConfiguration {
    /// By default every value is derived.
    public var underivedConfigKeys: [String] { [] }
    /// By default there is nothing to note.
    public var notes: [String] { [] }
    /// By default every written value is derived or underived (null), none defaulted.
    public var defaultedConfigKeys: [(key: String, value: String)] { [] }
}

/// The configuration of a transformer of any family: a `FamilyConfiguration` behind one
/// hashable value. Built-in families add constructors (`ModelConfig.sd3(_:)`, `.flux(_:)`).
public struct ModelConfig: Sendable, Hashable {
    /// The family's own configuration.
    public let base: any FamilyConfiguration

    /// Wraps a family's configuration.
    public init(_ base: some FamilyConfiguration) {
        self.base = base
    }

    /// Configurations are equal when they are of the same type with equal values.
    public static func == (lhs: ModelConfig, rhs: ModelConfig) -> Bool {
        AnyHashable(lhs.base) == AnyHashable(rhs.base)
    }

    /// Hashes the family's configuration.
    public func hash(into hasher: inout Hasher) { hasher.combine(AnyHashable(base)) }

    /// The family's configuration when it is of type `type`.
    public func typed<C: FamilyConfiguration>(_ type: C.Type) -> C? { base as? C }

    /// The family the configuration belongs to.
    public var family: ModelFamily { base.family }

    /// Width of the token streams.
    public var hiddenSize: Int { base.hiddenSize }

    /// Width of the text-encoder token embeddings.
    public var jointAttentionDim: Int { base.jointAttentionDim }

    /// Width of the pooled text embedding.
    public var pooledProjectionDim: Int { base.pooledProjectionDim }

    /// Throws `CheckpointError.invalidConfig` when the sizes describe no buildable model.
    public func validate() throws(CheckpointError) { try base.validate() }
}

/// Throws `CheckpointError.invalidConfig(reason)` unless `ok`; the check every configuration's
/// `validate()` is written with.
public func requireConfig(_ ok: Bool, _ reason: @autoclosure () -> String) throws(CheckpointError) {
    if !ok { throw .invalidConfig(reason()) }
}
