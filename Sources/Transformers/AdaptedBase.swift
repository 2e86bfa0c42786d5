/// An adapter to apply to a base transformer: a `.safetensors` file in any dialect (or a delta
/// archive holding one), or a PEFT folder, with the user's multiplier on top of its own scale.
public struct AdapterReference: Sendable, Hashable {
    /// The adapter file or PEFT folder.
    public var path: String
    /// Multiplier of the adapter's own scale (α/r, or 1 where the dialect has none); may be negative.
    public var scale: Float

    /// Creates a reference.
    public init(path: String, scale: Float = 1) {
        self.path = path
        self.scale = scale
    }
}

/// A base transformer with adapters applied, the one way FlowGuard applies them to a model it
/// runs (`flowguard run --lora`, the trainer's `base_adapters`): LoKr, LoHa, full-delta and DoRA
/// parts, replaced norm scales and a widened input projection are merged exactly (Float32, as
/// `flowguard lora merge`) into in-memory copies of the weights they change; low-rank parts stay
/// frozen branches `scale·B·A` beside the weights, so ΔW is never formed.
public struct AdaptedBase: Sendable {
    /// The weights the model is built from: the base's, with the exactly merged tensors replaced.
    public let weights: TransformerWeights
    /// The low-rank branches of every adapter, by diffusers module name (no weight overrides:
    /// those are in `weights`).
    public let branches: AdapterSet
    /// Per adapter, in order: its path, scale, and the number of modules and weights it changes.
    public let applied: [(path: String, scale: Float, modules: Int)]
    /// The diffusers names of the tensors replaced by exact merges, sorted.
    public let replacedTensors: [String]

    /// Reads every adapter of `adapters` for `base` (each checked against the model: family,
    /// width, module names and shapes) and applies them together. `progress` receives one line
    /// per adapter. Throws when an adapter cannot be read or does not fit, and when two adapters
    /// both change one weight with a non-low-rank delta (each would be merged into the base's
    /// weight, not into the other's result).
    public init(_ base: TransformerWeights, adapters: [AdapterReference],
                progress: (String) -> Void = { _ in }) throws(TransformerError) {
        var set = AdapterSet()
        var applied: [(path: String, scale: Float, modules: Int)] = []
        for adapter in adapters {
            progress("loading adapter \(adapter.path)")
            let one = try AdapterSet(path: adapter.path, scale: adapter.scale, for: base)
            applied.append((adapter.path, adapter.scale, one.modules.count + one.weightOverrides.count))
            if let shared = set.sharedOverrides(with: one).first {
                throw .badAdapter(path: adapter.path, reason: "it changes \"\(shared)\" with a non-low-rank delta (LoKr, LoHa, full or DoRA), as an earlier adapter does; merge one of them into the checkpoint first (flowguard lora merge)")
            }
            set = set.merging(one)
        }
        replacedTensors = set.weightOverrides.keys.sorted()
        // LoKr, LoHa, full and DoRA deltas were merged exactly into copies of their weights.
        weights = set.weightOverrides.isEmpty ? base : TransformerWeights(replacing: base, with: set.weightOverrides)
        set.weightOverrides = [:]
        branches = set
        self.applied = applied
    }

    /// The low-rank branches as constant graph variables (nil when there are none).
    public func frozenBranches() -> LoRAParameters? {
        branches.modules.isEmpty ? nil : LoRAParameters(branches, trainable: false)
    }
}
