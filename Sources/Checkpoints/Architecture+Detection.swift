import SafeTensors

/// What detection found out about a list of tensors: the architecture, which key layout the
/// names use, and the prefix in front of them.
public struct DetectedCheckpoint: Sendable, Hashable {
    /// The architecture, with its configuration derived from the shapes.
    public var architecture: Architecture
    /// The layout of the names.
    public var layout: KeyLayout
    /// The prefix in front of every key (`.none` for diffusers files and BFL FLUX files).
    public var prefix: KeyPrefix

    /// Creates a detection result.
    public init(architecture: Architecture, layout: KeyLayout, prefix: KeyPrefix) {
        self.architecture = architecture
        self.layout = layout
        self.prefix = prefix
    }
}

extension Architecture {
    /// Recognises the family, layout and key prefix of a transformer checkpoint from its tensor
    /// names (trying each of `families`' layout tables), derives the configuration from their
    /// shapes (the family's `deriveConfig`), and checks that the tensors are exactly those of that
    /// configuration with the expected shapes.
    ///
    /// Throws `CheckpointError.unrecognised` (no table knows any key), `.unknownArchitecture`
    /// (naming up to five unmapped and five missing keys), `.mixedLayouts`, `.shapeMismatch`,
    /// `.underivableConfig`, `.duplicateTensor` or `.noTensors`.
    public static func detect(_ tensors: [TensorShapeEntry],
                              families: [ModelFamily] = ModelFamily.builtIn) throws(CheckpointError) -> DetectedCheckpoint {
        let source = try SourceKeys(tensors)
        let recognised = try source.recognise(families: families)
        let config = try recognised.family.descriptor.deriveConfig(ShapeEvidence(source: source, recognised: recognised))
        let architecture = try Architecture(config: config)
        try architecture.check(source, layout: recognised.layout)
        return DetectedCheckpoint(architecture: architecture, layout: recognised.layout, prefix: source.prefix)
    }

    /// Detects the architecture of the tensors of a file header; see `detect(_:families:)`.
    public static func detect(_ infos: [TensorInfo],
                              families: [ModelFamily] = ModelFamily.builtIn) throws(CheckpointError) -> DetectedCheckpoint {
        try detect(infos.map(TensorShapeEntry.init), families: families)
    }

    /// Recognises only the layout and key prefix of `tensors`, for a checkpoint of this
    /// architecture, and checks that the tensors are exactly those of this architecture. Use it
    /// when the configuration comes from elsewhere (a `config.json`).
    public func recogniseLayout(of tensors: [TensorShapeEntry]) throws(CheckpointError) -> DetectedCheckpoint {
        let source = try SourceKeys(tensors)
        let recognised = try source.recognise(families: [family])
        try check(source, layout: recognised.layout)
        return DetectedCheckpoint(architecture: self, layout: recognised.layout, prefix: source.prefix)
    }

    /// Throws unless the tensors are exactly this architecture's tensors in `layout`, with the
    /// expected shapes.
    func check(_ source: SourceKeys, layout: KeyLayout) throws(CheckpointError) {
        let expected = table.parameterInstances(LayoutDimensions(config))
        var expectedShapes: [String: [Int]] = [:]
        var expectedOrder: [String] = []
        for instance in expected {
            for (name, shape) in zip(instance.names(in: layout), instance.shapes(in: layout)) {
                expectedShapes[name] = shape
                expectedOrder.append(name)
            }
        }
        let missing = expectedOrder.filter { source.bare[$0] == nil }.map { source.prefix.rawValue + $0 }
        let unexpected = source.order.filter { full in
            guard let bare = source.bareName(full) else { return true }
            return expectedShapes[bare] == nil
        }
        if !missing.isEmpty || !unexpected.isEmpty {
            throw .unknownArchitecture(
                family: family, layout: layout,
                unexpected: Array(unexpected.prefix(5)), unexpectedCount: unexpected.count,
                missing: Array(missing.prefix(5)), missingCount: missing.count)
        }
        for name in expectedOrder {
            let actual = source.bare[name]!.shape
            let wanted = expectedShapes[name]!
            if actual != wanted {
                throw .shapeMismatch(tensor: source.prefix.rawValue + name, expected: wanted,
                                                    actual: actual, architecture: self.name)
            }
        }
    }
}
