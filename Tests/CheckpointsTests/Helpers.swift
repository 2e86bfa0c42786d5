@testable import Checkpoints
import SafeTensors
import Testing

/// Small configurations used across the tests.
enum Tiny {
    /// Hidden 32, 3 joint blocks, attn2 on blocks 0–1, RMS q/k norm with 8-channel heads.
    static let sd3 = try! Architecture(config: .sd3(SD3Config(
        hiddenSize: 32, numLayers: 3, attentionHeadDim: 8, dualAttentionLayers: [0, 1], qkNorm: true,
        patchSize: 2, inChannels: 4, outChannels: 4, jointAttentionDim: 16, pooledProjectionDim: 24,
        posEmbedMaxSize: 8)))

    /// Hidden 32, 2 double + 3 single blocks, 8-channel heads, guidance embedder.
    static let flux = try! Architecture(config: .flux(FluxConfig(
        hiddenSize: 32, numLayers: 2, numSingleLayers: 3, attentionHeadDim: 8, guidanceEmbeds: true,
        inChannels: 16, outChannels: 16, jointAttentionDim: 16, pooledProjectionDim: 24)))
}

/// Name → shape of a list of entries.
func shapes(_ entries: [TensorShapeEntry]) -> [String: [Int]] {
    Dictionary(uniqueKeysWithValues: entries.map { ($0.name, $0.shape) })
}

/// Merges adjacent slices of the same source whose rows continue each other.
func merged(_ slices: [RowSlice]) -> [RowSlice] {
    var out: [RowSlice] = []
    for s in slices where !s.rows.isEmpty {
        if let last = out.last, last.source == s.source, last.rows.upperBound == s.rows.lowerBound {
            out[out.count - 1].rows = last.rows.lowerBound..<s.rows.upperBound
        } else {
            out.append(s)
        }
    }
    return out
}

/// The source slices (of `first`'s sources) that `slice` (of one of `first`'s outputs) stands for.
func trace(_ slice: RowSlice, through first: [String: PlannedTensor]) -> [RowSlice] {
    guard let planned = first[slice.source] else { return [slice] }
    var out: [RowSlice] = []
    var offset = 0
    for piece in planned.pieces {
        let span = offset..<offset + piece.rows.count
        let lo = max(span.lowerBound, slice.rows.lowerBound), hi = min(span.upperBound, slice.rows.upperBound)
        if lo < hi {
            let start = piece.rows.lowerBound + (lo - offset)
            out.append(RowSlice(source: piece.source, rows: start..<start + (hi - lo)))
        }
        offset += piece.rows.count
    }
    return out
}

/// Checks that every output's pieces fill exactly its rows, and that every source row is read
/// exactly once over the whole plan.
func checkBijective(_ plan: ConversionPlan, sources: [TensorShapeEntry]) {
    let sourceShapes = shapes(sources)
    var used: [String: [Range<Int>]] = [:]
    for o in plan.outputs {
        let rows = o.shape.first ?? 1
        #expect(o.pieces.map(\.rows.count).reduce(0, +) == rows, "\(o.name) pieces do not fill \(rows) rows")
        for p in o.pieces {
            guard let s = sourceShapes[p.source] else {
                Issue.record("\(o.name) reads unknown source \(p.source)")
                continue
            }
            #expect(Array(s.dropFirst()) == Array(o.shape.dropFirst()), "\(o.name) and \(p.source) differ past dim 0")
            #expect(p.rows.lowerBound >= 0 && p.rows.upperBound <= (s.first ?? 1))
            used[p.source, default: []].append(p.rows)
        }
    }
    #expect(Set(used.keys) == Set(sourceShapes.keys), "some source tensors are not read")
    for (name, ranges) in used {
        let sorted = ranges.sorted { $0.lowerBound < $1.lowerBound }
        var next = 0
        for r in sorted {
            #expect(r.lowerBound == next, "\(name) rows are read twice or skipped at \(next)")
            next = r.upperBound
        }
        #expect(next == (sourceShapes[name]!.first ?? 1), "\(name) rows are not all read")
    }
}

/// Converts `specs` to the other layout and back, and checks every final output traces back to
/// the whole source tensor of the same name.
func checkRoundTrip(_ specs: [TensorShapeEntry], prefix: KeyPrefix? = nil) throws {
    let start = try Architecture.detect(specs)
    let there = try ConversionPlan(tensors: specs, to: start.layout == .original ? .diffusers : .original, prefix: prefix)
    checkBijective(there, sources: specs)
    let middle = there.outputs.map { TensorShapeEntry(name: $0.name, shape: $0.shape) }
    let back = try ConversionPlan(tensors: middle, to: start.layout, prefix: start.prefix)
    checkBijective(back, sources: middle)
    #expect(back.architecture == start.architecture)
    let firstByName = Dictionary(uniqueKeysWithValues: there.outputs.map { ($0.name, $0) })
    let original = shapes(specs)
    #expect(back.outputs.count == specs.count)
    for o in back.outputs {
        #expect(original[o.name] == o.shape, "\(o.name) changed shape")
        let traced = merged(o.pieces.flatMap { trace($0, through: firstByName) })
        #expect(traced == [RowSlice(source: o.name, rows: 0..<(o.shape.first ?? 1))], "\(o.name) does not round-trip: \(traced)")
    }
}
