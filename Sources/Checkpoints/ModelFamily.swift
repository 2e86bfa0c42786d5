import JSON
import SafeTensors

/// Everything FlowGuard's checkpoint side knows about one transformer family, in one place: its
/// names, its layout table, how its configuration is derived from tensor shapes or from a diffusers
/// `config.json`, its published variants, and the guesses LoRA readers make from module names.
///
/// A protocol with one conforming type per family (`SD3Family`, `FluxFamily`) rather than a struct
/// of closures: the compiler lists every requirement a new family must provide, the defaults below
/// cover the optional ones, and each family's functions are ordinary methods beside its own typed
/// configuration (`SD3Config`, `FluxConfig`) instead of closures that cast a shared one. Code outside
/// a family's own files holds a `ModelFamily` (this descriptor behind a hashable value) and asks
/// it; nothing switches on which family it is. The runtime's half (building the model and its
/// inputs) is `TransformerFamily` in `Transformers`.
public protocol ModelFamilyDescriptor: Sendable {
    /// Stable identifier written into files and reports ("sd3", "flux").
    var id: String { get }
    /// The family's name in sentences ("SD3", "FLUX").
    var displayName: String { get }
    /// The indefinite article read before `displayName` ("an" SD3, "a" FLUX).
    var indefiniteArticle: String { get }
    /// The name given to a checkpoint of this family whose sizes match no published model.
    var customName: String { get }
    /// diffusers' model class (`SD3Transformer2DModel`).
    var diffusersClassName: String { get }
    /// diffusers' module that defines the class (PEFT's `auto_mapping.parent_library`).
    var diffusersParentLibrary: String { get }
    /// kohya sd-scripts' network module written as `ss_network_module` (`networks.lora_sd3`).
    var kohyaNetworkModule: String { get }
    /// The key prefix written for an original-layout output when none is asked for.
    var defaultOriginalPrefix: KeyPrefix { get }
    /// The trainer's AdamW learning rate when the run configuration gives none.
    var defaultLearningRate: Double { get }
    /// The layout table: every tensor of both layouts, declaratively.
    var table: LayoutTable { get }
    /// Published models of the family recognised by their sizes, in the order they are listed.
    var variants: [KnownVariant] { get }
    /// Substrings of module names (either layout) that only this family's modules contain; LoRA
    /// readers guess an adapter's family from them.
    var moduleNameMarkers: [String] { get }

    /// The configuration the recognised tensors' shapes describe. Throws `CheckpointError`
    /// (`.underivableConfig`, `.unknownArchitecture` for a missing anchor tensor).
    func deriveConfig(_ shapes: ShapeEvidence) throws(CheckpointError) -> ModelConfig

    /// Whether a diffusers `_class_name` (or PEFT `base_model_class`) names this family's model.
    func claims(diffusersClassName: String) -> Bool
    /// Whether a diffusers `config.json` without `_class_name` is this family's.
    func claimsUnnamedDiffusersConfig(_ config: DiffusersConfigFields) -> Bool
    /// The configuration a diffusers `config.json` of this family describes. Throws
    /// `CheckpointError.invalidConfig` naming the field that is missing or malformed.
    func config(diffusers config: DiffusersConfigFields) throws(CheckpointError) -> ModelConfig

    /// A small configuration with every optional module present and room for block `index` of
    /// every scope in `highestBlocks` (absent scopes: none adapted), whose module names LoRA readers
    /// match kohya's underscored names against; nil when the family cannot build one.
    func moduleNamingConfig(highestBlocks: [BlockScope: Int]) -> ModelConfig?
    /// The configuration an adapter's modules imply: `width` read from an attention projection,
    /// `blocks` the adapted block indices of each scope, `moduleNames` the adapted modules in
    /// `layout`. Returns it with sentences saying what was assumed.
    func adapterConfig(width: Int, blocks: [BlockScope: [Int]], moduleNames: [String],
                       layout: KeyLayout) -> (config: ModelConfig, notes: [String])
}

