import BLAS
import SafeTensors
import SystemSupport

/// The arithmetic of one merge, applied to a block of one base tensor's rows: low-rank slices
/// (factor·B·A by sgemm, straight into the rows), then the other deltas (LoKr, LoHa, full,
/// replacement), then the DoRA rescaling. Each output row depends only on its own row of W and
/// of ΔW, so a tensor merged block by block — on several threads — has the same values as one
/// merged whole.
struct MergeKernel: Sendable {
    /// The adapter whose modules the slices index.
    let adapter: LoRAAdapter
    /// Per low-rank module: sign · user scale (1 for DoRA modules) · α/r.
    let factors: [Float]
    /// Per other delta: sign · user scale (1 for DoRA modules).
    let deltaFactors: [Float]
    /// Per `DeltaPlacement.magnitudeModules` entry: its DoRA magnitude.
    let magnitudes: [DoRAMagnitude]
    /// The user's multiplier, which DoRA applies through the rescaling.
    let scale: Float

    /// The kernel of `adapter` placed by `placement`, at the user's `scale`; `sign` −1 unmerges.
    init(adapter: LoRAAdapter, placement: DeltaPlacement, scale: Float, sign: Float = 1) {
        self.adapter = adapter
        // DoRA modules take their own ΔW whole; the user's scale enters through the rescaling
        // (LyCORIS's weight_decompose with a multiplier).
        factors = adapter.modules.map { sign * (adapter.magnitudes[$0.name] == nil ? scale : 1) * $0.scale(rsLoRA: adapter.rsLoRA) }
        deltaFactors = adapter.deltas.map { sign * (adapter.magnitudes[$0.name] == nil ? scale : 1) }
        magnitudes = placement.magnitudeModules.map { adapter.magnitudes[$0]! }
        self.scale = scale
    }

    /// Applies `slices` (whose target rows are the tensor's) to rows `block` of the tensor, held
    /// in `values` (`block.count × columns` values, row `block.lowerBound` first).
    func apply(_ slices: [DeltaSlice], block: Range<Int>, to values: UnsafeMutableBufferPointer<Float>, columns: Int) {
        let local = Self.clip(slices, to: block)
        guard !local.isEmpty else { return }
        applyLowRank(local, to: values, columns: columns)
        applyDeltas(local, to: values, columns: columns)
        rescale(local, to: values, columns: columns)
    }

    /// The parts of `slices` that land in rows `block`, their target rows made relative to the
    /// block's first row (source rows move with them).
    static func clip(_ slices: [DeltaSlice], to block: Range<Int>) -> [DeltaSlice] {
        slices.compactMap { slice in
            let lo = max(slice.targetRows.lowerBound, block.lowerBound)
            let hi = min(slice.targetRows.upperBound, block.upperBound)
            guard lo < hi else { return nil }
            var part = slice
            let skip = lo - slice.targetRows.lowerBound
            part.sourceRows = (slice.sourceRows.lowerBound + skip)..<(slice.sourceRows.lowerBound + skip + hi - lo)
            part.targetRows = (lo - block.lowerBound)..<(hi - block.lowerBound)
            return part
        }
    }

    /// values[targetRows] += factor · B[sourceRows] · A (or factor · bias), by sgemm with β = 1
    /// straight into the rows (ΔW is never materialised).
    private func applyLowRank(_ slices: [DeltaSlice], to values: UnsafeMutableBufferPointer<Float>, columns: Int) {
        for slice in slices where slice.source == .lowRank {
            let module = adapter.modules[slice.module]
            let factor = factors[slice.module]
            if slice.isBias {
                guard let bias = module.upBias else { continue }
                for (s, t) in zip(slice.sourceRows, slice.targetRows) { values[t] += factor * bias.values[s] }
                continue
            }
            let r = module.rank
            guard r > 0, let out = values.baseAddress else { continue }
            // Invariant (checked by DeltaPlacement): targetRows lie inside the tensor, columns ==
            // A's columns, sourceRows lie inside B; `clip` keeps them inside the block.
            module.up.values.withUnsafeBufferPointer { up in
                module.down.values.withUnsafeBufferPointer { down in
                    BLAS.gemm(.none, .none, m: slice.sourceRows.count, n: columns, k: r, alpha: factor,
                              a: up.baseAddress! + slice.sourceRows.lowerBound * r, lda: r,
                              b: down.baseAddress!, ldb: columns, beta: 1,
                              c: out + slice.targetRows.lowerBound * columns, ldc: columns)
                }
            }
        }
    }

