import Checkpoints
import SafeTensors

/// One stretch of rows a base tensor receives from an adapter module: rows `sourceRows` of the
/// module's ΔW = scale·B·A (or of its scaled B bias) are added to rows `targetRows` of the tensor.
public struct DeltaSlice: Sendable, Hashable {
    /// Index of the module in `LoRAAdapter.modules`.
    public var module: Int
    /// The module's name (in the adapter's naming).
    public var moduleName: String
    /// Rows of the module's output (rows of B).
    public var sourceRows: Range<Int>
    /// The same rows in the base tensor.
    public var targetRows: Range<Int>
    /// True for the bias (`upBias` added to a `.bias` tensor), false for the weight.
    public var isBias: Bool

    /// Creates a slice.
    public init(module: Int, moduleName: String, sourceRows: Range<Int>, targetRows: Range<Int>, isBias: Bool) {
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
    /// Base tensor name → the slices it receives, in adapter-module order.
    public let slices: [String: [DeltaSlice]]

    /// Places `adapter` into a base checkpoint whose detection is `base` and whose tensor shapes
    /// are `shapes` (name → shape). Throws `LoRAError.moduleNotInArchitecture`, naming the module,
    /// when a module has no place in the base or its sizes differ from the base tensor's
    /// (an adapter for another architecture or width).
    public init(adapter: LoRAAdapter, base: DetectedCheckpoint, shapes: [String: [Int]]) throws {
        var slices: [String: [DeltaSlice]] = [:]
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
                guard columns == module.inFeatures else {
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
        self.slices = slices
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