extension ModelFamilyDescriptor {
    /// By default a class name belongs to the family when it is exactly `diffusersClassName`.
    public func claims(diffusersClassName name: String) -> Bool { name == diffusersClassName }
    /// By default a config without `_class_name` is not claimed.
    public func claimsUnnamedDiffusersConfig(_ config: DiffusersConfigFields) -> Bool { false }
    /// By default no variants are published.
    public var variants: [KnownVariant] { [] }
    /// By default no module-name markers.
    public var moduleNameMarkers: [String] { [] }
    /// By default LoRA name matching builds no generic configuration.
    public func moduleNamingConfig(highestBlocks: [BlockScope: Int]) -> ModelConfig? { nil }
    /// By default the original layout has no key prefix.
    public var defaultOriginalPrefix: KeyPrefix { .none }
    /// By default the article is "a".
    public var indefiniteArticle: String { "a" }
    /// By default the custom name is the display name followed by "-style".
    public var customName: String { displayName + "-style" }
}

/// A transformer family: a `ModelFamilyDescriptor` behind a value that compares and hashes by
/// the descriptor's `id`. The built-in families are `ModelFamily.sd3` and `.flux`; functions that
/// recognise checkpoints take the families to try as a parameter (`ModelFamily.builtIn` by
/// default), so a new family is registered by passing it, not by editing shared code.
public struct ModelFamily: Sendable, Hashable, CustomStringConvertible {
    /// The family's description.
    public let descriptor: any ModelFamilyDescriptor

    /// The family described by `descriptor`.
    public init(_ descriptor: any ModelFamilyDescriptor) {
        self.descriptor = descriptor
    }

    /// The families FlowGuard knows without being told: SD3 and FLUX, in the order detection
    /// tries them.
    public static let builtIn: [ModelFamily] = [.sd3, .flux]

    /// The family among `families` whose `id` is `id`.
    public static func named(_ id: String, in families: [ModelFamily] = builtIn) -> ModelFamily? {
        families.first { $0.id == id }
    }

    /// Families compare by identifier.
    public static func == (lhs: ModelFamily, rhs: ModelFamily) -> Bool { lhs.id == rhs.id }

    /// Hashes the identifier.
    public func hash(into hasher: inout Hasher) { hasher.combine(id) }

    /// The identifier ("sd3", "flux").
    public var id: String { descriptor.id }
    /// The identifier (the former enum's raw value; kept for callers that write it).
    public var rawValue: String { descriptor.id }
    /// The identifier.
    public var description: String { descriptor.id }
    /// The family's name in sentences ("SD3", "FLUX").
    public var displayName: String { descriptor.displayName }
    /// "an SD3 transformer", "a FLUX transformer".
    public var transformerPhrase: String { descriptor.indefiniteArticle + " " + displayName + " transformer" }
    /// The name of a checkpoint whose sizes match no published model ("SD3-style").
    public var customName: String { descriptor.customName }
    /// diffusers' model class for this family.
    public var diffusersClassName: String { descriptor.diffusersClassName }
    /// diffusers' module defining the class (PEFT `parent_library`).
    public var diffusersParentLibrary: String { descriptor.diffusersParentLibrary }
    /// kohya's `ss_network_module` for this family.
    public var kohyaNetworkModule: String { descriptor.kohyaNetworkModule }
    /// The prefix of an original-layout output when none is asked for.
    public var defaultOriginalPrefix: KeyPrefix { descriptor.defaultOriginalPrefix }
    /// The trainer's learning rate when none is configured.
    public var defaultLearningRate: Double { descriptor.defaultLearningRate }
    /// The layout table.
    public var table: LayoutTable { descriptor.table }
    /// Published variants of the family.
    public var variants: [KnownVariant] { descriptor.variants }

