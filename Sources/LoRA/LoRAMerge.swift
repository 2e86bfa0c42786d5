import BLAS
import Checkpoints
import SafeTensors
import SystemSupport

/// What a finished merge (or unmerge) wrote.
public struct MergeReport: Sendable {
    /// The base architecture (`sd3.5-medium`, `flux-dev` or a custom name).
    public var architecture: String
    /// Layout of the base checkpoint, and so of the output.
    public var baseLayout: KeyLayout
    /// Naming of the adapter's modules.
    public var adapterLayout: KeyLayout
    /// Adapter modules merged.
    public var modulesMerged: Int
    /// Base tensors that received a delta, sorted.
    public var touchedTensors: [String]
    /// Tensors written (all of the base's).
    public var tensorsWritten: Int
    /// Bytes of tensor data written.
    public var dataBytes: Int
    /// The user's multiplier (negated internally for an unmerge).
    public var scale: Float
    /// True when the delta was subtracted.
    public var unmerged: Bool
    /// Values clamped or replaced while encoding merged tensors (and converted untouched ones).
    public var conversion: ConversionReport
    /// Number of output tensors of each dtype.
    public var tensorsByDType: [DType: Int]
    /// The file or folder written.
    public var outputPath: String
    /// The files written (one `.safetensors` file, or a diffusers folder's weights and `config.json`).
    public var outputFiles: [String]
    /// Wall-clock seconds.
    public var elapsedSeconds: Double
}

/// Merges a LoRA adapter into a base checkpoint: W' = W ± scale·ΔW for every adapted module,
/// streamed one base tensor at a time into a new single `.safetensors` file in the base's layout.
public enum LoRAMerge {
    /// Writes `base` with `adapter` merged in (or, with `unmerge`, taken out) to the single file
    /// `output`. The adapter may use either layout's naming (see `DeltaPlacement`). Untouched
    /// tensors are copied byte for byte by the kernel (or converted when `dtype` differs);
    /// touched tensors are widened to Float32, receive ΔW row slices through sgemm, and are
    /// encoded back in their own dtype (or `dtype`). Peak memory: one base tensor in Float32.
    /// `progress(bytesDone, bytesTotal)` follows the output data. A sharded base is written as
    /// one file; a base given as a folder (a diffusers model folder) is written as a folder
    /// unless `output` ends in `.safetensors` (see `writesFolder`): its weights in one
    /// `diffusion_pytorch_model.safetensors` beside the base's `config.json` (or the one derived
    /// from the shapes), staged and put in place whole. Throws `LoRAError` (misplaced module, NaN/∞ in a factor),
    /// `CheckpointError` (base not recognised), `LoRAMergeError` or `SafeTensorsError`; on
    /// failure nothing is left at `output`.
    @discardableResult
    public static func merge(base: TensorCollection, adapter: LoRAAdapter, scale: Float = 1, output: String,
                             dtype: DType? = nil, unmerge: Bool = false,
                             progress: ((Int, Int) -> Void)? = nil) throws -> MergeReport {
        let start = monotonicSeconds()
        if let dtype, !FloatCodec.canEncode(dtype) { throw LoRAMergeError.badDType(dtype) }
        try checkFinite(adapter)
        let asFolder = writesFolder(output, base: base)
        try checkOutput(output, folder: asFolder, inputs: base.files.map(\.path) + (base.indexPath.map { [$0] } ?? []))
        // An all-in-one base: the transformer is detected and merged, every other component
        // is copied byte for byte.
        let detected = try Architecture.detect(base.transformerOnly().infos)
        var shapes: [String: [Int]] = [:]
        for info in base.infos { shapes[info.name] = info.shape }
        let placement = try DeltaPlacement(adapter: adapter, base: detected, shapes: shapes)
        let sign: Float = unmerge ? -1 : 1
        let factors = adapter.modules.map { sign * scale * $0.scale(rsLoRA: adapter.rsLoRA) }

        var specs: [TensorSpec] = []
        for entry in base.entries {
            let own = entry.info.dtype
            if placement.slices[entry.info.name] != nil, !own.isFloatingPoint {
                throw LoRAMergeError.notFloatingPoint(file: entry.file.path, tensor: entry.info.name, dtype: own)
            }
            specs.append(TensorSpec(name: entry.info.name, dtype: own.isFloatingPoint ? (dtype ?? own) : own,
                                    shape: entry.info.shape))
        }
        let total = specs.reduce(0) { $0 + ($1.byteCount ?? 0) }
        var done = 0
        var report = ConversionReport()
        var metadata: [String: String] = [:]
        for (key, value) in base.metadata ?? [] { metadata[key] = value }
        if metadata["format"] == nil { metadata["format"] = "pt" }

        let staged: AtomicFolder?
        do { staged = asFolder ? try AtomicFolder(destination: output, placement: .replace()) : nil } catch { throw SafeTensorsError.system(error) }
        let weightsPath = staged.map { $0.stagingPath + "/diffusion_pytorch_model.safetensors" } ?? output
        try SafeTensorsWriter.write(to: weightsPath, specs: specs, metadata: metadata) { sink in
            guard let entry = base.entry(sink.info.name) else {
                throw SafeTensorsError.tensorNotFound(file: base.path, tensor: sink.info.name)
            }
            let info = entry.info
            let range = entry.file.fileOffset(of: info)..<(entry.file.fileOffset(of: info) + info.byteCount)
            if let slices = placement.slices[info.name] {
                var values = try entry.floats()
                apply(slices, of: adapter, factors: factors, to: &values, columns: info.shape.dropFirst().reduce(1, *))
                report.merge(try sink.write(floats: values))
            } else if !entry.isPlain {
                // A GGUF block tensor of the base: decoded (exactly as gguf-py does) and written.
                report.merge(try sink.write(floats: try entry.floats()))
            } else if info.dtype == sink.info.dtype {
                try sink.copy(from: entry.file, fileRange: range)
            } else {
                try entry.file.withBytes(fileRange: range) { (raw: UnsafeRawBufferPointer) throws(SafeTensorsError) in
                    report.merge(try sink.write(converting: raw, from: info.dtype, count: info.elementCount))
                }
                entry.file.advise(.dontNeed, fileRange: range)
            }
            done += sink.info.byteCount
            progress?(done, total)
        }
        var files = [output]
        if let staged {
            let configBytes = try baseConfig(base) ?? Array(detected.architecture.diffusersConfigJSON().utf8)
            do {
                let config = try AtomicFile(destination: staged.stagingPath + "/config.json")
                try config.write(configBytes)
                try config.commit()
                files = try staged.commit(order: ["diffusion_pytorch_model.safetensors", "config.json"])
            } catch { throw SafeTensorsError.system(error) }
        }
        var byDType: [DType: Int] = [:]
        for spec in specs { byDType[spec.dtype, default: 0] += 1 }
        return MergeReport(architecture: detected.architecture.name, baseLayout: detected.layout,
                           adapterLayout: adapter.layout, modulesMerged: adapter.modules.count,
                           touchedTensors: placement.touchedTensors, tensorsWritten: specs.count, dataBytes: total,
                           scale: scale, unmerged: unmerge, conversion: report, tensorsByDType: byDType,
                           outputPath: output, outputFiles: files, elapsedSeconds: monotonicSeconds() - start)
    }

