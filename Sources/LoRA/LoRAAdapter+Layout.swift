import BLAS
import Checkpoints
import JSON
import SafeTensors

extension LoRAAdapter {
    /// Throws `LoRAError.moduleNotInArchitecture` unless every module exists in `architecture`
    /// (in the adapter's layout) with the same output rows and input features.
    public func validate(against architecture: Architecture) throws {
        let shapes = Self.weightShapes(architecture, layout: layout)
        for m in modules {
            let mapping: ModuleMapping
            do { mapping = try architecture.mapModule(m.name, from: layout) } catch {
                throw LoRAError.moduleNotInArchitecture(module: m.name, architecture: architecture.name,
                                                        reason: "it has no such module in the \(layout.rawValue) layout")
            }
            guard let shape = shapes[m.name], shape.count >= 2 else {
                throw LoRAError.moduleNotInArchitecture(module: m.name, architecture: architecture.name, reason: "it is not a linear layer")
            }
            let inFeatures = shape.dropFirst().reduce(1, *)
            if m.outFeatures != mapping.sourceRowCount || m.inFeatures != inFeatures {
                throw LoRAError.moduleNotInArchitecture(
                    module: m.name, architecture: architecture.name,
                    reason: "the adapter is [\(m.outFeatures) out × \(m.inFeatures) in] but the model's weight is \(shape)")
            }
        }
    }

    /// module → weight shape of the architecture in `layout`.
    static func weightShapes(_ architecture: Architecture, layout: KeyLayout) -> [String: [Int]] {
        var out: [String: [Int]] = [:]
        for t in architecture.expectedTensors(layout: layout, prefix: KeyPrefix.none) where t.name.hasSuffix(".weight") {
            out[String(t.name.dropLast(".weight".count))] = t.shape
        }
        return out
    }

    /// The same adapter in `target` naming, with ΔW of every base weight unchanged (exactly, up to
    /// float rounding of folded scales).
    ///
    /// Fused → split: each part gets A unchanged and its rows of B (same α, r). Split → fused: the
    /// A's are stacked (rank Σr) and B is block-diagonal; each part's scale is folded into its block
    /// and α becomes the new rank (or √rank·… under rsLoRA, i.e. scale 1). Rows of a fused target that
    /// no module covers stay zero. Half-swapped modulation targets swap B's rows (and its bias), never A.
    public func converted(to target: KeyLayout, architecture: Architecture) throws -> LoRAAdapter {
        try validate(against: architecture)
        if target == layout {
            var same = self
            same.family = architecture.family
            return same
        }
        struct Contribution { var source: Int; var sourceRows: Range<Int>; var targetRows: Range<Int>; var targetRowCount: Int }
        var order: [String] = []
        var contributions: [String: [Contribution]] = [:]
        for (i, m) in modules.enumerated() {
            let mapping = try architecture.mapModule(m.name, from: layout)
            for p in mapping.pieces {
                if contributions[p.target] == nil { order.append(p.target) }
                contributions[p.target, default: []].append(Contribution(source: i, sourceRows: p.sourceRows, targetRows: p.targetRows, targetRowCount: p.targetRowCount))
            }
        }
        var out: [LoRAModule] = []
        for name in order {
            let parts = contributions[name]!
            var sources: [Int] = []
            for p in parts where !sources.contains(p.source) { sources.append(p.source) }
            let rows = parts[0].targetRowCount
            let totalRank = sources.reduce(0) { $0 + modules[$1].rank }
            let inFeatures = modules[sources[0]].inFeatures
            let downShapeTail = Array(modules[sources[0]].down.shape.dropFirst())
            var down: [Float] = []
            down.reserveCapacity(totalRank * inFeatures)
            for s in sources { down += modules[s].down.values }
            let hasBias = sources.contains { modules[$0].upBias != nil }
            var up = [Float](repeating: 0, count: rows * totalRank)
            var bias = [Float](repeating: 0, count: rows)
            let fold = sources.count > 1
            let newScale: Float = rsLoRA ? Float(totalRank).squareRoot() : 1
            var column = 0
            for s in sources {
                let m = modules[s]
                let factor: Float = fold ? m.scale(rsLoRA: rsLoRA) / newScale : 1
                for p in parts where p.source == s {
                    for (sr, tr) in zip(p.sourceRows, p.targetRows) {
                        for c in 0..<m.rank { up[tr * totalRank + column + c] = m.up.values[sr * m.rank + c] * factor }
                        if let b = m.upBias { bias[tr] = b.values[sr] * factor }
                    }
                }
                column += m.rank
            }
            let alpha: Float? = fold ? nil : modules[sources[0]].alpha
            out.append(LoRAModule(name: name, down: Matrix(shape: [totalRank] + downShapeTail, values: down),
                                  up: Matrix(shape: [rows, totalRank], values: up), alpha: alpha,
                                  upBias: hasBias ? Matrix(shape: [rows], values: bias) : nil))
        }
        return LoRAAdapter(modules: out, layout: target, rsLoRA: rsLoRA, format: format, family: architecture.family,
                           extraMetadata: extraMetadata)
    }

