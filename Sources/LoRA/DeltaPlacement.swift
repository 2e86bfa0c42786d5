import Checkpoints
import SafeTensors

/// What a `DeltaSlice` takes its rows from.
public enum DeltaSource: Sendable, Hashable {
    /// A low-rank module: `LoRAAdapter.modules[module]`.
    case lowRank
    /// A LoKr/LoHa/full/replacement delta: `LoRAAdapter.deltas[module]`.
    case weightDelta
    /// A DoRA magnitude rescaling the rows after the deltas: `DeltaPlacement.magnitudeModules[module]`.
    case magnitude
}

/// One stretch of rows a base tensor receives from an adapter module: rows `sourceRows` of the
/// module's ΔW = scale·B·A (or of its scaled B bias, or of a LoKr/LoHa/full delta) are added to
/// rows `targetRows` of the tensor (or, for a DoRA magnitude, rescale them).
public struct DeltaSlice: Sendable, Hashable {
    /// What the rows come from.
    public var source: DeltaSource = .lowRank
    /// Index of the module in `LoRAAdapter.modules` (or `deltas`, or `DeltaPlacement.magnitudeModules`).
    public var module: Int
    /// The module's name (in the adapter's naming).
    public var moduleName: String
    /// Rows of the module's output (rows of B).
    public var sourceRows: Range<Int>
    /// The same rows in the base tensor.
    public var targetRows: Range<Int>
    /// True for a vector target (a bias, a norm scale), false for a weight matrix.
    public var isBias: Bool

    /// Creates a slice.
    public init(module: Int, moduleName: String, sourceRows: Range<Int>, targetRows: Range<Int>, isBias: Bool,
                source: DeltaSource = .lowRank) {
        self.source = source
        self.module = module
        self.moduleName = moduleName
        self.sourceRows = sourceRows
        self.targetRows = targetRows
        self.isBias = isBias
    }
}

/// Where every adapter module lands in a base checkpoint: for each base tensor name, the row
/// slices of ΔW (or of the B bias) it receives. Works across layouts: a diffusers-named `to_k`
/// lands in rows H..<2H of an original fused `qkv`, an original `qkv` splits into `to_q`/`to_k`/
/// `to_v`, FLUX `linear1` gathers `to_q`/`to_k`/`to_v`/`proj_mlp`, and modulation halves swap.
public struct DeltaPlacement: Sendable {
    /// Base tensor name → the slices it receives, in adapter-module order (low-rank modules, then
    /// other deltas, then DoRA magnitudes).
    public let slices: [String: [DeltaSlice]]
    /// Base weights widened with zero input columns before the delta is added (BFL Control's
    /// `img_in`): name → the new column count.
    public let widened: [String: Int]
    /// The modules carrying a DoRA magnitude, indexed by `DeltaSlice.module` of `.magnitude` slices.
    public let magnitudeModules: [String]

