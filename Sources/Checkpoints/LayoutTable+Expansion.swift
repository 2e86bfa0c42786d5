/// The numbers a layout table is evaluated with: sizes, block counts and the flags rule conditions
/// test. Each family's configuration computes its own (`FamilyConfiguration.layoutDimensions`).
public struct LayoutDimensions: Sendable, Hashable {
    /// Width of the token streams (`Quantity.hidden`).
    public var hidden: Int
    /// Channels per attention head, 0 when unknown (`.headDim`).
    public var headDim: Int
    /// Width of the text-encoder token embeddings (`.jointAttentionDim`).
    public var jointAttentionDim: Int
    /// Width of the pooled text embedding (`.pooledProjectionDim`).
    public var pooledProjectionDim: Int
    /// Latent channels in (`.inChannels`).
    public var inChannels: Int
    /// Side of a patch (`.patchSize`).
    public var patchSize: Int
    /// Output features of the final projection (`.outputFeatures`).
    public var outputFeatures: Int
    /// Rows of a position table (`.posEmbedLength`), 0 when there is none.
    public var posEmbedLength: Int
    /// Number of blocks `BlockScope.joint` runs over.
    public var jointBlocks: Int
    /// Number of blocks `BlockScope.single` runs over.
    public var singleBlocks: Int
    /// Joint blocks for which `RuleCondition.dualAttention` holds.
    public var dualAttention: Set<Int>
    /// Whether `RuleCondition.qkNorm` holds.
    public var qkNorm: Bool
    /// Whether `RuleCondition.guidance` holds.
    public var guidance: Bool

    /// Creates the numbers; conditions default to off and block scopes to empty.
    public init(hidden: Int, headDim: Int = 0, jointAttentionDim: Int = 0, pooledProjectionDim: Int = 0,
                inChannels: Int = 0, patchSize: Int = 1, outputFeatures: Int = 0, posEmbedLength: Int = 0,
                jointBlocks: Int = 0, singleBlocks: Int = 0, dualAttention: Set<Int> = [], qkNorm: Bool = false,
                guidance: Bool = false) {
        self.hidden = hidden
        self.headDim = headDim
        self.jointAttentionDim = jointAttentionDim
        self.pooledProjectionDim = pooledProjectionDim
        self.inChannels = inChannels
        self.patchSize = patchSize
        self.outputFeatures = outputFeatures
        self.posEmbedLength = posEmbedLength
        self.jointBlocks = jointBlocks
        self.singleBlocks = singleBlocks
        self.dualAttention = dualAttention
        self.qkNorm = qkNorm
        self.guidance = guidance
    }

    /// The numbers of a configuration.
    init(_ config: ModelConfig) {
        self = config.base.layoutDimensions
    }

    func value(_ e: Extent) -> Int {
        let q: Int
        switch e.quantity {
        case .unit: q = 1
        case .hidden: q = hidden
        case .headDim: q = headDim
        case .jointAttentionDim: q = jointAttentionDim
        case .pooledProjectionDim: q = pooledProjectionDim
        case .inChannels: q = inChannels
        case .patchSize: q = patchSize
        case .outputFeatures: q = outputFeatures
        case .posEmbedLength: q = posEmbedLength
        }
        return e.factor * q
    }

    func blockIndices(_ scope: BlockScope) -> [Int?] {
        switch scope {
        case .global: return [nil]
        case .joint: return (0..<jointBlocks).map { $0 }
        case .single: return (0..<singleBlocks).map { $0 }
        }
    }

    func holds(_ c: RuleCondition, block: Int?) -> Bool {
        if c.contains(.qkNorm) && !qkNorm { return false }
        if c.contains(.guidance) && !guidance { return false }
        let isLast = block.map { $0 == jointBlocks - 1 } ?? false
        if c.contains(.lastBlock) && !isLast { return false }
        if c.contains(.notLastBlock) && isLast { return false }
        let isDual = block.map { dualAttention.contains($0) } ?? false
        if c.contains(.dualAttention) && !isDual { return false }
        if c.contains(.singleAttention) && isDual { return false }
        return true
    }
}

/// How one stretch of rows moves: rows `diffusersRows` of diffusers part `part` are rows
/// `originalRows` of the original tensor.
struct RowSegment: Sendable, Hashable {
    var part: Int
    var diffusersRows: Range<Int>
    var originalRows: Range<Int>
}

/// A rule instantiated for one block: module names in both layouts and the row segments that
/// relate them, computed for a given number of rows.
struct ModuleInstance: Sendable, Hashable {
    var ruleIndex: Int
    var block: Int?
    var originalModule: String
    var diffusersModules: [String]
    /// Rows of the original module's (first) parameter.
    var originalRows: Int
    var segments: [RowSegment]

