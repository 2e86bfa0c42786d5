/// The tensors of a checkpoint indexed by their key without prefix.
struct SourceKeys {
    /// Full keys in input order.
    var order: [String]
    /// Bare key → (full key, shape), for keys carrying `prefix`.
    var bare: [String: (full: String, shape: [Int])]
    /// The prefix most keys carry.
    var prefix: KeyPrefix

    init(_ tensors: [TensorShapeEntry]) throws(CheckpointError) {
        guard !tensors.isEmpty else { throw .noTensors }
        var seen = Set<String>()
        var sai = 0, comfy = 0
        for t in tensors {
            guard seen.insert(t.name).inserted else { throw .duplicateTensor(t.name) }
            switch KeyPrefix.of(t.name) {
            case .sai: sai += 1
            case .comfy: comfy += 1
            case .none: break
            }
        }
        prefix = sai == 0 && comfy == 0 ? .none : (sai >= comfy ? .sai : .comfy)
        order = tensors.map(\.name)
        bare = [:]
        for t in tensors where KeyPrefix.of(t.name) == prefix {
            bare[String(t.name.dropFirst(prefix.rawValue.count))] = (t.name, t.shape)
        }
    }

    /// The key without prefix, or nil when the key does not carry the checkpoint's prefix.
    func bareName(_ full: String) -> String? {
        guard KeyPrefix.of(full) == prefix else { return nil }
        return String(full.dropFirst(prefix.rawValue.count))
    }

    /// A family and layout with the keys their table recognises.
    struct Recognised {
        var family: ModelFamily
        var layout: KeyLayout
        var table: LayoutTable
        /// Bare key → every rule that can produce it.
        var matches: [String: [KeyMatch]]
    }

    /// Picks the family and layout whose table recognises the most keys; throws when none
    /// recognises any, or when keys only the original layout has and keys only the diffusers layout
    /// has are both present.
    func recognise(families: [ModelFamily]) throws(CheckpointError) -> Recognised {
        var best: Recognised?
        var byLayout: [KeyLayout: [String: [KeyMatch]]] = [:]
        for family in families {
            let table = family.table
            var layouts: [KeyLayout: [String: [KeyMatch]]] = [:]
            for layout in KeyLayout.allCases {
                var matches: [String: [KeyMatch]] = [:]
                for key in bare.keys {
                    let m = table.match(key, in: layout)
                    if !m.isEmpty { matches[key] = m }
                }
                layouts[layout] = matches
                if matches.count > (best?.matches.count ?? 0) {
                    best = Recognised(family: family, layout: layout, table: table, matches: matches)
                }
            }
            if best?.family == family { byLayout = layouts }
        }
        guard let best else {
            if families.count == 1 {
                throw .unknownArchitecture(family: families[0], layout: nil, unexpected: Array(order.prefix(5)),
                                           unexpectedCount: order.count, missing: [], missingCount: 0)
            }
            throw .unrecognised(families: families, unexpected: Array(order.prefix(5)), unexpectedCount: order.count)
        }
        let original = Set(byLayout[.original]?.keys.map { $0 } ?? [])
        let diffusers = Set(byLayout[.diffusers]?.keys.map { $0 } ?? [])
        let onlyOriginal = order.filter { bareName($0).map { original.contains($0) && !diffusers.contains($0) } ?? false }
        let onlyDiffusers = order.filter { bareName($0).map { diffusers.contains($0) && !original.contains($0) } ?? false }
        if !onlyOriginal.isEmpty && !onlyDiffusers.isEmpty {
            throw .mixedLayouts(original: Array(onlyOriginal.prefix(5)), diffusers: Array(onlyDiffusers.prefix(5)))
        }
        return best
    }
}

/// The tensors of a checkpoint as one family's layout table recognised them: what a family's
/// `deriveConfig` reads its sizes from. Anchors are named by their original-layout module and
/// parameter, whichever layout the checkpoint uses.
public struct ShapeEvidence {
    let source: SourceKeys
    let recognised: SourceKeys.Recognised

    /// The family whose table recognised the keys.
    public var family: ModelFamily { recognised.family }
    /// The layout of the keys.
    public var layout: KeyLayout { recognised.layout }