    /// The modules `converted(to:architecture:)` fuses from several split LoRAs (their B is
    /// block-diagonal, one block per part), each with its parts and their ranks, in module order.
    public func fusedModules(to target: KeyLayout, architecture: Architecture) throws -> [FusedModule] {
        guard target != layout else { return [] }
        var order: [String] = []
        var parts: [String: [Int]] = [:]
        for (i, m) in modules.enumerated() {
            for p in try architecture.mapModule(m.name, from: layout).pieces {
                if parts[p.target] == nil { order.append(p.target) }
                if parts[p.target]?.contains(i) != true { parts[p.target, default: []].append(i) }
            }
        }
        return order.compactMap { name in
            let sources = parts[name]!
            guard sources.count > 1 else { return nil }
            return FusedModule(name: name, parts: sources.map { modules[$0].name }, ranks: sources.map { modules[$0].rank })
        }
    }

    /// ΔW of every adapted base weight, keyed by the ORIGINAL-layout module name (no prefix), each
    /// [out, in]: what merging the adapter adds to the base model. Computed from the module mappings
    /// directly (not through `converted`), so it can check conversions.
    public func deltaWeights(architecture: Architecture) throws -> [String: Matrix] {
        try validate(against: architecture)
        var out: [String: Matrix] = [:]
        for m in modules {
            let d = m.delta(rsLoRA: rsLoRA)
            let bias = m.upBias.map { b in b.values.map { $0 * m.scale(rsLoRA: rsLoRA) } }
            if layout == .original {
                add(d, bias, rows: Array(0..<m.outFeatures), into: m.name, rowCount: m.outFeatures, &out)
                continue
            }
            let mapping = try architecture.mapModule(m.name, from: layout)
            for p in mapping.pieces {
                add(d.rows(p.sourceRows), bias.map { Array($0[p.sourceRows]) }, rows: Array(p.targetRows), into: p.target, rowCount: p.targetRowCount, &out)
            }
        }
        return out
    }

    private func add(_ d: Matrix, _ bias: [Float]?, rows: [Int], into name: String, rowCount: Int, _ out: inout [String: Matrix]) {
        let cols = d.columns
        var w = out[name] ?? Matrix(shape: [rowCount, cols], values: [Float](repeating: 0, count: rowCount * cols))
        for (i, r) in rows.enumerated() {
            for c in 0..<cols { w.values[r * cols + c] += d.values[i * cols + c] }
        }
        out[name] = w
        if let bias {
            var b = out[name + ".bias"] ?? Matrix(shape: [rowCount], values: [Float](repeating: 0, count: rowCount))
            for (i, r) in rows.enumerated() { b.values[r] += bias[i] }
            out[name + ".bias"] = b
        }
    }

