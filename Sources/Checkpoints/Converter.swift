import SafeTensors
import SystemSupport

/// What a finished conversion wrote.
public struct ConversionResult: Sendable {
    /// The architecture converted (`sd3.5-medium`, `flux-dev`, or a custom name).
    public var architecture: String
    /// Layout of the source keys.
    public var sourceLayout: KeyLayout
    /// Layout of the output keys.
    public var targetLayout: KeyLayout
    /// Number of tensors written.
    public var tensorsWritten: Int
    /// Bytes of tensor data written (headers excluded).
    public var dataBytes: Int
    /// Size of every output file together (headers, index and config.json included).
    public var fileBytes: Int
    /// Values clamped, NaNs replaced or without a code while narrowing the dtype.
    public var report: ConversionReport
    /// Values that exceeded the output dtype's range and were clamped to its largest finite value.
    public var saturated: Int { report.saturated }
    /// Number of output tensors of each dtype.
    public var tensorsByDType: [DType: Int]
    /// Every file written: the `.safetensors` file(s), then the index and `config.json` if any.
    public var outputPaths: [String]
    /// Wall-clock seconds the conversion took.
    public var elapsedSeconds: Double
}

/// Executes a `ConversionPlan` against a checkpoint, streaming: each output tensor is the
/// concatenation of row slices of source tensors, and each slice is a contiguous byte range of a
/// mapped source file, copied (or converted to the requested dtype) through the writer's bounded
/// buffers. No tensor is ever loaded whole into memory. Every output file appears atomically, and
/// a failed conversion leaves nothing behind.
public struct Converter: @unchecked Sendable {
    // @unchecked: TensorCollection is immutable after init.

    /// The checkpoint read.
    public let source: TensorCollection
    /// What is written: output names, shapes and the source slices of each.
    public let plan: ConversionPlan
    /// The dtype floating-point tensors are written in; nil keeps each tensor's own.
    public let dtype: DType?

    /// Detects the architecture and layout of `source` and plans its conversion to `layout`.
    /// `prefix` chooses the key prefix of an original-layout output (see `ConversionPlan`);
    /// `dtype`, when given, must be a floating-point kind (else `CheckpointError.notFloatingPoint`).
    /// Throws `CheckpointError` when the tensors are not a transformer of one of `families`.
    public init(source: TensorCollection, to layout: KeyLayout, prefix: KeyPrefix? = nil, dtype: DType? = nil,
                families: [ModelFamily] = ModelFamily.builtIn) throws(CheckpointError) {
        if let dtype, !FloatCodec.canEncode(dtype) {
            throw .notFloatingPoint(file: source.path, dtype: dtype, writing: "tensors")
        }
        let detected = try Architecture.detect(source.infos, families: families)
        self.init(source: source, plan: ConversionPlan(source: detected, to: layout, prefix: prefix), dtype: dtype)
    }

    /// A converter for a plan made beforehand.
    public init(source: TensorCollection, plan: ConversionPlan, dtype: DType? = nil) {
        self.source = source
        self.plan = plan
        self.dtype = dtype
    }

    /// Whether `write(to:)` produces a folder for `path`: when it ends with `/` or is an existing
    /// folder, when shards are asked for, or for a diffusers output not named `*.safetensors`.
    public static func writesFolder(_ path: String, layout: KeyLayout, shardSize: Int?) -> Bool {
        path.hasSuffix("/") || FileSystem.isFolder(path) || shardSize != nil
            || (layout == .diffusers && !path.hasSuffix(".safetensors"))
    }

    /// Base name of the weight files in a folder output (diffusers' name).
    public static let folderBaseName = "diffusion_pytorch_model"

    /// The output description of each planned tensor, in plan order (see `outputSpecs()`).
    func plannedSpecs() throws -> [TensorSpec] {
        try plan.outputs.map { planned in
            TensorSpec(name: planned.name, dtype: try outputDType(of: planned), shape: planned.shape)
        }
    }

    /// The `__metadata__` written: the source's, with `format: pt` added when absent.
    public var outputMetadata: [String: String] {
        var metadata: [String: String] = [:]
        for (key, value) in source.metadata ?? [] { metadata[key] = value }
        if metadata["format"] == nil { metadata["format"] = "pt" }
        return metadata
    }

    /// Writes the converted checkpoint to `path`: a single `.safetensors` file, or (see
    /// `writesFolder`) a folder holding `diffusion_pytorch_model.safetensors` or its shards and
    /// index, plus `config.json` when the output is in the diffusers layout. `shardSize` limits
    /// each shard's size in bytes. `progress(bytesDone, bytesTotal)` reports tensor data written.
    /// Refuses to overwrite the input; on any failure nothing new is left at `path`.
    @discardableResult
    func writeFiles(to path: String, shardSize: Int? = nil,
                      progress: ((Int, Int) -> Void)? = nil) throws -> ConversionResult {
        let start = monotonicSeconds()
        if let shardSize, shardSize <= 0 {
            throw SafeTensorsError.io(file: path, operation: "plan shards", message: "the shard size must be positive")
        }
        let specs = try outputSpecs()
        let byName = Dictionary(uniqueKeysWithValues: plan.outputs.map { ($0.name, $0) })
        let total = specs.reduce(0) { $0 + ($1.byteCount ?? 0) }
        var done = 0
        var report = ConversionReport()
        let produce: (TensorSink) throws -> Void = { sink in
            guard let planned = byName[sink.info.name] else {
                throw SafeTensorsError.tensorNotFound(file: path, tensor: sink.info.name)
            }
            try self.stream(planned, into: sink, report: &report) { bytes in
                done += bytes
                progress?(done, total)
            }
        }
        let paths: [String]
        if Converter.writesFolder(path, layout: plan.targetLayout, shardSize: shardSize) {
            paths = try writeFolder(path, specs: specs, shardSize: shardSize ?? Int.max, produce: produce)
        } else {
            try refuseOverwritingSource(path)
            try SafeTensorsWriter.write(to: path, specs: specs, metadata: outputMetadata, produce: produce)
            paths = [path]
        }
        var byDType: [DType: Int] = [:]
        for spec in specs { byDType[spec.dtype, default: 0] += 1 }
        return ConversionResult(
            architecture: plan.architecture.name, sourceLayout: plan.sourceLayout, targetLayout: plan.targetLayout,
            tensorsWritten: specs.count, dataBytes: total, fileBytes: paths.reduce(0) { $0 + FileSystem.size(of: $1) },
            report: report, tensorsByDType: byDType, outputPaths: paths,
            elapsedSeconds: monotonicSeconds() - start)
    }

