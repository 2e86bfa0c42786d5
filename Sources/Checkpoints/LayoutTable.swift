/// A configuration quantity that tensor sizes are whole multiples of.
public enum Quantity: String, Sendable, Hashable, CaseIterable {
    /// The number 1 (for fixed sizes such as the 256 timestep frequencies).
    case unit
    /// Width of the token streams.
    case hidden
    /// Channels per attention head.
    case headDim
    /// Width of the text-encoder token embeddings.
    case jointAttentionDim
    /// Width of the pooled text embedding.
    case pooledProjectionDim
    /// Latent channels in.
    case inChannels
    /// Side of a patch (SD3).
    case patchSize
    /// Output features of the final projection: patch² × latent channels out.
    case outputFeatures
    /// Rows of the SD3 position table: `pos_embed_max_size²`.
    case posEmbedLength
}

/// A tensor size written as an expression of the configuration: `factor × quantity`
/// (`3×hidden` for a fused qkv, `4×hidden` for an MLP, `256` for timestep frequencies).
public struct Extent: Sendable, Hashable, CustomStringConvertible {
    /// The multiplier.
    public var factor: Int
    /// The configuration quantity multiplied.
    public var quantity: Quantity

    /// Creates `factor × quantity`.
    public init(_ factor: Int, _ quantity: Quantity) {
        self.factor = factor
        self.quantity = quantity
    }

    /// `k × hidden`.
    public static func hidden(_ k: Int = 1) -> Extent { Extent(k, .hidden) }
    /// A fixed size.
    public static func fixed(_ n: Int) -> Extent { Extent(n, .unit) }
    /// The head size.
    public static let headDim = Extent(1, .headDim)

    /// The expression as written in the table, e.g. `3×hidden`.
    public var description: String {
        switch (factor, quantity) {
        case (_, .unit): return String(factor)
        case (1, _): return quantity.rawValue
        default: return "\(factor)×\(quantity.rawValue)"
        }
    }
}

/// The condition under which a layout rule applies, as a conjunction of the atoms it contains
/// (the empty set means "always").
public struct RuleCondition: OptionSet, Sendable, Hashable, CustomStringConvertible {
    /// The raw bits.
    public let rawValue: UInt8
    /// Creates a condition from raw bits.
    public init(rawValue: UInt8) { self.rawValue = rawValue }

    /// Only the last joint block (SD3: its context stream is pre-only).
    public static let lastBlock = RuleCondition(rawValue: 1 << 0)
    /// Every joint block but the last.
    public static let notLastBlock = RuleCondition(rawValue: 1 << 1)
    /// Only blocks listed in `dual_attention_layers` (SD3.5 MMDiT-X `attn2`).
    public static let dualAttention = RuleCondition(rawValue: 1 << 2)
    /// Only blocks not listed in `dual_attention_layers`.
    public static let singleAttention = RuleCondition(rawValue: 1 << 3)
    /// Only when attention has q/k norm weights.
    public static let qkNorm = RuleCondition(rawValue: 1 << 4)
    /// Only when the FLUX guidance embedder is present.
    public static let guidance = RuleCondition(rawValue: 1 << 5)

    /// Always applies.
    public static let always: RuleCondition = []

    /// The atoms in words, joined by "and"; "always" for the empty condition.
    public var description: String {
        let names: [(RuleCondition, String)] = [
            (.lastBlock, "last block"), (.notLastBlock, "not the last block"),
            (.dualAttention, "block has attn2"), (.singleAttention, "block has no attn2"),
            (.qkNorm, "q/k norm present"), (.guidance, "guidance embedder present"),
        ]
        let words = names.filter { contains($0.0) }.map(\.1)
        return words.isEmpty ? "always" : words.joined(separator: " and ")
    }
}

/// How the rows (dim 0) of an original-layout tensor relate to its diffusers tensor(s).
public enum RowTransform: Sendable, Hashable {
    /// Same tensor under another name.
    case identity
    /// The original tensor is the concatenation along dim 0 of the diffusers tensors, in order,
    /// with these row counts (`[hidden, hidden, hidden]` for qkv).
    case split([Extent])
    /// The original tensor's two row halves appear in reverse order in the single diffusers tensor
    /// (shift,scale ↔ scale,shift). Self-inverse.
    case swapHalves
}

/// Where a block-indexed rule is repeated.
public enum BlockScope: String, Sendable, Hashable {
    /// Not inside a block: appears once.
    case global
    /// Once per SD3 joint block / FLUX double-stream block (`{i}` runs over diffusers `num_layers`).
    case joint
    /// Once per FLUX single-stream block (`{i}` runs over `num_single_layers`).
    case single
}

