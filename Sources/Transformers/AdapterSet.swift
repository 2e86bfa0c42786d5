import Checkpoints
import LoRA
import SafeTensors
import TensorRuntime

/// LoRA adapters to apply to a transformer, by diffusers module name (e.g.
/// `transformer_blocks.0.attn.to_q`): for each module, one or more low-rank branches, each with
/// its own scale. Several adapters can be combined.
public struct AdapterSet: Sendable {
    /// One branch: ΔW = scale · up · down.
    public struct Branch: Sendable {
        /// A, `[rank, in]`.
        public var down: Tensor
        /// B, `[out, rank]`.
        public var up: Tensor
        /// The adapter's own scale (α/r, α/√r for rsLoRA) times the user's scale.
        public var scale: Float
        /// Creates a branch.
        public init(down: Tensor, up: Tensor, scale: Float) {
            self.down = down
            self.up = up
            self.scale = scale
        }
    }

    /// Branches by diffusers module name.
    public var modules: [String: [Branch]]
    /// Weights an adapter changes in ways no low-rank branch expresses (LoKr, LoHa, full deltas,
    /// DoRA, replaced norm scales, a widened input projection): the exact merged values W′ in
    /// Float32, by diffusers tensor name, to use instead of the checkpoint's.
    public var weightOverrides: [String: Tensor] = [:]

    /// No adapters.
    public init() { modules = [:] }

    /// Reads the adapter at `path` (any supported dialect, file or PEFT folder), converts it to
    /// the diffusers layout of `weights`' architecture and checks every module exists with the
    /// right shapes. `scale` multiplies the adapter's own scale.
    ///
    /// Throws when the file cannot be read or holds NaN/Inf factors, when the adapter was made
    /// for another family or width, when a module is not a weight of the model or its sizes
    /// differ, and when a module carries a nonzero LoRA bias (unsupported; zero biases are dropped).
    public init(path: String, scale: Float, for weights: TransformerWeights) throws(TransformerError) {
        guard scale.isFinite else { throw .badAdapter(path: path, reason: "the adapter scale \(scale) is not a finite number") }
        let model = weights.architecture
        var adapter = try Self.read(path, model: model)
        try Self.checkFits(adapter, path: path, model: model)
        if !adapter.isLowRankOnly {
            weightOverrides = try Self.exactOverrides(adapter, path: path, scale: scale, weights: weights)
            // What the overrides hold is not applied again as branches.
            let all = adapter.format == .bflControl
            adapter.modules.removeAll { all || adapter.magnitudes[$0.name] != nil }
            adapter.deltas = []
            adapter.magnitudes = [:]
        }
        let converted: LoRAAdapter
        do { converted = try adapter.converted(to: .diffusers, architecture: model) } catch {
            throw Self.wrap(error, path: path)
        }
        var modules: [String: [Branch]] = [:]
        for m in converted.modules {
            let weightName = m.name + ".weight"
            guard weights.contains(weightName) else {
                throw .badAdapter(path: path, reason: "module \"\(m.name)\" adapts \"\(weightName)\", which \(model.name) "
                                  + "(\(weights.path)) does not have")
            }
            let shape = try weights.shape(of: weightName)
            let inFeatures = shape.dropFirst().reduce(1, *)
            guard shape.count >= 2, shape[0] == m.up.rows, inFeatures == m.down.columns else {
                throw .badAdapter(path: path, reason: "module \"\(m.name)\" is [\(m.up.rows) out × \(m.down.columns) in] "
                                  + "but the model's \"\(weightName)\" has shape \(shape)")
            }
            guard m.up.columns == m.rank else {
                throw .badAdapter(path: path, reason: "module \"\(m.name)\": B has \(m.up.columns) columns but A has rank \(m.rank)")
            }
            if let bias = m.upBias, bias.values.contains(where: { $0 != 0 }) {
                throw .badAdapter(path: path, reason: "module \"\(m.name)\" carries a LoRA bias (lora_B.bias); "
                                  + "adapters with nonzero biases are not supported")
            }
            let branch = Branch(down: Tensor(shape: [m.rank, m.down.columns], scalars: m.down.values),
                                up: Tensor(shape: [m.up.rows, m.rank], scalars: m.up.values),
                                scale: m.scale(rsLoRA: converted.rsLoRA) * scale)
            modules[m.name, default: []].append(branch)
        }
        self.modules = modules
    }