    /// Rows of diffusers part `k`.
    func diffusersRows(_ k: Int) -> Int {
        segments.filter { $0.part == k }.map(\.diffusersRows.count).reduce(0, +)
    }
}

/// A parameter instantiated for one block: the tensor key and shape in both layouts and the
/// row segments between them.
struct ParameterInstance: Sendable, Hashable {
    var ruleIndex: Int
    var block: Int?
    var originalName: String
    var originalShape: [Int]
    var diffusersNames: [String]
    var diffusersShapes: [[Int]]
    var segments: [RowSegment]

    func names(in layout: KeyLayout) -> [String] {
        layout == .original ? [originalName] : diffusersNames
    }

    func shapes(in layout: KeyLayout) -> [[Int]] {
        layout == .original ? [originalShape] : diffusersShapes
    }
}

/// Replaces `{i}` with the block index.
func instantiate(_ pattern: String, _ block: Int?) -> String {
    guard let block else { return pattern }
    return pattern.replacing("{i}", with: String(block))
}

/// A module path joined with a parameter name (an empty parameter name means the path itself).
func join(_ module: String, _ parameter: String) -> String {
    parameter.isEmpty ? module : module + "." + parameter
}

extension LayoutTable {
    /// Row segments relating `rows` original rows to the diffusers part(s) under `transform`.
    static func segments(_ transform: RowTransform, rows: Int, dims: LayoutDimensions) -> [RowSegment] {
        switch transform {
        case .identity:
            return [RowSegment(part: 0, diffusersRows: 0..<rows, originalRows: 0..<rows)]
        case .split(let parts):
            var offset = 0
            var out: [RowSegment] = []
            for (k, extent) in parts.enumerated() {
                let n = dims.value(extent)
                out.append(RowSegment(part: k, diffusersRows: 0..<n, originalRows: offset..<offset + n))
                offset += n
            }
            return out
        case .swapHalves:
            let h = rows / 2
            return [RowSegment(part: 0, diffusersRows: 0..<h, originalRows: h..<2 * h),
                    RowSegment(part: 0, diffusersRows: h..<2 * h, originalRows: 0..<h)]
        }
    }

    /// Every module that exists for `dims`, in table order, blocks ascending within a rule.
    func moduleInstances(_ dims: LayoutDimensions) -> [ModuleInstance] {
        var out: [ModuleInstance] = []
        for (r, rule) in rules.enumerated() {
            for block in dims.blockIndices(rule.scope) where dims.holds(rule.condition, block: block) {
                out.append(moduleInstance(ruleIndex: r, block: block, dims: dims))
            }
        }
        return out
    }

    func moduleInstance(ruleIndex r: Int, block: Int?, dims: LayoutDimensions) -> ModuleInstance {
        let rule = rules[r]
        let rows = rule.parameters.first.map { dims.value($0.shape.first ?? .fixed(1)) } ?? 0
        return ModuleInstance(ruleIndex: r, block: block,
                              originalModule: instantiate(rule.original, block),
                              diffusersModules: rule.diffusers.map { instantiate($0, block) },
                              originalRows: rows,
                              segments: LayoutTable.segments(rule.transform, rows: rows, dims: dims))
    }

    /// Every tensor that exists for `dims`, in table order (rule, then block, then parameter).
    func parameterInstances(_ dims: LayoutDimensions) -> [ParameterInstance] {
        var out: [ParameterInstance] = []
        for (r, rule) in rules.enumerated() {
            for block in dims.blockIndices(rule.scope) where dims.holds(rule.condition, block: block) {
                let original = instantiate(rule.original, block)
                let diffusers = rule.diffusers.map { instantiate($0, block) }
                for p in rule.parameters {
                    let shape = p.shape.map(dims.value)
                    let rows = shape.first ?? 1
                    let segments = LayoutTable.segments(rule.transform, rows: rows, dims: dims)
                    let tail = Array(shape.dropFirst())
                    let dShapes: [[Int]] = diffusers.indices.map { k in
                        shape.isEmpty ? [] : [segments.filter { $0.part == k }.map(\.diffusersRows.count).reduce(0, +)] + tail
                    }
                    out.append(ParameterInstance(
                        ruleIndex: r, block: block,
                        originalName: join(original, p.original), originalShape: shape,
                        diffusersNames: diffusers.map { join($0, p.diffusers) }, diffusersShapes: dShapes,
                        segments: segments))
                }
            }
        }
        return out
    }
}