    /// Adds each LoKr/LoHa/full slice's rows of factor·ΔW (a replacement sets them).
    private func applyDeltas(_ slices: [DeltaSlice], to values: UnsafeMutableBufferPointer<Float>, columns: Int) {
        for slice in slices where slice.source == .weightDelta {
            let delta = adapter.deltas[slice.module]
            let width = slice.isBias ? 1 : columns
            // ΔW is formed 256 rows at a time: peak memory stays a small block.
            var start = 0
            while start < slice.sourceRows.count {
                let count = min(256, slice.sourceRows.count - start)
                let source = (slice.sourceRows.lowerBound + start)..<(slice.sourceRows.lowerBound + start + count)
                let target = values.baseAddress! + (slice.targetRows.lowerBound + start) * width
                delta.accumulate(rows: source, factor: deltaFactors[slice.module],
                                 into: UnsafeMutableBufferPointer(start: target, count: count * width))
                start += count
            }
        }
    }

    /// Σ v², accumulated in Float64 in eight independent lanes (then added together), so the
    /// loop runs at SIMD width instead of one dependent addition per value.
    static func sumOfSquares(_ values: UnsafeBufferPointer<Float>) -> Double {
        var lanes = SIMD8<Double>()
        let whole = values.count / 8 * 8
        var i = 0
        while i < whole {
            let v = SIMD8<Double>(UnsafeRawPointer(values.baseAddress! + i).loadUnaligned(as: SIMD8<Float>.self))
            lanes += v * v
            i += 8
        }
        var sum = lanes.sum()
        while i < values.count { sum += Double(values[i]) * Double(values[i]); i += 1 }
        return sum
    }

    /// DoRA: rows of W + ΔW rescaled to the magnitude, W′ = (W + ΔW)·(s·(m/‖W + ΔW‖ − 1) + 1) per
    /// output row (LyCORIS weight_decompose; s = 1 gives PEFT's m·(W + ΔW)/‖W + ΔW‖).
    private func rescale(_ slices: [DeltaSlice], to values: UnsafeMutableBufferPointer<Float>, columns: Int) {
        for slice in slices where slice.source == .magnitude {
            let m = magnitudes[slice.module]
            for (s, t) in zip(slice.sourceRows, slice.targetRows) {
                let row = UnsafeMutableBufferPointer(rebasing: values[(t * columns)..<((t + 1) * columns)])
                var norm = Float(Self.sumOfSquares(UnsafeBufferPointer(row)).squareRoot())
                if m.addsEpsilon { norm += Float.ulpOfOne }
                let factor = scale * (m.values[s] / norm - 1) + 1
                for c in row.indices { row[c] *= factor }
            }
        }
    }
}

extension LoRAMerge {
    /// Values per row block of a streamed merge (4 MiB of Float32): small enough that a few
    /// blocks per thread stay far below one large tensor, large enough for sgemm to run well.
    public static let defaultBlockValues = 1 << 20

    /// Writes base tensor `entry` with `slices` merged to `sink`, block of rows by block of rows:
    /// blocks are read (with `pread`, not through the mapping), decoded, merged, encoded and
    /// written in place (`pwrite`) by `threads` workers at once, so resident memory stays one
    /// block per worker, whatever the tensor's size. `widened` gives the columns a BFL Control input
    /// layer grows to (zeros to the right of the base's).
    static func mergeRows(_ entry: TensorEntry, slices: [DeltaSlice], kernel: MergeKernel, widened: Int?,
                          threads: Int, blockValues: Int, scratch: inout [BlockScratch],
                          into sink: TensorSink) throws -> ConversionReport {
        let rows = entry.rowCount
        let inColumns = entry.rowElements
        let columns = widened ?? inColumns
        let dtype = sink.info.dtype
        // A block is a whole number of output bytes (always, except for sub-byte dtypes, whose
        // tensors are then merged as one block).
        let perBlock = dtype.byteCount(elements: columns) == nil ? max(rows, 1) : max(1, max(1, blockValues) / max(columns, 1))
        let blockCount = rows == 0 ? 0 : (rows + perBlock - 1) / perBlock
        let workers = max(1, min(threads, blockCount))
        while scratch.count < workers { scratch.append(BlockScratch()) }
        var report = ConversionReport()
        // A wave is a few blocks per worker, taken as workers become free; each worker writes
        // its blocks in place (pwrite), and the wave is appended once all are written.
        let waveBlocks = workers == 1 ? 1 : 4 * workers
        let rowBytes = dtype.byteCount(elements: columns) ?? 0
        var first = 0
        while first < blockCount {
            let count = min(waveBlocks, blockCount - first)
            let firstRow = first * perBlock
            let blocks = (0..<count).map { i in ((first + i) * perBlock)..<min(rows, (first + i + 1) * perBlock) }
            if let storedRowBytes = entry.rowByteCount, first + count < blockCount {
                // Ask the kernel to read the next wave's rows now, in the background, so the
                // workers' reads of it find them in memory while this wave computes.
                let start = entry.file.fileOffset(of: entry.info) + min(rows, firstRow + count * perBlock) * storedRowBytes
                let end = entry.file.fileOffset(of: entry.info) + min(rows, firstRow + 2 * count * perBlock) * storedRowBytes
                entry.file.advise(.willNeed, fileRange: start..<end)
            }
            let scratch = scratch
            for worker in scratch { worker.reset() }
            try sink.beginPositionedWrites()
            // sgemm runs on each worker's own thread (the merge holds OpenBLAS to one thread).
            parallelForDynamic(count, threads: workers) { w, i in
                scratch[w].merge(entry, block: blocks[i], slices: slices, kernel: kernel, inColumns: inColumns,
                                 columns: columns, dtype: dtype, sink: sink, at: (blocks[i].lowerBound - firstRow) * rowBytes)
            }
            for worker in scratch { report.merge(try worker.result.get()) }
            let last = blocks.last!.upperBound
            try sink.advance(by: dtype.byteCount(elements: (last - firstRow) * columns) ?? 0)
            first += count
        }
        return report
    }
}