/// One parameter a rule carries: its name under the module in each layout and the shape of the
/// original-layout tensor. An empty name means the module path is itself the tensor key (SD3's
/// top-level `pos_embed`).
public struct ParameterRule: Sendable, Hashable {
    /// Name under the original module (`weight`, `bias`, FLUX norm `scale`, or empty).
    public var original: String
    /// Name under the diffusers module(s) (`weight`, `bias`, `pos_embed`).
    public var diffusers: String
    /// Shape of the original-layout tensor; a split or swap acts on its dim 0.
    public var shape: [Extent]

    /// Creates a parameter rule.
    public init(original: String, diffusers: String, shape: [Extent]) {
        self.original = original
        self.diffusers = diffusers
        self.shape = shape
    }

    /// `weight [out, in]` and `bias [out]` of a linear layer, same names in both layouts.
    public static func linear(out: Extent, in inputs: Extent) -> [ParameterRule] {
        [ParameterRule(original: "weight", diffusers: "weight", shape: [out, inputs]),
         ParameterRule(original: "bias", diffusers: "bias", shape: [out])]
    }
}

/// One row of a layout table: an original module, its diffusers module(s), how rows move between
/// them, which parameters it carries and when it applies. Patterns contain `{i}` for the block index.
public struct LayoutRule: Sendable, Hashable {
    /// Which index `{i}` runs over.
    public var scope: BlockScope
    /// Original-layout module pattern, without key prefix (`joint_blocks.{i}.x_block.attn.qkv`).
    public var original: String
    /// diffusers module pattern(s); several exactly when `transform` is a split, one per part.
    public var diffusers: [String]
    /// How rows relate.
    public var transform: RowTransform
    /// Parameters carried by the module.
    public var parameters: [ParameterRule]
    /// When the rule applies.
    public var condition: RuleCondition

    /// Creates a rule.
    public init(_ scope: BlockScope, _ original: String, _ diffusers: [String], _ transform: RowTransform,
                _ parameters: [ParameterRule], when condition: RuleCondition = .always) {
        self.scope = scope
        self.original = original
        self.diffusers = diffusers
        self.transform = transform
        self.parameters = parameters
        self.condition = condition
    }

    /// Creates a rule whose module is renamed without moving rows.
    public init(_ scope: BlockScope, _ original: String, _ diffusers: [String],
                _ parameters: [ParameterRule], when condition: RuleCondition = .always) {
        self.init(scope, original, diffusers, .identity, parameters, when: condition)
    }

    /// The module pattern(s) of the rule in `layout`.
    public func modules(in layout: KeyLayout) -> [String] {
        layout == .original ? [original] : diffusers
    }
}

/// The single source of truth for a family's key layouts: every tensor of both layouts is produced
/// by exactly one rule. Used to detect, to validate, to plan conversions in both directions, to map
/// LoRA module names and to generate synthetic checkpoints.
public struct LayoutTable: Sendable {
    /// The family described.
    public let family: ModelFamily
    /// The rules, in the order tensors are listed in plans and synthetic checkpoints.
    public let rules: [LayoutRule]
    /// Lookup from name patterns to rules, built once from `rules`.
    let patternIndex: PatternIndex

    /// Creates a table.
    public init(family: ModelFamily, rules: [LayoutRule]) {
        self.family = family
        self.rules = rules
        self.patternIndex = PatternIndex(rules)
    }

    /// The table of a family (its descriptor's `table`).
    public static func of(_ family: ModelFamily) -> LayoutTable {
        family.table
    }
}

extension LayoutTable {
    /// The name prefixes in front of a block index in `layout`, per block scope (joint before
    /// single, scopes without rules left out): SD3 original `joint_blocks.`, FLUX diffusers
    /// `transformer_blocks.` and `single_transformer_blocks.`. LoRA readers find adapted block
    /// indices with them.
    public func blockPrefixes(in layout: KeyLayout) -> [(scope: BlockScope, prefixes: [String])] {
        var out: [(scope: BlockScope, prefixes: [String])] = []
        for scope in [BlockScope.joint, .single] {
            var prefixes: [String] = []
            for rule in rules where rule.scope == scope {
                for module in rule.modules(in: layout) {
                    guard let r = module.firstRange(of: "{i}.") else { continue }
                    let prefix = String(module[..<r.lowerBound])
                    if !prefixes.contains(prefix) { prefixes.append(prefix) }
                }
            }
            if !prefixes.isEmpty { out.append((scope, prefixes)) }
        }
        return out
    }
}