    /// Adds each slice's rows of factor·B·A (or factor·bias) to `values`, a row-major tensor
    /// with `columns` values per row: W[targetRows] += factor · B[sourceRows] · A, by sgemm with
    /// β = 1 straight into the tensor's rows (ΔW is never materialised).
    static func apply(_ slices: [DeltaSlice], of adapter: LoRAAdapter, factors: [Float],
                      to values: inout [Float], columns: Int) {
        for slice in slices {
            let module = adapter.modules[slice.module]
            let factor = factors[slice.module]
            if slice.isBias {
                guard let bias = module.upBias else { continue }
                for (s, t) in zip(slice.sourceRows, slice.targetRows) { values[t] += factor * bias.values[s] }
                continue
            }
            let r = module.rank
            guard r > 0 else { continue }
            // Invariant (checked by DeltaPlacement): targetRows lie inside the tensor, columns ==
            // A's columns, sourceRows lie inside B.
            module.up.values.withUnsafeBufferPointer { up in
                module.down.values.withUnsafeBufferPointer { down in
                    values.withUnsafeMutableBufferPointer { out in
                        BLAS.gemm(.none, .none, m: slice.sourceRows.count, n: columns, k: r, alpha: factor,
                                  a: up.baseAddress! + slice.sourceRows.lowerBound * r, lda: r,
                                  b: down.baseAddress!, ldb: columns, beta: 1,
                                  c: out.baseAddress! + slice.targetRows.lowerBound * columns, ldc: columns)
                    }
                }
            }
        }
    }

    /// Throws `LoRAError.nonFinite` for the first factor holding NaN or ±∞.
    static func checkFinite(_ adapter: LoRAAdapter) throws {
        for module in adapter.modules {
            for (part, matrix) in [("lora_A", module.down), ("lora_B", module.up), ("lora_B.bias", module.upBias)] {
                guard let matrix else { continue }
                let nan = matrix.values.reduce(0) { $0 + ($1.isNaN ? 1 : 0) }
                let inf = matrix.values.reduce(0) { $0 + ($1.isInfinite ? 1 : 0) }
                if nan + inf > 0 {
                    throw LoRAError.nonFinite(file: "adapter", key: "\(module.name).\(part)", byteOffset: nil,
                                              nanCount: nan, infCount: inf)
                }
            }
            if let alpha = module.alpha, !alpha.isFinite {
                throw LoRAError.nonFinite(file: "adapter", key: "\(module.name).alpha", byteOffset: nil,
                                          nanCount: alpha.isNaN ? 1 : 0, infCount: alpha.isInfinite ? 1 : 0)
            }
        }
    }

    /// Whether the merge of `base` into `output` writes a diffusers folder: the base was given as
    /// a folder and `output` does not end in `.safetensors`.
    public static func writesFolder(_ output: String, base: TensorCollection) -> Bool {
        FileSystem.isFolder(base.path) && !output.hasSuffix(".safetensors")
    }

    /// The `config.json` beside the base's weights, when the base is a folder holding one.
    static func baseConfig(_ base: TensorCollection) throws -> [UInt8]? {
        guard FileSystem.isFolder(base.path), FileSystem.exists(base.path + "/config.json") else { return nil }
        return try readWholeFile(base.path + "/config.json", limit: 16 << 20)
    }

    /// Refuses an output of the wrong kind (a folder where a file is written), one of the input
    /// files, or the folder holding them.
    static func checkOutput(_ output: String, folder: Bool, inputs: [String]) throws {
        if !folder && (output.hasSuffix("/") || FileSystem.isFolder(output)) {
            throw LoRAMergeError.badOutput(path: output, reason: "is a folder; the output is a single .safetensors file")
        }
        guard let target = FileSystem.identity(of: output) else { return }
        for input in inputs {
            let candidate = folder ? FileSystem.parentFolder(of: input) : input
            if FileSystem.identity(of: candidate) == target {
                throw LoRAMergeError.badOutput(path: output, reason: folder ? "holds the base's files; refusing to replace it"
                                                                            : "is an input file; refusing to overwrite it")
            }
        }
    }
}
