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
    /// Adapter modules merged (low-rank modules and other deltas).
    public var modulesMerged: Int
    /// Text-encoder modules of the adapter left out (a transformer merge applies the transformer part).
    public var textEncoderModulesSkipped: Int = 0
    /// The kinds of delta merged (`lora`, `lokr`, `loha`, `full`, `replace`, `dora`).
    public var kinds: [String] = []
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
    /// encoded back in their own dtype (or `dtype`), block of rows by block of rows
    /// (`blockValues` values each), `threads` blocks at a time. Peak memory: a few blocks.
    /// `progress(bytesDone, bytesTotal)` follows the output data. A sharded base is written as
    /// one file; a base given as a folder (a diffusers model folder) is written as a folder
    /// unless `output` ends in `.safetensors` (see `writesFolder`): its weights in one
    /// `diffusion_pytorch_model.safetensors` beside the base's `config.json` (or the one derived
    /// from the shapes), staged and put in place whole. Throws `LoRAError` (misplaced module, NaN/∞ in a factor),
    /// `CheckpointError` (base not recognised), `LoRAMergeError` or `SafeTensorsError`; on
    /// failure nothing is left at `output`.
    @discardableResult
    public static func merge(base: TensorCollection, adapter: LoRAAdapter, scale: Float = 1, output: String,
                             dtype: DType? = nil, unmerge: Bool = false, threads: Int = 1,
                             blockValues: Int = LoRAMerge.defaultBlockValues,
                             progress: ((Int, Int) -> Void)? = nil) throws -> MergeReport {
        let start = monotonicSeconds()
        if let dtype, !FloatCodec.canEncode(dtype) { throw LoRAMergeError.badDType(dtype) }
        let asFolder = writesFolder(output, base: base)
        let (detected, placement, kernel) = try prepare(base: base, adapter: adapter, scale: scale, unmerge: unmerge,
                                                        output: output, folder: asFolder)
        var scratch: [BlockScratch] = []
        // `--dtype` applies to the transformer; the other components of an all-in-one file are
        // copied byte for byte.
        let transformer = AllInOne.components(base.infos) == nil ? nil : Set(base.transformerOnly().infos.map(\.name))

        var specs: [TensorSpec] = []
        for entry in base.entries {
            let own = entry.info.dtype
            if placement.slices[entry.info.name] != nil, !own.isFloatingPoint {
                throw LoRAMergeError.notFloatingPoint(file: entry.file.path, tensor: entry.info.name, dtype: own)
            }
            var shape = entry.info.shape
            if let columns = placement.widened[entry.info.name] { shape = [shape[0], columns] }
            let converts = own.isFloatingPoint && (transformer?.contains(entry.info.name) ?? true)
            specs.append(TensorSpec(name: entry.info.name, dtype: converts ? (dtype ?? own) : own, shape: shape))
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
        // With several workers, each one's sgemm runs on its own thread: OpenBLAS is held to one
        // thread per call for the merge.
        let previousBLASThreads = BLAS.threadCount
        if threads > 1 { BLAS.setThreadCount(1) }
        defer { if threads > 1 { BLAS.setThreadCount(previousBLASThreads) } }
        try SafeTensorsWriter.write(to: weightsPath, specs: specs, metadata: metadata) { sink in
            guard let entry = base.entry(sink.info.name) else {
                throw SafeTensorsError.tensorNotFound(file: base.path, tensor: sink.info.name)
            }
            let info = entry.info
            let range = entry.file.fileOffset(of: info)..<(entry.file.fileOffset(of: info) + info.byteCount)
            if let slices = placement.slices[info.name] {
                report.merge(try mergeRows(entry, slices: slices, kernel: kernel, widened: placement.widened[info.name],
                                           threads: threads, blockValues: blockValues, scratch: &scratch, into: sink))
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
        var result = MergeReport(architecture: detected.architecture.name, baseLayout: detected.layout,
                                 adapterLayout: adapter.layout, modulesMerged: adapter.modules.count + adapter.deltas.count,
                                 touchedTensors: placement.touchedTensors, tensorsWritten: specs.count, dataBytes: total,
                                 scale: scale, unmerged: unmerge, conversion: report, tensorsByDType: byDType,
                                 outputPath: output, outputFiles: files, elapsedSeconds: monotonicSeconds() - start)
        result.textEncoderModulesSkipped = adapter.textEncoderModules.count
        result.kinds = adapter.kinds.filter { $0 != "lora" || !adapter.modules.isEmpty }
        return result
    }

    /// What every merge checks and builds before writing: finite factors, an output that is not
    /// an input, something to merge, no unmerge the adapter cannot undo; the base's architecture
    /// (its transformer, for an all-in-one file), where each delta lands and the kernel.
    static func prepare(base: TensorCollection, adapter: LoRAAdapter, scale: Float, unmerge: Bool, output: String,
                        folder: Bool) throws -> (DetectedCheckpoint, DeltaPlacement, MergeKernel) {
        try checkFinite(adapter)
        try checkOutput(output, folder: folder, inputs: base.files.map(\.path) + (base.indexPath.map { [$0] } ?? []))
        if adapter.modules.isEmpty && adapter.deltas.isEmpty {
            throw LoRAError.nothingToMerge(file: adapter.sourceFile.isEmpty ? "adapter" : adapter.sourceFile,
                                           reason: "it adapts only text encoders (\(adapter.textEncoderModules.count) modules of \(adapter.components.joined(separator: ", ")))")
        }
        if unmerge && !adapter.magnitudes.isEmpty {
            throw LoRAMergeError.badOutput(path: output, reason: "a DoRA adapter cannot be unmerged (its magnitude rescaling is not undone by subtracting a delta)")
        }
        if unmerge && adapter.deltas.contains(where: \.replaces) {
            throw LoRAMergeError.badOutput(path: output, reason: "an adapter that replaces norm scales cannot be unmerged")
        }
        let detected = try Architecture.detect(base.transformerOnly().infos)
        var shapes: [String: [Int]] = [:]
        for info in base.infos { shapes[info.name] = info.shape }
        let placement = try DeltaPlacement(adapter: adapter, base: detected, shapes: shapes)
        return (detected, placement, MergeKernel(adapter: adapter, placement: placement, scale: scale, sign: unmerge ? -1 : 1))
    }

    /// Applies every slice of one base tensor (low-rank, other deltas, then DoRA) with the user's
    /// `scale`, as `merge` does: the whole exact merge of one tensor, for callers that hold it in
    /// memory (the runtime's adapters).
    public static func applyExactly(_ slices: [DeltaSlice], of adapter: LoRAAdapter, placement: DeltaPlacement, scale: Float,
                                    to values: inout [Float], columns: Int) throws {
        let kernel = MergeKernel(adapter: adapter, placement: placement, scale: scale)
        let rows = columns == 0 ? 0 : values.count / columns
        values.withUnsafeMutableBufferPointer { kernel.apply(slices, block: 0..<rows, to: $0, columns: columns) }
    }

    /// `rows` rows of `from` values, each followed by zeros up to `to` values.
    public static func widen(_ values: [Float], rows: Int, from: Int, to: Int) -> [Float] {
        var out = [Float](repeating: 0, count: rows * to)
        for r in 0..<rows {
            for c in 0..<from { out[r * to + c] = values[r * from + c] }
        }
        return out
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
        let file = adapter.sourceFile.isEmpty ? "adapter" : adapter.sourceFile
        var others: [(String, [Float])] = adapter.deltas.flatMap { d in d.factors.map { ($0.key, $0.matrix.values) } }
        others += adapter.magnitudes.values.map { ($0.key, $0.values) }
        for (key, values) in others {
            let nan = values.reduce(0) { $0 + ($1.isNaN ? 1 : 0) }
            let inf = values.reduce(0) { $0 + ($1.isInfinite ? 1 : 0) }
            if nan + inf > 0 {
                throw LoRAError.nonFinite(file: file, key: key, byteOffset: adapter.keyOffsets[key], nanCount: nan, infCount: inf)
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
