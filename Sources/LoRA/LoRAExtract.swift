import BLAS
import Checkpoints
import SafeTensors
import SystemSupport

/// One module of an extracted adapter and how well rank r captures its weight difference.
public struct ExtractedModule: Sendable, Hashable {
    /// Module name in the requested naming.
    public var name: String
    /// Rank kept (the requested rank capped at min(out, in)).
    public var rank: Int
    /// Output features (rows of ΔW).
    public var outFeatures: Int
    /// Input features (columns of ΔW).
    public var inFeatures: Int
    /// Σ_{i<r} s_i² / Σ s_i²: the share of ‖D‖_F² captured.
    public var capturedEnergy: Double
    /// ‖D − B·A‖_F.
    public var frobeniusError: Double
    /// ‖D‖_F, the size of the weight difference.
    public var deltaNorm: Double
    /// frobeniusError / deltaNorm.
    public var relativeError: Double { deltaNorm > 0 ? frobeniusError / deltaNorm : 0 }
}

/// What an extraction found.
public struct ExtractReport: Sendable {
    /// The architecture of both checkpoints.
    public var architecture: String
    /// Their key layout.
    public var checkpointLayout: KeyLayout
    /// The naming of the adapter's modules.
    public var naming: KeyLayout
    /// The rank asked for.
    public var requestedRank: Int
    /// Every extracted module, in checkpoint order.
    public var modules: [ExtractedModule]
    /// Linear weights (in the requested naming) that were identical and so left out.
    public var unchangedModules: Int
    /// Tensors that differ but are not linear weights (biases, norms, embeddings tables,
    /// convolutions): their change is not in the adapter.
    public var otherChangedTensors: [String]
    /// Wall-clock seconds.
    public var elapsedSeconds: Double

    /// Σ over modules of captured energy weighted by ‖D‖² (1 when nothing was extracted).
    public var totalCapturedEnergy: Double {
        let total = modules.reduce(0.0) { $0 + $1.deltaNorm * $1.deltaNorm }
        guard total > 0 else { return 1 }
        return modules.reduce(0.0) { $0 + $1.capturedEnergy * $1.deltaNorm * $1.deltaNorm } / total
    }
}

/// Extracts a LoRA adapter from the difference of a fine-tuned checkpoint and its base:
/// for each linear weight, D = tuned − base is factored by a truncated SVD.
public enum LoRAExtract {
    /// Compares `tuned` with `base` (same architecture, same layout) and returns the rank-`rank`
    /// adapter that best approximates every changed linear weight (Eckart–Young), with a report.
    ///
    /// Every 2-D `.weight` tensor of a known module is a candidate (attention and MLP linears,
    /// but also modulation and embedder linears, should they have changed); D = 0 is skipped.
    /// D = U·S·Vᵀ truncated to r = min(rank, out, in) gives B = U_r·√S_r and A = √S_r·V_rᵀ with
    /// α = r, so the scale is 1 and ΔW = B·A. Modules are named in `naming` (default: the
    /// checkpoints' own layout); for the other layout, D is assembled in that layout's modules
    /// (fused qkv from to_q/to_k/to_v, or split from qkv) before factoring, so each target module
    /// gets its own rank-r factors. `progress(done, total)` counts modules.
    /// Throws `LoRAMergeError.checkpointsDiffer` when the two are not the same model and layout.
    public static func extract(base: TensorCollection, tuned: TensorCollection, rank: Int,
                               naming: KeyLayout? = nil,
                               progress: ((Int, Int) -> Void)? = nil) throws -> (LoRAAdapter, ExtractReport) {
        let start = monotonicSeconds()
        guard rank >= 1 else { throw LoRAMergeError.badRank(rank) }
        let detected = try detectSameModel(base: base, tuned: tuned)
        let architecture = detected.architecture
        let layout = detected.layout
        let naming = naming ?? layout
        let (targets, otherChanged) = try collectTargets(base: base, tuned: tuned, detected: detected, naming: naming)

        var modules: [LoRAModule] = []
        var extracted: [ExtractedModule] = []
        var unchanged = 0
        var cache: (name: String, delta: [Float])? = nil
        for (done, target) in targets.enumerated() {
            let d = try assembleDelta(target, base: base, tuned: tuned, cache: &cache)
            progress?(done + 1, targets.count)
            if d.allSatisfy({ $0 == 0 }) { unchanged += 1; continue }
            let (module, report) = try factor(d, target, rank: rank)
            modules.append(module)
            extracted.append(report)
        }
        let adapter = LoRAAdapter(modules: modules, layout: naming, rsLoRA: false,
                                  format: naming == .diffusers ? .diffusers : .kohya, family: architecture.family)
        let report = ExtractReport(architecture: architecture.name, checkpointLayout: layout, naming: naming,
                                   requestedRank: rank, modules: extracted, unchangedModules: unchanged,
                                   otherChangedTensors: otherChanged,
                                   elapsedSeconds: monotonicSeconds() - start)
        return (adapter, report)
    }

    /// `LoRAMergeError.checkpointsDiffer` for this pair of checkpoints.
    private static func differ(_ base: TensorCollection, _ tuned: TensorCollection, _ reason: String) -> LoRAMergeError {
        .checkpointsDiffer(base: base.path, tuned: tuned.path, reason: reason)
    }

    /// Detects both checkpoints; they must be the same architecture in the same layout.
    private static func detectSameModel(base: TensorCollection, tuned: TensorCollection) throws -> DetectedCheckpoint {
        let baseDetected = try Architecture.detect(base.infos)
        let tunedDetected = try Architecture.detect(tuned.infos)
        guard baseDetected.architecture == tunedDetected.architecture else {
            throw differ(base, tuned, "the base is \(baseDetected.architecture.summary), the tuned checkpoint \(tunedDetected.architecture.summary)")
        }
        guard baseDetected.layout == tunedDetected.layout else {
            throw differ(base, tuned, "the base uses the \(baseDetected.layout.rawValue) layout, the tuned checkpoint the \(tunedDetected.layout.rawValue) layout; convert one first")
        }
        return baseDetected
    }