    /// "an SD3 or FLUX", "an SD3, FLUX or TOY": the families as alternatives in a sentence.
    static func alternatives(_ families: [ModelFamily]) -> String {
        guard let first = families.first else { return "a known" }
        let names = families.map(\.displayName)
        let joined = names.count == 1 ? names[0] : names.dropLast().joined(separator: ", ") + " or " + names.last!
        return first.descriptor.indefiniteArticle + " " + joined
    }

    /// The family a diffusers class name belongs to, among `families`.
    public static func claiming(diffusersClassName name: String, in families: [ModelFamily] = builtIn) -> ModelFamily? {
        families.first { $0.descriptor.claims(diffusersClassName: name) }
    }

    /// Guesses the family from module names in either layout: the family whose markers the names
    /// contain. When markers of several families appear the one listed last in `families` wins
    /// (a later family's markers are the more specific: FLUX's `x_embedder` also begins SD3's
    /// original `x_embedder.proj`). Nil when no marker appears.
    public static func guess(fromModuleNames names: [String], in families: [ModelFamily] = builtIn) -> ModelFamily? {
        families.last { family in
            let markers = family.descriptor.moduleNameMarkers
            return names.contains { n in markers.contains { n.contains($0) } }
        }
    }
}

/// A published model FlowGuard recognises by its sizes. Several published models share their
/// sizes with one listed and cannot be told apart from weights alone: SD3.5 Large Turbo looks like
/// SD3.5 Large, FLUX.1 Kontext-dev like FLUX.1-dev, FLUX.1 Canny-dev like FLUX.1 Depth-dev.
public struct KnownVariant: Sendable, Hashable, CustomStringConvertible {
    /// The published name ("SD3.5 Medium", "FLUX.1-dev").
    public let name: String
    /// The configuration derived from its published weights.
    public let config: ModelConfig

    /// A published model named `name` with sizes `config`.
    public init(name: String, config: ModelConfig) {
        self.name = name
        self.config = config
    }

    /// The published name (the former enum's raw value).
    public var rawValue: String { name }
    /// The published name.
    public var description: String { name }
    /// The family of the model.
    public var family: ModelFamily { config.family }

    /// Every variant of the built-in families.
    public static var allCases: [KnownVariant] { ModelFamily.builtIn.flatMap(\.variants) }
}

/// The fields of a diffusers transformer `config.json`, read with the checks every family needs.
public struct DiffusersConfigFields: Sendable {
    /// The whole JSON object.
    public let json: JSONValue

    /// Wraps a parsed `config.json` object.
    public init(_ json: JSONValue) {
        self.json = json
    }

    /// Whether `key` is present and not null.
    public func has(_ key: String) -> Bool {
        guard let v = json[key] else { return false }
        return v != .null
    }

    /// The non-negative integer `key`, or `value` when it is absent or null; throws
    /// `CheckpointError.invalidConfig` when it is absent without a default or not such an integer.
    public func int(_ key: String, default value: Int? = nil) throws(CheckpointError) -> Int {
        switch json[key] {
        case nil, .null?:
            if let value { return value }
            throw .invalidConfig("config.json has no \"\(key)\"")
        case let v?:
            guard let n = v.nonNegativeInt else {
                throw .invalidConfig("config.json \"\(key)\" must be a non-negative integer, not \(v.compactText)")
            }
            return n
        }
    }

    /// The list of non-negative integers `key`, nil when absent or null.
    public func ints(_ key: String) throws(CheckpointError) -> [Int]? {
        guard let v = json[key], v != .null else { return nil }
        guard let items = v.arrayValue?.map(\.nonNegativeInt), items.allSatisfy({ $0 != nil }) else {
            throw .invalidConfig("config.json \"\(key)\" must be a list of non-negative integers")
        }
        return items.map { $0! }
    }

    /// Whether `key` is the JSON value `true`.
    public func isTrue(_ key: String) -> Bool { json[key] == .bool(true) }
}
