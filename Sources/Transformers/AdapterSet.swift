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
        let adapter = try Self.read(path, model: model)
        try Self.checkFits(adapter, path: path, model: model)
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

    /// This set plus `other`'s branches (several adapters at once).
    public func merging(_ other: AdapterSet) -> AdapterSet {
        var merged = self
        for (name, branches) in other.modules { merged.modules[name, default: []] += branches }
        return merged
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