    /// Candidate tensors and the target modules (in `naming`) their rows go to; also the names of
    /// the other tensors whose values changed. Every base tensor must be in `tuned` with its shape.
    private static func collectTargets(base: TensorCollection, tuned: TensorCollection, detected: DetectedCheckpoint,
                                       naming: KeyLayout) throws -> (targets: [Target], otherChanged: [String]) {
        let architecture = detected.architecture
        let layout = detected.layout
        var targets: [Target] = []
        var targetIndex: [String: Int] = [:]
        var otherChanged: [String] = []
        for entry in base.entries {
            let info = entry.info
            guard let tunedEntry = tuned.entry(info.name) else { throw differ(base, tuned, "\"\(info.name)\" is missing from the tuned checkpoint") }
            guard tunedEntry.info.shape == info.shape else {
                throw differ(base, tuned, "\"\(info.name)\" has shape \(info.shape) in the base, \(tunedEntry.info.shape) in the tuned checkpoint")
            }
            let moduleName = info.name.hasSuffix(".weight") ? String(info.name.dropLast(".weight".count)) : nil
            let mapping = moduleName.flatMap { try? architecture.mapModule($0, from: layout) }
            guard info.shape.count == 2, let moduleName, let mapping, info.dtype.isFloatingPoint else {
                if try !sameValues(entry, tunedEntry) { otherChanged.append(info.name) }
                continue
            }
            let columns = info.shape[1]
            let pieces: [(module: String, source: Range<Int>, target: Range<Int>, count: Int)] = naming == layout
                ? [(String(moduleName.dropFirst(layout == .original ? detected.prefix.rawValue.count : 0)),
                    0..<info.shape[0], 0..<info.shape[0], info.shape[0])]
                : mapping.pieces.map { ($0.target, $0.sourceRows, $0.targetRows, $0.targetRowCount) }
            for piece in pieces {
                let index: Int
                if let known = targetIndex[piece.module] {
                    index = known
                } else {
                    index = targets.count
                    targetIndex[piece.module] = index
                    targets.append(Target(name: piece.module, rows: piece.count, columns: columns, parts: []))
                }
                targets[index].parts.append((info.name, piece.source, piece.target))
            }
        }
        return (targets, otherChanged)
    }

    /// D = tuned − base for one target module, its rows gathered from the checkpoint tensors
    /// that make it up. `cache` keeps the last tensor's difference (a fused tensor feeds several targets).
    private static func assembleDelta(_ target: Target, base: TensorCollection, tuned: TensorCollection,
                                      cache: inout (name: String, delta: [Float])?) throws -> [Float] {
        var d = [Float](repeating: 0, count: target.rows * target.columns)
        for part in target.parts {
            if cache?.name != part.tensor {
                let b = try floats(base, part.tensor), t = try floats(tuned, part.tensor)
                cache = (part.tensor, zip(t, b).map { $0 - $1 })
            }
            let delta = cache!.delta
            for (s, r) in zip(part.source, part.target) {
                d.replaceSubrange((r * target.columns)..<((r + 1) * target.columns),
                                  with: delta[(s * target.columns)..<((s + 1) * target.columns)])
            }
        }
        return d
    }

    /// The rank-r factors of D (B = U_r·√S_r, A = √S_r·V_rᵀ, α = r) and what they capture.
    private static func factor(_ d: [Float], _ target: Target, rank: Int) throws -> (LoRAModule, ExtractedModule) {
        let svd = try BLAS.truncatedSVD(d, rows: target.rows, columns: target.columns, rank: rank)
        let r = svd.rank
        let roots = svd.s.map { $0.squareRoot() }
        var up = svd.u
        for i in 0..<target.rows { for j in 0..<r { up[i * r + j] *= roots[j] } }
        var down = svd.vt
        for j in 0..<r { for c in 0..<target.columns { down[j * target.columns + c] *= roots[j] } }
        let module = LoRAModule(name: target.name, down: Matrix(shape: [r, target.columns], values: down),
                                up: Matrix(shape: [target.rows, r], values: up), alpha: Float(r))
        let report = ExtractedModule(name: target.name, rank: r, outFeatures: target.rows, inFeatures: target.columns,
                                     capturedEnergy: svd.capturedEnergy, frobeniusError: svd.truncationError,
                                     deltaNorm: svd.frobeniusNorm)
        return (module, report)
    }

    /// A module of the requested naming and the checkpoint rows that make it up.
    private struct Target {
        var name: String
        var rows: Int
        var columns: Int
        var parts: [(tensor: String, source: Range<Int>, target: Range<Int>)]
    }

    /// A tensor's values as Float32.
    private static func floats(_ collection: TensorCollection, _ name: String) throws -> [Float] {
        guard let entry = collection.entry(name) else { throw SafeTensorsError.tensorNotFound(file: collection.path, tensor: name) }
        return try entry.file.floats(of: entry.info)
    }

    /// Whether two tensors hold the same values (bytes when the dtypes agree).
    private static func sameValues(_ a: TensorEntry, _ b: TensorEntry) throws -> Bool {
        if a.info.dtype == b.info.dtype {
            return a.file.withBytes(of: a.info) { x in b.file.withBytes(of: b.info) { y in x.elementsEqual(y) } }
        }
        guard FloatCodec.canDecode(a.info.dtype), FloatCodec.canDecode(b.info.dtype) else { return false }
        return try a.file.floats(of: a.info) == b.file.floats(of: b.info)
    }
}