    /// The full key and shape of an anchor tensor (named by its original module pattern and
    /// parameter, `""` when the module is the key), which must have `rank` dimensions. Throws
    /// `.unknownArchitecture` naming the key when it is missing, `.underivableConfig` when its rank
    /// is wrong.
    public func anchor(_ module: String, _ parameter: String, rank: Int) throws(CheckpointError) -> (key: String, shape: [Int]) {
        let r = recognised
        let key = r.table.key(originalModule: module, parameter: parameter, layout: r.layout)!
        guard let entry = source.bare[key] else {
            throw .unknownArchitecture(family: r.family, layout: r.layout, unexpected: [], unexpectedCount: 0,
                                       missing: [source.prefix.rawValue + key], missingCount: 1)
        }
        guard entry.shape.count == rank else {
            throw .underivableConfig(tensor: entry.full, reason: "expected \(rank) dimensions, found shape \(shapeText(entry.shape))")
        }
        return (entry.full, entry.shape)
    }

    /// The blocks (nil for global rules) of the keys that only rules requiring `condition` can
    /// produce; empty when the checkpoint shows no sign of it.
    public func blocks(with condition: RuleCondition) -> [Int?] {
        let r = recognised
        var blocks: [Int?] = []
        for (_, ms) in r.matches where ms.allSatisfy({ r.table.rules[$0.ruleIndex].condition.contains(condition) }) {
            blocks.append(ms[0].block)
        }
        return blocks
    }

    /// Number of blocks of `scope`: one more than the largest index seen. Throws when that is more
    /// blocks than there are tensors (a stray huge index), naming the key, so that a hostile header
    /// cannot make the expected-tensor list enormous.
    public func blockCount(_ scope: BlockScope) throws(CheckpointError) -> Int {
        let r = recognised
        var top = -1
        var topKey = ""
        for (key, ms) in r.matches where r.table.rules[ms[0].ruleIndex].scope == scope {
            if let block = ms[0].block, block > top { (top, topKey) = (block, key) }
        }
        guard top < source.bare.count else {
            throw .unknownArchitecture(family: r.family, layout: r.layout, unexpected: [source.bare[topKey]!.full],
                                       unexpectedCount: 1, missing: [], missingCount: 0)
        }
        return top + 1
    }

    /// The head size: the length of the first (by rule, then block) tensor whose rule gives it the
    /// shape `[headDim]`, with its key; nil when there is none.
    public func headDim() throws(CheckpointError) -> (key: String, size: Int)? {
        let r = recognised
        var best: (rule: Int, block: Int, key: String)?
        for (key, ms) in r.matches {
            let m = ms[0]
            guard r.table.rules[m.ruleIndex].parameters[m.parameterIndex].shape == [.headDim] else { continue }
            let candidate = (m.ruleIndex, m.block ?? -1, key)
            if best == nil || (candidate.0, candidate.1) < (best!.rule, best!.block) { best = candidate }
        }
        guard let best else { return nil }
        let entry = source.bare[best.key]!
        guard entry.shape.count == 1 else {
            throw .underivableConfig(tensor: entry.full, reason: "a q/k norm weight must be 1-D, found shape \(shapeText(entry.shape))")
        }
        return (entry.full, entry.shape[0])
    }

    /// The error for a checkpoint without block 0 of a block-indexed rule: its key is missing.
    public func missingFirstBlock(_ module: String, _ parameter: String) -> CheckpointError {
        let r = recognised
        let key = r.table.key(originalModule: module, parameter: parameter, layout: r.layout, block: 0)!
        return .unknownArchitecture(family: r.family, layout: r.layout, unexpected: [], unexpectedCount: 0,
                                    missing: [source.prefix.rawValue + key], missingCount: 1)
    }

    /// Throws unless the measured head size divides the width.
    public func checkHeads(_ head: (key: String, size: Int), hidden: Int) throws(CheckpointError) {
        guard head.size > 0, hidden % head.size == 0 else {
            throw .underivableConfig(tensor: head.key, reason: "the width \(hidden) is not a whole number of \(head.size)-channel heads")
        }
    }
}