    /// The dtype an output tensor is written in: the requested one for floating-point sources,
    /// the source's own otherwise.
    func outputDType(of planned: PlannedTensor) throws -> DType {
        guard let first = planned.pieces.first, let entry = source.entry(first.source) else {
            throw SafeTensorsError.tensorNotFound(file: source.path, tensor: planned.pieces.first?.source ?? planned.name)
        }
        let own = entry.info.dtype
        guard let dtype, own.isFloatingPoint else { return own }
        return dtype
    }

    /// Copies or converts the pieces of `planned` into `sink`, one contiguous source byte range
    /// per piece. `advanced(n)` is told of every `n` output bytes written.
    func stream(_ planned: PlannedTensor, into sink: TensorSink, report: inout ConversionReport,
                advanced: (Int) -> Void) throws {
        let rowElements = planned.shape.dropFirst().reduce(1, *)
        for piece in planned.pieces {
            guard let entry = source.entry(piece.source) else {
                throw SafeTensorsError.tensorNotFound(file: source.path, tensor: piece.source)
            }
            let info = entry.info
            let sourceRowElements = info.shape.dropFirst().reduce(1, *)
            let sourceRows = info.shape.first ?? 1
            guard sourceRowElements == rowElements, piece.rows.lowerBound >= 0, piece.rows.upperBound <= sourceRows,
                  let rowBytes = entry.rowByteCount ?? (entry.isPlain ? nil : 0) else {
                throw SafeTensorsError.conversion(
                    file: entry.file.path, tensor: info.name,
                    reason: "rows \(piece.rows) of shape \(info.shape) do not fit output '\(planned.name)' of shape \(planned.shape)")
            }
            let begin = entry.file.fileOffset(of: info) + piece.rows.lowerBound * rowBytes
            let range = begin..<(begin + piece.rows.count * rowBytes)
            let before = sink.written
            entry.file.advise(.sequential, fileRange: range)
            if !entry.isPlain && rowBytes == 0 {
                // A 0- or 1-d block tensor (small): decoded whole.
                let all = try entry.floats()
                try all[(piece.rows.lowerBound * rowElements)..<(piece.rows.upperBound * rowElements)].withUnsafeBufferPointer {
                    (part: UnsafeBufferPointer<Float>) throws in report.merge(try sink.write(floats: part))
                }
            } else if !entry.isPlain {
                // Blocks (GGUF quant types): decoded in steps of whole rows to Float, then
                // written in the output dtype; the mapping's pages are dropped once read.
                let stepRows = max(1, (16 << 20) / max(rowElements * 4, 1))
                var scratch = [Float](repeating: 0, count: min(stepRows, piece.rows.count) * rowElements)
                var row = 0
                while row < piece.rows.count {
                    let rows = min(stepRows, piece.rows.count - row)
                    let first = piece.rows.lowerBound + row
                    try scratch.withUnsafeMutableBufferPointer { (all: inout UnsafeMutableBufferPointer<Float>) throws in
                        let part = UnsafeMutableBufferPointer(rebasing: all[0..<(rows * rowElements)])
                        try entry.decodeRows(first..<(first + rows), into: part)
                        report.merge(try sink.write(floats: UnsafeBufferPointer(part)))
                    }
                    entry.file.advise(.dontNeed, fileRange: (range.lowerBound + row * rowBytes)..<(range.lowerBound + (row + rows) * rowBytes))
                    row += rows
                }
            } else if info.dtype == sink.info.dtype {
                // Same dtype: a kernel-side copy of the byte range (as cp does).
                try sink.copy(from: entry.file, fileRange: range)
            } else {
                // Converted in steps of whole rows (≥ 1 row, ~64 MiB), each dropped from the
                // mapping once written, so a 450 MB tensor never sits in memory whole.
                let stepRows = max(1, (64 << 20) / max(rowBytes, 1))
                var row = 0
                while row < piece.rows.count {
                    let rows = min(stepRows, piece.rows.count - row)
                    let stepRange = (range.lowerBound + row * rowBytes)..<(range.lowerBound + (row + rows) * rowBytes)
                    try entry.file.withBytes(fileRange: stepRange) { (raw: UnsafeRawBufferPointer) throws(SafeTensorsError) in
                        report.merge(try sink.write(converting: raw, from: info.dtype, count: rows * rowElements))
                    }
                    entry.file.advise(.dontNeed, fileRange: stepRange)
                    row += rows
                }
            }
            advanced(sink.written - before)
        }
    }
}