    /// NaN and ±Inf counts of every factor holding any, as (module, "down"/"up"/"bias", nan, inf).
    public func nonFiniteFactors() -> [(module: String, factor: String, nan: Int, inf: Int)] {
        var out: [(String, String, Int, Int)] = []
        for m in modules {
            for (label, matrix) in [("down", m.down), ("up", m.up)] + (m.upBias.map { [("bias", $0)] } ?? []) {
                let nan = matrix.values.filter(\.isNaN).count
                let inf = matrix.values.filter(\.isInfinite).count
                if nan + inf > 0 { out.append((m.name, label, nan, inf)) }
            }
        }
        return out
    }

    /// A best guess at the base architecture from the adapter's own names and shapes: the family
    /// from the names, the width from the input features of an attention projection, the depth as
    /// the highest block index + 1 (+1 more for SD3 when the highest adapted block has a full
    /// context stream, since the last SD3 block's is pre-only). Returns the notes that say so.
    public func inferredArchitecture() throws -> (architecture: Architecture, notes: [String]) {
        guard let fam = family ?? familyFromModuleNames(modules.map(\.name)) else {
            throw LoRAError.unknownArchitecture(reason: "the module names fit both SD3 and FLUX; give --base or --config")
        }
        func indices(_ heads: [String]) throws -> [Int] {
            let found = modules.compactMap { m -> Int? in
                for h in heads where m.name.hasPrefix(h) { return Int(m.name.dropFirst(h.count).prefix { $0.isNumber }) }
                return nil
            }
            if let big = found.first(where: { $0 >= maximumInferredBlocks }) {
                throw LoRAError.unknownArchitecture(reason: "block index \(big) is beyond any model (at most \(maximumInferredBlocks) blocks are inferred); give --base or --config")
            }
            return found
        }
        let attn = layout == .original ? ["attn.qkv", "img_attn.qkv", "txt_attn.qkv", "linear1", "attn.proj", "img_attn.proj"]
                                       : ["attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0"]
        guard let hidden = modules.first(where: { m in attn.contains { m.name.hasSuffix($0) } })?.inFeatures else {
            throw LoRAError.unknownArchitecture(reason: "the adapter adapts no attention projection to read the width from; give --base or --config")
        }
        var notes = ["architecture inferred from the adapter: width \(hidden)"]
        var blocks: [BlockScope: [Int]] = [:]
        for (scope, heads) in fam.table.blockPrefixes(in: layout) { blocks[scope] = try indices(heads) }
        let (config, familyNotes) = fam.descriptor.adapterConfig(width: hidden, blocks: blocks,
                                                                 moduleNames: modules.map(\.name), layout: layout)
        notes += familyNotes
        return (try Architecture(config: config), notes)
    }
}

/// The most blocks an architecture is inferred with from an adapter's block indices (published
/// models have at most 57): a hostile index must not size a huge (or overflowing) module list.
let maximumInferredBlocks = 1024

/// A module written as the fusion of several split LoRAs: A stacks the parts' A's (rank Σr) and
/// B is block-diagonal, one block per part, each part's scale folded in. Exact, but the rank is
/// not a free rank-Σr LoRA's: the metadata of a kohya or ComfyUI file says which modules these are.
public struct FusedModule: Sendable, Hashable {
    /// The fused module (the target layout's name, e.g. `joint_blocks.0.x_block.attn.qkv`).
    public var name: String
    /// The split modules fused into it, in block order.
    public var parts: [String]
    /// Their ranks: the sizes of B's diagonal blocks.
    public var ranks: [Int]

    /// The `__metadata__` key listing fused modules.
    public static let metadataKey = "flowguard.fused_block_diagonal"

    /// `{"<module>": {"parts": [...], "ranks": [...]}, ...}` (compact JSON, module order).
    static func metadataJSON(_ modules: [FusedModule]) -> String {
        JSONValue.object(modules.map { m in
            (key: m.name, value: JSONValue.object([("parts", .array(m.parts.map { .string($0) })),
                                                   ("ranks", .array(m.ranks.map { .int(Int64($0)) }))]))
        }).compactText
    }
}
