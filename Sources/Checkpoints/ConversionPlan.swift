/// A run of rows along dim 0 of one source tensor (for a 1-D tensor, a run of elements). Rows of
/// a row-major tensor are contiguous, so a slice is one contiguous byte range of the source.
public struct RowSlice: Sendable, Hashable {
    /// Full key of the source tensor, prefix included.
    public var source: String
    /// Rows taken, along dim 0.
    public var rows: Range<Int>

    /// Creates a slice.
    public init(source: String, rows: Range<Int>) {
        self.source = source
        self.rows = rows
    }
}

/// One tensor of a conversion's output: its key, its shape and the source row slices whose
/// concatenation along dim 0, in order, is its data.
public struct PlannedTensor: Sendable, Hashable {
    /// Full output key, prefix included.
    public var name: String
    /// Output shape; dims after the first equal those of every source piece.
    public var shape: [Int]
    /// Source slices, concatenated in order.
    public var pieces: [RowSlice]

    /// Creates a planned tensor.
    public init(name: String, shape: [Int], pieces: [RowSlice]) {
        self.name = name
        self.shape = shape
        self.pieces = pieces
    }
}

/// How to turn a checkpoint in one layout into the same checkpoint in another, as names, shapes
/// and row slices only; a streaming executor performs it. Built from the family's `LayoutTable`, so
/// it works at any width and depth and in both directions; a same-layout plan is the identity
/// (useful for dtype conversion and re-sharding) apart from an optional change of key prefix.
public struct ConversionPlan: Sendable {
    /// Output tensors, in layout-table order.
    public var outputs: [PlannedTensor]
    /// The architecture converted.
    public var architecture: Architecture
    /// Layout of the source keys.
    public var sourceLayout: KeyLayout
    /// Prefix of the source keys.
    public var sourcePrefix: KeyPrefix
    /// Layout of the output keys.
    public var targetLayout: KeyLayout
    /// Prefix of the output keys (always `.none` for the diffusers layout).
    public var targetPrefix: KeyPrefix

    /// Detects the architecture, layout and prefix of `tensors` (checking that every tensor is
    /// accounted for, with the right shape) and plans the conversion to `target`.
    ///
    /// `prefix` chooses the output key prefix when `target` is `.original`; by default it is the
    /// source's own when the source is already original, else `model.diffusion_model.` for SD3 and
    /// none for FLUX (the family's `defaultOriginalPrefix`). It is ignored for `.diffusers`.
    /// `families` are the families detection tries.
    public init(tensors: [TensorShapeEntry], to target: KeyLayout, prefix: KeyPrefix? = nil,
                families: [ModelFamily] = ModelFamily.builtIn) throws(CheckpointError) {
        self.init(source: try Architecture.detect(tensors, families: families), to: target, prefix: prefix)
    }

    /// Plans the conversion of a checkpoint already recognised by `Architecture.detect(_:)` or
    /// `Architecture.recogniseLayout(of:)`; see `init(tensors:to:prefix:)` for `prefix`.
    public init(source: DetectedCheckpoint, to target: KeyLayout, prefix: KeyPrefix? = nil) {
        let architecture = source.architecture
        self.architecture = architecture
        sourceLayout = source.layout
        sourcePrefix = source.prefix
        targetLayout = target
        switch target {
        case .diffusers: targetPrefix = .none
        case .original:
            targetPrefix = prefix ?? (source.layout == .original ? source.prefix
                                                                   : .defaultOriginal(for: architecture.family))
        }
        let from = sourceLayout, sp = sourcePrefix.rawValue, tp = targetPrefix.rawValue
        var outputs: [PlannedTensor] = []
        for p in architecture.table.parameterInstances(LayoutDimensions(architecture.config)) {
            let sources = p.names(in: from).map { sp + $0 }
            let names = p.names(in: target).map { tp + $0 }
            let shapes = p.shapes(in: target)
            switch (from, target) {
            case (.original, .original), (.diffusers, .diffusers):
                for k in names.indices {
                    outputs.append(PlannedTensor(name: names[k], shape: shapes[k],
                                                 pieces: [RowSlice(source: sources[k], rows: 0..<(shapes[k].first ?? 1))]))
                }
            case (.original, .diffusers):
                for k in names.indices {
                    let pieces = p.segments.filter { $0.part == k }
                        .sorted { $0.diffusersRows.lowerBound < $1.diffusersRows.lowerBound }
                        .map { RowSlice(source: sources[0], rows: $0.originalRows) }
                    outputs.append(PlannedTensor(name: names[k], shape: shapes[k], pieces: pieces))
                }
            case (.diffusers, .original):
                let pieces = p.segments.sorted { $0.originalRows.lowerBound < $1.originalRows.lowerBound }
                    .map { RowSlice(source: sources[$0.part], rows: $0.diffusersRows) }
                outputs.append(PlannedTensor(name: names[0], shape: shapes[0], pieces: pieces))
            }
        }
        self.outputs = outputs
    }

    /// True when every output is a whole source tensor under the same key.
    public var isIdentity: Bool {
        outputs.allSatisfy { o in
            o.pieces.count == 1 && o.pieces[0].source == o.name && o.pieces[0].rows == 0..<(o.shape.first ?? 1)
        }
    }

    /// Every source key the plan reads, each once, in first-use order.
    public var sourceNames: [String] {
        var seen = Set<String>()
        return outputs.flatMap { $0.pieces.map(\.source) }.filter { seen.insert($0).inserted }
    }
}
