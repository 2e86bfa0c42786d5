import BLAS
import Checkpoints
import SafeTensors

/// How much of one module's effective ΔW a rank-R LoRA keeps.
public struct RetainedEnergy: Sendable, Hashable {
    /// The module (in the output adapter's naming before any layout conversion).
    public var module: String
    /// The rank kept (≤ the requested one).
    public var rank: Int
    /// Σ_{i<R} s_i² / ‖ΔW‖_F² (1 for ΔW = 0).
    public var energy: Double
    /// ‖ΔW‖_F².
    public var squaredNorm: Double
}

/// Turns an adapter with LoKr, LoHa, full or DoRA deltas into a plain LoRA: each module's
/// effective ΔW (what a merge adds; for DoRA, W′ − W, which needs the base) is approximated by
/// a truncated SVD, B = U_R·√S_R, A = √S_R·V_Rᵀ, α = R. Low-rank modules without DoRA are kept
/// as they are (exact). At full rank the result merges to the same weights.
public enum LoRARankReduction {
    /// The low-rank adapter and the energy each module keeps. With `base`, ΔW is taken as the
    /// merge's W′ − W per base tensor (every kind, DoRA included; the result is named in the
    /// base's layout); without it, from the adapter alone (no DoRA, no replaced tensors).
    /// Vector deltas (`.diff_b` on a bias, norm scales) have no LoRA form and throw.
    public static func reduce(_ adapter: LoRAAdapter, rank: Int, base: TensorCollection?) throws -> (adapter: LoRAAdapter, energies: [RetainedEnergy]) {
        guard rank > 0 else { throw LoRAMergeError.badRank(rank) }
        let file = adapter.sourceFile.isEmpty ? "adapter" : adapter.sourceFile
        if let vector = adapter.deltas.first(where: \.isVector) {
            throw LoRAError.needsOption(file: file, reason: "the \(vector.kindName) delta on \(vector.name) (\(vector.target.rawValue)) is a vector (a bias or a norm scale), which no LoRA holds; merge the adapter instead")
        }
        var out = adapter
        out.deltas = []
        out.magnitudes = [:]
        out.format = .diffusers
        var energies: [RetainedEnergy] = []
        var modules: [LoRAModule] = []
        func add(_ name: String, _ delta: [Float], rows: Int, columns: Int) throws {
            let svd = try BLAS.truncatedSVD(delta, rows: rows, columns: columns, rank: min(rank, rows, columns))
            let r = svd.rank
            let roots = svd.s.map { $0.squareRoot() }
            var up = svd.u
            for i in 0..<rows { for j in 0..<r { up[i * r + j] *= roots[j] } }
            var down = svd.vt
            for j in 0..<r { for c in 0..<columns { down[j * columns + c] *= roots[j] } }
            modules.append(LoRAModule(name: name, down: Matrix(shape: [r, columns], values: down),
                                      up: Matrix(shape: [rows, r], values: up), alpha: Float(r)))
            energies.append(RetainedEnergy(module: name, rank: r, energy: svd.capturedEnergy,
                                           squaredNorm: svd.frobeniusNorm * svd.frobeniusNorm))
        }
        if let base {
            let detected = try Architecture.detect(base.infos)
            var shapes: [String: [Int]] = [:]
            for info in base.infos { shapes[info.name] = info.shape }
            let placement = try DeltaPlacement(adapter: adapter, base: detected, shapes: shapes)
            let kernel = MergeKernel(adapter: adapter, placement: placement, scale: 1)
            let keyPrefix = detected.layout == .original ? detected.prefix.rawValue : ""
            for tensor in placement.touchedTensors {
                let slices = placement.slices[tensor]!
                guard let entry = base.entry(tensor), entry.info.shape.count >= 2 else { continue }
                let rows = entry.info.shape[0]
                var columns = entry.info.shape.dropFirst().reduce(1, *)
                var w = try entry.file.floats(of: entry.info)
                if let wide = placement.widened[tensor] {
                    w = LoRAMerge.widen(w, rows: rows, from: columns, to: wide)
                    columns = wide
                }
                var merged = w
                merged.withUnsafeMutableBufferPointer { kernel.apply(slices, block: 0..<rows, to: $0, columns: columns) }
                for i in merged.indices { merged[i] -= w[i] }
                let module = String(tensor.dropFirst(keyPrefix.count).dropLast(".weight".count))
                try add(module, merged, rows: rows, columns: columns)
            }
            out.layout = detected.layout
            out.family = detected.architecture.family
        } else {
            if let dora = adapter.magnitudes.keys.sorted().first {
                throw LoRAError.needsOption(file: file, reason: "module \(dora) carries a DoRA magnitude, whose effective delta depends on the base weight; give --base")
            }
            if let replaced = adapter.deltas.first(where: \.replaces) {
                throw LoRAError.needsOption(file: file, reason: "\(replaced.name) replaces a base tensor; give --base")
            }
            var sums: [String: (rows: Int, columns: Int, values: [Float])] = [:]
            var order: [String] = []
            for m in adapter.modules {
                let d = m.delta(rsLoRA: adapter.rsLoRA)
                if sums[m.name] == nil { order.append(m.name); sums[m.name] = (d.rows, d.columns, d.values) } else {
                    for i in d.values.indices { sums[m.name]!.values[i] += d.values[i] }
                }
            }
            for d in adapter.deltas {
                let (size, overflow) = d.outFeatures.multipliedReportingOverflow(by: d.inFeatures)
                guard !overflow, size <= 1 << 28 else {
                    let key = d.keys.first ?? d.name
                    throw LoRAError.deltaMisfit(file: file, key: key, byteOffset: adapter.keyOffsets[key],
                                                reason: "its delta would be [\(d.outFeatures), \(d.inFeatures)], larger than any transformer weight")
                }
                let dense = d.dense()
                if let have = sums[d.name] {
                    guard have.rows == d.outFeatures, have.columns == d.inFeatures else {
                        let key = d.keys.first ?? d.name
                        throw LoRAError.deltaMisfit(file: file, key: key, byteOffset: adapter.keyOffsets[key],
                                                    reason: "it is [\(d.outFeatures), \(d.inFeatures)] but the LoRA on the same module is [\(have.rows), \(have.columns)]")
                    }
                    for i in dense.values.indices { sums[d.name]!.values[i] += dense.values[i] }
                } else {
                    order.append(d.name)
                    sums[d.name] = (d.outFeatures, d.inFeatures, dense.values)
                }
            }
            let plain = Set(adapter.modules.map(\.name)).subtracting(adapter.deltas.map(\.name))
            for name in order {
                if plain.contains(name), let kept = adapter.modules.first(where: { $0.name == name }),
                   adapter.modules.filter({ $0.name == name }).count == 1 {
                    // A plain LoRA stays exact.
                    var m = kept
                    if m.alpha == nil { m.alpha = Float(m.rank) }
                    let s = m.scale(rsLoRA: adapter.rsLoRA)
                    if adapter.rsLoRA { m.alpha = s * Float(m.rank) }
                    modules.append(m)
                    let norm = m.delta(rsLoRA: false).values.reduce(0.0) { $0 + Double($1) * Double($1) }
                    energies.append(RetainedEnergy(module: name, rank: m.rank, energy: 1, squaredNorm: norm))
                    continue
                }
                let s = sums[name]!
                try add(name, s.values, rows: s.rows, columns: s.columns)
            }
        }
        out.modules = modules
        out.rsLoRA = false
        return (out, energies)
    }

    /// Σ retained energy / Σ ‖ΔW‖² over modules (1 when every ΔW is zero).
    public static func overall(_ energies: [RetainedEnergy]) -> Double {
        let total = energies.reduce(0.0) { $0 + $1.squaredNorm }
        guard total > 0 else { return 1 }
        return energies.reduce(0.0) { $0 + $1.energy * $1.squaredNorm } / total
    }
}