    /// Places `adapter` into a base checkpoint whose detection is `base` and whose tensor shapes
    /// are `shapes` (name → shape). Throws `LoRAError.moduleNotInArchitecture`, naming the module,
    /// when a module has no place in the base or its sizes differ from the base tensor's
    /// (an adapter for another architecture or width).
    public init(adapter: LoRAAdapter, base: DetectedCheckpoint, shapes: [String: [Int]]) throws {
        var slices: [String: [DeltaSlice]] = [:]
        var widened: [String: Int] = [:]
        let architecture = base.architecture
        let keyPrefix = base.layout == .original ? base.prefix.rawValue : ""
        for (index, module) in adapter.modules.enumerated() {
            let name = adapter.layout == .original
                ? String(module.name.dropFirst(KeyPrefix.of(module.name).rawValue.count)) : module.name
            func misfit(_ reason: String) -> LoRAError {
                .moduleNotInArchitecture(module: module.name, architecture: architecture.name, reason: reason)
            }
            guard module.up.columns == module.rank else {
                throw misfit("B has shape \(module.up.shape) but A has shape \(module.down.shape)")
            }
            if let bias = module.upBias, bias.values.count != module.outFeatures {
                throw misfit("its B bias has \(bias.values.count) values for \(module.outFeatures) output features")
            }
            var pieces: [Piece] = []
            if adapter.layout == base.layout {
                pieces = [Piece(module: name, source: 0..<module.outFeatures, target: 0..<module.outFeatures, count: module.outFeatures)]
            } else {
                let mapping: ModuleMapping
                do {
                    mapping = try architecture.mapModule(name, from: adapter.layout)
                } catch {
                    throw misfit("the model has no \(adapter.layout.rawValue)-layout module of that name")
                }
                guard mapping.sourceRowCount == module.outFeatures else {
                    throw misfit("it has \(module.outFeatures) output features, the model's module has \(mapping.sourceRowCount)")
                }
                pieces = mapping.pieces.map { Piece(module: $0.target, source: $0.sourceRows, target: $0.targetRows, count: $0.targetRowCount) }
            }
            for piece in pieces {
                let weight = keyPrefix + piece.module + ".weight"
                guard let shape = shapes[weight] else {
                    throw misfit("the base checkpoint has no tensor \"\(weight)\"")
                }
                let rows = shape.first ?? 1
                let columns = shape.dropFirst().reduce(1, *)
                guard shape.count >= 2, rows == piece.count, piece.target.upperBound <= rows else {
                    throw misfit("it has \(module.outFeatures) output features, \"\(weight)\" has shape \(shape)")
                }
                if columns < module.inFeatures, Self.widenable.contains(where: { piece.module == $0 }), adapter.format == .bflControl {
                    widened[weight] = module.inFeatures
                } else if columns != module.inFeatures {
                    throw misfit("it has \(module.inFeatures) input features, \"\(weight)\" has shape \(shape)")
                }
                slices[weight, default: []].append(DeltaSlice(module: index, moduleName: module.name,
                                                              sourceRows: piece.source, targetRows: piece.target, isBias: false))
                if module.upBias != nil {
                    let biasName = keyPrefix + piece.module + ".bias"
                    guard let biasShape = shapes[biasName], biasShape.reduce(1, *) == rows else {
                        throw misfit("it has a B bias but the base checkpoint has no [\(rows)] tensor \"\(biasName)\"")
                    }
                    slices[biasName, default: []].append(DeltaSlice(module: index, moduleName: module.name,
                                                                    sourceRows: piece.source, targetRows: piece.target, isBias: true))
                }
            }
        }
        for (index, delta) in adapter.deltas.enumerated() {
            try Self.place(delta, index: index, adapter: adapter, base: base, shapes: shapes, keyPrefix: keyPrefix, into: &slices)
        }
        var magnitudeModules: [String] = []
        for (name, magnitude) in adapter.magnitudes.sorted(by: { $0.key < $1.key }) {
            let weightSlices = slices.flatMap { (tensor, list) in list.filter { !$0.isBias && $0.moduleName == name && $0.source != .magnitude }.map { (tensor, $0) } }
            let out = adapter.module(name)?.outFeatures ?? adapter.deltas.first { $0.name == name && !$0.isVector }?.outFeatures ?? 0
            guard magnitude.values.count == out else {
                throw LoRAError.deltaMisfit(file: adapter.sourceFile, key: magnitude.key, byteOffset: adapter.keyOffsets[magnitude.key],
                                            reason: "the DoRA magnitude has \(magnitude.values.count) values but module \(name) has \(out) output rows")
            }
            let index = magnitudeModules.count
            magnitudeModules.append(name)
            for (tensor, s) in weightSlices {
                slices[tensor, default: []].append(DeltaSlice(module: index, moduleName: name, sourceRows: s.sourceRows,
                                                              targetRows: s.targetRows, isBias: false, source: .magnitude))
            }
        }
        self.slices = slices
        self.widened = widened
        self.magnitudeModules = magnitudeModules
    }

    /// Modules whose base weight a BFL Control LoRA may widen with zero input columns.
    static let widenable = ["img_in", "x_embedder"]

