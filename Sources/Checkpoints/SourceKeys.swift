/// The tensors of a checkpoint indexed by their key without prefix.
struct SourceKeys {
    /// Full keys in input order.
    var order: [String]
    /// Bare key → (full key, shape), for keys carrying `prefix`.
    var bare: [String: (full: String, shape: [Int])]
    /// The prefix most keys carry.
    var prefix: KeyPrefix

    init(_ tensors: [TensorShapeEntry]) throws {
        guard !tensors.isEmpty else { throw CheckpointError.noTensors }
        var seen = Set<String>()
        var sai = 0, comfy = 0
        for t in tensors {
            guard seen.insert(t.name).inserted else { throw CheckpointError.duplicateTensor(t.name) }
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
    func recognise(families: [ModelFamily]) throws -> Recognised {
        var best: Recognised?
        var byLayout: [KeyLayout: [String: [KeyMatch]]] = [:]
        for family in families {
            let table = LayoutTable.of(family)
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
            throw CheckpointError.unknownArchitecture(family: families.count == 1 ? families[0] : nil, layout: nil,
                                                      unexpected: Array(order.prefix(5)), unexpectedCount: order.count,
                                                      missing: [], missingCount: 0)
        }
        let original = Set(byLayout[.original]?.keys.map { $0 } ?? [])
        let diffusers = Set(byLayout[.diffusers]?.keys.map { $0 } ?? [])
        let onlyOriginal = order.filter { bareName($0).map { original.contains($0) && !diffusers.contains($0) } ?? false }
        let onlyDiffusers = order.filter { bareName($0).map { diffusers.contains($0) && !original.contains($0) } ?? false }
        if !onlyOriginal.isEmpty && !onlyDiffusers.isEmpty {
            throw CheckpointError.mixedLayouts(original: Array(onlyOriginal.prefix(5)),
                                               diffusers: Array(onlyDiffusers.prefix(5)))
        }
        return best
    }

    /// The shape of an anchor tensor (named by its original module and parameter), which must
    /// have `rank` dimensions.
    func anchor(_ r: Recognised, _ module: String, _ parameter: String, rank: Int) throws -> (key: String, shape: [Int]) {
        let key = r.table.key(originalModule: module, parameter: parameter, layout: r.layout)!
        guard let entry = bare[key] else {
            throw CheckpointError.unknownArchitecture(family: r.family, layout: r.layout, unexpected: [], unexpectedCount: 0,
                                                      missing: [prefix.rawValue + key], missingCount: 1)
        }
        guard entry.shape.count == rank else {
            throw CheckpointError.underivableConfig(tensor: entry.full,
                                                    reason: "expected \(rank) dimensions, found shape \(shapeText(entry.shape))")
        }
        return (entry.full, entry.shape)
    }

    /// Whether some key can only come from rules that require `condition` (and, with `block`,
    /// belongs to that block).
    func evidence(_ r: Recognised, _ condition: RuleCondition) -> [Int?] {
        var blocks: [Int?] = []
        for (_, ms) in r.matches where ms.allSatisfy({ r.table.rules[$0.ruleIndex].condition.contains(condition) }) {
            blocks.append(ms[0].block)
        }
        return blocks
    }

    /// Number of blocks of `scope`: one more than the largest index seen. Throws when that is more
    /// blocks than there are tensors (a stray huge index), naming the key, so that a hostile header
    /// cannot make the expected-tensor list enormous.
    func blockCount(_ r: Recognised, _ scope: BlockScope) throws -> Int {
        var top = -1
        var topKey = ""
        for (key, ms) in r.matches where r.table.rules[ms[0].ruleIndex].scope == scope {
            if let block = ms[0].block, block > top { (top, topKey) = (block, key) }
        }
        guard top < bare.count else {
            throw CheckpointError.unknownArchitecture(family: r.family, layout: r.layout, unexpected: [bare[topKey]!.full],
                                                      unexpectedCount: 1, missing: [], missingCount: 0)
        }
        return top + 1
    }

    /// The head size: the length of the first (by rule, then block) tensor whose rule gives it the
    /// shape `[headDim]`; nil when there is none.
    func headDim(_ r: Recognised) throws -> (key: String, size: Int)? {
        var best: (rule: Int, block: Int, key: String)?
        for (key, ms) in r.matches {
            let m = ms[0]
            guard r.table.rules[m.ruleIndex].parameters[m.parameterIndex].shape == [.headDim] else { continue }
            let candidate = (m.ruleIndex, m.block ?? -1, key)
            if best == nil || (candidate.0, candidate.1) < (best!.rule, best!.block) { best = candidate }
        }
        guard let best else { return nil }
        let entry = bare[best.key]!
        guard entry.shape.count == 1 else {
            throw CheckpointError.underivableConfig(tensor: entry.full,
                                                    reason: "a q/k norm weight must be 1-D, found shape \(shapeText(entry.shape))")
        }
        return (entry.full, entry.shape[0])
    }

    /// Throws when the first block of `scope` is absent altogether.
    func requireBlocks(_ r: Recognised, _ module: String, _ parameter: String) throws -> Never {
        let key = r.table.key(originalModule: module, parameter: parameter, layout: r.layout, block: 0)!
        throw CheckpointError.unknownArchitecture(family: r.family, layout: r.layout, unexpected: [], unexpectedCount: 0,
                                                  missing: [prefix.rawValue + key], missingCount: 1)
    }

    /// Throws unless the measured head size divides the width.
    func checkHeads(_ head: (key: String, size: Int), hidden: Int) throws {
        guard head.size > 0, hidden % head.size == 0 else {
            throw CheckpointError.underivableConfig(
                tensor: head.key, reason: "the width \(hidden) is not a whole number of \(head.size)-channel heads")
        }
    }

    /// The configuration the shapes describe.
    func deriveConfig(_ r: Recognised) throws -> ModelConfig {
        switch r.family {
        case .sd3:
            let x = try anchor(r, "x_embedder.proj", "weight", rank: 4)
            let (hidden, inChannels, patch) = (x.shape[0], x.shape[1], x.shape[2])
            guard x.shape[3] == patch, patch > 0 else {
                throw CheckpointError.underivableConfig(tensor: x.key, reason: "the patch \(x.shape[2])×\(x.shape[3]) is not square")
            }
            let context = try anchor(r, "context_embedder", "weight", rank: 2)
            let pooled = try anchor(r, "y_embedder.mlp.0", "weight", rank: 2)
            let final = try anchor(r, "final_layer.linear", "weight", rank: 2)
            guard final.shape[0] % (patch * patch) == 0 else {
                throw CheckpointError.underivableConfig(
                    tensor: final.key, reason: "\(final.shape[0]) outputs are not a whole number of \(patch)×\(patch) patches")
            }
            let pos = try anchor(r, "pos_embed", "", rank: 3)
            let side = Int(Double(pos.shape[1]).squareRoot().rounded())
            guard side * side == pos.shape[1] else {
                throw CheckpointError.underivableConfig(tensor: pos.key,
                                                        reason: "the table length \(pos.shape[1]) is not a perfect square")
            }
            let layers = try blockCount(r, .joint)
            if layers == 0 { try requireBlocks(r, "joint_blocks.{i}.x_block.attn.qkv", "weight") }
            let measured = evidence(r, .qkNorm).isEmpty ? nil : try headDim(r)
            var head = measured?.size
            if let measured { try checkHeads(measured, hidden: hidden) } else { head = hidden % 64 == 0 ? 64 : nil }
            let dual = Set(evidence(r, .dualAttention).compactMap { $0 }).sorted()
            return .sd3(SD3Config(hiddenSize: hidden, numLayers: layers, attentionHeadDim: head,
                                  attentionHeadDimIsAssumed: measured == nil && head != nil, dualAttentionLayers: dual,
                                  qkNorm: measured != nil, patchSize: patch, inChannels: inChannels,
                                  outChannels: final.shape[0] / (patch * patch), jointAttentionDim: context.shape[1],
                                  pooledProjectionDim: pooled.shape[1], posEmbedMaxSize: side))
        case .flux:
            let img = try anchor(r, "img_in", "weight", rank: 2)
            let txt = try anchor(r, "txt_in", "weight", rank: 2)
            let vec = try anchor(r, "vector_in.in_layer", "weight", rank: 2)
            let final = try anchor(r, "final_layer.linear", "weight", rank: 2)
            let (double, single) = (try blockCount(r, .joint), try blockCount(r, .single))
            if double + single == 0 { try requireBlocks(r, "double_blocks.{i}.img_attn.qkv", "weight") }
            guard let head = try headDim(r) else {
                try requireBlocks(r, double > 0 ? "double_blocks.{i}.img_attn.norm.query_norm" : "single_blocks.{i}.norm.query_norm",
                                  "scale")
            }
            try checkHeads(head, hidden: img.shape[0])
            return .flux(FluxConfig(hiddenSize: img.shape[0], numLayers: double,
                                    numSingleLayers: single, attentionHeadDim: head.size,
                                    guidanceEmbeds: !evidence(r, .guidance).isEmpty, inChannels: img.shape[1],
                                    outChannels: final.shape[0], jointAttentionDim: txt.shape[1],
                                    pooledProjectionDim: vec.shape[1]))
        }
    }
}