/// One worker's buffers for a streamed merge: the block's values (widened when the layer
/// grows), the base's narrower rows, its stored bytes, the encoded bytes and what encoding
/// reported. Buffers grow to the largest block and are reused from tensor to tensor (fresh
/// multi-megabyte buffers per tensor would cost a page fault per 4 KiB each time). A class
/// because each worker mutates its own instance while the others run.
final class BlockScratch {
    private var values: [Float] = []
    private var narrow: [Float] = []
    private var encoded: [UInt8] = []
    /// The base's stored bytes of a block, read with one `pread`.
    private var stored: [UInt8] = []
    /// What merging the blocks since `reset()` gave: their reports, or the first error.
    private(set) var result: Result<ConversionReport, SafeTensorsError> = .success(ConversionReport())

    /// Starts a new wave.
    func reset() { result = .success(ConversionReport()) }

    /// Grows `buffer` to at least `count` elements.
    private static func reserve<T: Numeric>(_ buffer: inout [T], _ count: Int) {
        if buffer.count < count { buffer = [T](repeating: 0, count: count) }
    }

    /// Rows `block` of `entry` decoded into `output`, their bytes read into `stored` (one system
    /// call, no page faults on the mapping).
    private func decode(_ entry: TensorEntry, _ block: Range<Int>, into output: UnsafeMutableBufferPointer<Float>) throws(SafeTensorsError) {
        Self.reserve(&stored, (entry.rowByteCount ?? 0) * block.count)
        try stored.withUnsafeMutableBytes { raw in
            Result { () throws(SafeTensorsError) in try entry.decodeRows(block, into: output, reading: raw) }
        }.get()
    }

    /// Decodes rows `block` of `entry` (widened to `columns` when the layer grows), applies the
    /// kernel, encodes the rows as `dtype` and writes them at `offset` past the sink's end; the
    /// outcome joins `result` (nothing more is done after an error).
    func merge(_ entry: TensorEntry, block: Range<Int>, slices: [DeltaSlice], kernel: MergeKernel,
               inColumns: Int, columns: Int, dtype: DType, sink: TensorSink, at offset: Int) {
        guard case .success(var report) = result else { return }
        let count = block.count * columns
        let encodedCount = dtype.byteCount(elements: count) ?? 0
        Self.reserve(&values, count)
        Self.reserve(&encoded, encodedCount)
        if columns != inColumns { Self.reserve(&narrow, block.count * inColumns) }
        do throws(SafeTensorsError) {
            try values.withUnsafeMutableBufferPointer { (all) throws(SafeTensorsError) in
                let out = UnsafeMutableBufferPointer(rebasing: all[0..<count])
                if columns != inColumns {
                    try narrow.withUnsafeMutableBufferPointer { (all) throws(SafeTensorsError) in
                        let source = UnsafeMutableBufferPointer(rebasing: all[0..<(block.count * inColumns)])
                        try decode(entry, block, into: source)
                        for r in 0..<block.count {
                            for c in 0..<columns { out[r * columns + c] = c < inColumns ? source[r * inColumns + c] : 0 }
                        }
                    }
                } else {
                    try decode(entry, block, into: out)
                }
                kernel.apply(slices, block: block, to: out, columns: columns)
            }
            report.merge(values.withUnsafeBufferPointer { all in
                encoded.withUnsafeMutableBytes { raw in
                    FloatCodec.encode(dtype, from: UnsafeBufferPointer(rebasing: all[0..<count]),
                                      into: UnsafeMutableRawBufferPointer(rebasing: raw[0..<encodedCount]))
                }
            })
            try encoded.withUnsafeBytes { raw in
                Result { () throws(SafeTensorsError) in
                    try sink.write(UnsafeRawBufferPointer(rebasing: raw[0..<encodedCount]), atTensorOffset: offset)
                }
            }.get()
            result = .success(report)
        } catch {
            result = .failure(error)
        }
    }
}