    /// This set plus `other`'s branches (several adapters at once). Weight overrides are taken
    /// from both; check `sharedOverrides(with:)` first, as two adapters that change the same weight
    /// exactly were each merged into the checkpoint's weight, not into the other's result.
    public func merging(_ other: AdapterSet) -> AdapterSet {
        var merged = self
        for (name, branches) in other.modules { merged.modules[name, default: []] += branches }
        for (name, tensor) in other.weightOverrides { merged.weightOverrides[name] = tensor }
        return merged
    }

    /// Weights both sets override, sorted.
    public func sharedOverrides(with other: AdapterSet) -> [String] {
        weightOverrides.keys.filter { other.weightOverrides[$0] != nil }.sorted()
    }

    /// W′ of every weight the adapter's non-low-rank part changes (LoKr, LoHa, full deltas, DoRA
    /// modules with their own ΔW, replaced norm scales), merged exactly in Float32 as
    /// `flowguard lora merge` does, keyed by diffusers name.
    static func exactOverrides(_ adapter: LoRAAdapter, path: String, scale: Float,
                               weights: TransformerWeights) throws(TransformerError) -> [String: Tensor] {
        var exact = adapter
        // BFL Control's low-rank modules go with its widened input and replaced norms.
        exact.modules = adapter.modules.filter { adapter.format == .bflControl || adapter.magnitudes[$0.name] != nil }
        var shapes: [String: [Int]] = [:]
        for name in weights.names { if let s = try? weights.shape(of: name) { shapes[name] = s } }
        let base = DetectedCheckpoint(architecture: weights.architecture, layout: .diffusers, prefix: .none)
        do {
            let placement = try DeltaPlacement(adapter: exact, base: base, shapes: shapes)
            var out: [String: Tensor] = [:]
            for name in placement.touchedTensors {
                var values = try weights.tensor(name).scalars
                let shape = shapes[name]!
                var columns = shape.dropFirst().reduce(1, *)
                var newShape = shape
                if let wide = placement.widened[name] {
                    values = LoRAMerge.widen(values, rows: shape[0], from: columns, to: wide)
                    columns = wide
                    newShape = [shape[0], wide]
                }
                try LoRAMerge.applyExactly(placement.slices[name]!, of: exact, placement: placement, scale: scale, to: &values, columns: columns)
                out[name] = Tensor(shape: newShape, scalars: values)
            }
            return out
        } catch {
            throw wrap(error, path: path)
        }
    }

    /// Reads the adapter, rejecting NaN/Inf factors. A kohya file whose underscored names the
    /// generic module list cannot resolve is read again against the model's own module names.
    static func read(_ path: String, model: Architecture) throws(TransformerError) -> LoRAAdapter {
        do {
            return try LoRAReader.load(path: path, architecture: nil, rejectNonFinite: true).adapter
        } catch LoRAError.unknownDialect(_, .kohya?, _, _) {
            do { return try LoRAReader.load(path: path, architecture: model, rejectNonFinite: true).adapter } catch {
                throw wrap(error, path: path)
            }
        } catch {
            throw wrap(error, path: path)
        }
    }

    /// Throws unless the adapter's family (from its names) and width (from its attention
    /// projections) are the model's.
    static func checkFits(_ adapter: LoRAAdapter, path: String, model: Architecture) throws(TransformerError) {
        let sample = adapter.modules.first.map { " (modules such as \"\($0.name)\")" } ?? ""
        if let family = adapter.family, family != model.family {
            throw .badAdapter(path: path, reason: "the adapter was made for \(family.displayName) transformers\(sample), "
                              + "but the model is \(model.name), \(Self.described(model.family))")
        }
        guard let inferred = try? adapter.inferredArchitecture().architecture else { return }
        let width = inferred.config.hiddenSize
        if inferred.family == model.family, width != model.config.hiddenSize {
            throw .badAdapter(path: path, reason: "the adapter was made for \(Self.described(inferred.family)) of width \(width)"
                              + "\(sample), but the model is \(model.name) of width \(model.config.hiddenSize)")
        }
    }

    /// "an SD3 transformer", "a FLUX transformer".
    static func described(_ family: ModelFamily) -> String {
        family.transformerPhrase
    }

    /// A thrown error as a `TransformerError` for the adapter at `path`.
    static func wrap(_ error: any Error, path: String) -> TransformerError {
        switch error {
        case let e as TransformerError: return e
        case let e as LoRAError: return .unreadableAdapter(path: path, error: e)
        case let e as SafeTensorsError: return .unreadable(e)
        default: return .badAdapter(path: path, reason: "\(error)")
        }
    }
}