    /// Adds the slices of one non-low-rank delta. Every kind splits by rows exactly (ΔW is formed
    /// first and its rows placed), so a fused target takes any kind.
    static func place(_ delta: WeightDelta, index: Int, adapter: LoRAAdapter, base: DetectedCheckpoint, shapes: [String: [Int]],
                      keyPrefix: String, into slices: inout [String: [DeltaSlice]]) throws {
        let key = delta.keys.first ?? delta.name
        func misfit(_ reason: String) -> LoRAError {
            .deltaMisfit(file: adapter.sourceFile, key: key, byteOffset: adapter.keyOffsets[key], reason: reason)
        }
        let name = adapter.layout == .original ? String(delta.name.dropFirst(KeyPrefix.of(delta.name).rawValue.count)) : delta.name
        var pieces: [(module: String, source: Range<Int>, target: Range<Int>)] = []
        let rows = delta.outFeatures
        if adapter.layout == base.layout {
            pieces = [(name, 0..<rows, 0..<rows)]
        } else if let mapping = try? base.architecture.mapModule(name, from: adapter.layout) {
            guard mapping.sourceRowCount == rows || delta.target != .weight else {
                throw misfit("it has \(rows) output rows, the model's module \(name) has \(mapping.sourceRowCount)")
            }
            pieces = mapping.pieces.map { ($0.target, $0.sourceRows, $0.targetRows) }
        } else {
            // Not a linear module (a norm scale): the checkpoint conversion plan names the base
            // rows of the adapter-layout tensor.
            var resolved: [(tensor: String, source: Range<Int>, target: Range<Int>)] = []
            let plan = ConversionPlan(source: base, to: adapter.layout, prefix: adapter.layout == .original ? KeyPrefix.none : nil)
            let candidates: [String]
            switch delta.target {
            case .weight: candidates = [name + ".weight"]
            case .bias: candidates = [name + ".bias"]
            case .weightOrWhole: candidates = [name + ".weight", name]
            }
            if let planned = plan.outputs.first(where: { candidates.contains($0.name) }) {
                var offset = 0
                for p in planned.pieces {
                    resolved.append((p.source, offset..<(offset + p.rows.count), p.rows))
                    offset += p.rows.count
                }
            }
            guard !resolved.isEmpty else {
                throw misfit("\(base.architecture.name) has no \(adapter.layout.rawValue)-layout module or tensor \"\(name)\" to map into the base's \(base.layout.rawValue) layout")
            }
            for r in resolved {
                guard let shape = shapes[r.tensor], r.target.upperBound <= (shape.first ?? 1),
                      delta.isVector ? shape.count == 1 : shape.dropFirst().reduce(1, *) == delta.inFeatures else {
                    throw misfit("it does not fit \"\(r.tensor)\" of shape \(shapes[r.tensor] ?? [])")
                }
                slices[r.tensor, default: []].append(DeltaSlice(module: index, moduleName: delta.name, sourceRows: r.source,
                                                                targetRows: r.target, isBias: delta.isVector, source: .weightDelta))
            }
            return
        }
        for piece in pieces {
            var tensor: String
            switch delta.target {
            case .weight: tensor = keyPrefix + piece.module + ".weight"
            case .bias: tensor = keyPrefix + piece.module + ".bias"
            case .weightOrWhole:
                tensor = keyPrefix + piece.module + ".weight"
                if shapes[tensor] == nil { tensor = keyPrefix + piece.module }
            }
            guard let shape = shapes[tensor] else {
                throw misfit("the base checkpoint has no tensor \"\(tensor)\"")
            }
            let what: String
            switch delta.kind {
            case let .kronecker(w1, w2):
                what = "the Kronecker product of lokr_w1 [\(w1.size.rows), \(w1.size.columns)] and lokr_w2 [\(w2.size.rows), \(w2.size.columns)] is [\(delta.outFeatures), \(delta.inFeatures)]"
            case .hadamard: what = "the LoHa delta is [\(delta.outFeatures), \(delta.inFeatures)]"
            case .full(let m): what = "the full delta has shape \(m.shape)"
            case .replacement(let m): what = "the replacement has shape \(m.shape)"
            }
            if delta.isVector {
                let count = shape.reduce(1, *)
                guard piece.target.upperBound <= count, adapter.layout != base.layout || count == rows else {
                    throw misfit("\(what) but \"\(tensor)\" has shape \(shape)")
                }
            } else {
                let baseRows = shape.first ?? 1, columns = shape.dropFirst().reduce(1, *)
                let fits = shape.count >= 2 && columns == delta.inFeatures && piece.target.upperBound <= baseRows
                    && (adapter.layout != base.layout || baseRows == rows)
                guard fits else { throw misfit("\(what) but \"\(tensor)\" has shape \(shape)") }
            }
            slices[tensor, default: []].append(DeltaSlice(module: index, moduleName: delta.name, sourceRows: piece.source,
                                                          targetRows: piece.target, isBias: delta.isVector, source: .weightDelta))
        }
    }

    /// A base module receiving rows `source` of ΔW at its rows `target`; it has `count` rows.
    private struct Piece {
        var module: String
        var source: Range<Int>
        var target: Range<Int>
        var count: Int
    }

    /// Base tensors that receive something, sorted.
    public var touchedTensors: [String] { slices.keys.sorted() }
}
