/// Summary statistics of one tensor's values, computed in a single streamed pass.
///
/// `min`, `max`, `mean` and `std` describe the finite values only; NaNs and infinities are counted
/// apart. `std` is the population standard deviation. Values are first widened to `Float` by
/// `FloatCodec` (so F64 values beyond Float's range count as infinities, and large 64-bit integers
/// are rounded); the sums are kept in `Double`.
public struct TensorStatistics: Sendable, Hashable {
    /// Number of elements.
    public var count: Int = 0
    /// Number of finite elements (the ones `min`…`std` describe).
    public var finiteCount: Int = 0
    /// Smallest finite value; nil when there is none.
    public var min: Float? = nil
    /// Largest finite value; nil when there is none.
    public var max: Float? = nil
    /// Mean of the finite values; nil when there is none.
    public var mean: Double? { finiteCount > 0 ? runningMean : nil }
    /// Population standard deviation of the finite values; nil when there is none.
    public var std: Double? { finiteCount > 0 ? (sumSquaredDeviations / Double(finiteCount)).squareRoot() : nil }
    /// Number of NaNs.
    public var nanCount: Int = 0
    /// Number of +∞.
    public var positiveInfinityCount: Int = 0
    /// Number of −∞.
    public var negativeInfinityCount: Int = 0
    /// Number of zeros (either sign).
    public var zeroCount: Int = 0

    /// Mean of the finite values seen so far.
    var runningMean: Double = 0
    /// Sum of squared deviations from the mean (Welford's M2) of the finite values seen so far.
    var sumSquaredDeviations: Double = 0

    /// Empty statistics (no values yet).
    public init() {}

    /// Statistics of an array of values; for tests and small tensors.
    public init(values: [Float]) {
        values.withUnsafeBufferPointer { add($0) }
    }

    /// Infinities of either sign.
    public var infinityCount: Int { positiveInfinityCount + negativeInfinityCount }

    /// Adds a run of values: each run is summarised exactly (two passes, in cache) and merged with
    /// what came before by the pairwise update of Chan et al., which stays accurate for billions
    /// of values where a naive sum of squares would cancel.
    public mutating func add(_ values: UnsafeBufferPointer<Float>) {
        guard !values.isEmpty else { return }
        count += values.count
        var chunkMin = Float.infinity, chunkMax = -Float.infinity
        var sum = 0.0
        var finite = 0
        for x in values {
            if x.isFinite {
                finite += 1
                sum += Double(x)
                if x < chunkMin { chunkMin = x }
                if x > chunkMax { chunkMax = x }
                if x == 0 { zeroCount += 1 }
            } else if x.isNaN {
                nanCount += 1
            } else if x > 0 {
                positiveInfinityCount += 1
            } else {
                negativeInfinityCount += 1
            }
        }
        guard finite > 0 else { return }
        let chunkMean = sum / Double(finite)
        var m2 = 0.0
        for x in values where x.isFinite {
            let d = Double(x) - chunkMean
            m2 += d * d
        }
        merge(finite: finite, mean: chunkMean, m2: m2, min: chunkMin, max: chunkMax)
    }

    /// Combines the statistics of another part of the same tensor into these.
    public mutating func merge(_ other: TensorStatistics) {
        count += other.count
        nanCount += other.nanCount
        positiveInfinityCount += other.positiveInfinityCount
        negativeInfinityCount += other.negativeInfinityCount
        zeroCount += other.zeroCount
        if other.finiteCount > 0, let lo = other.min, let hi = other.max {
            merge(finite: other.finiteCount, mean: other.runningMean, m2: other.sumSquaredDeviations, min: lo, max: hi)
        }
    }

    private mutating func merge(finite: Int, mean: Double, m2: Double, min lo: Float, max hi: Float) {
        let n = Double(finiteCount), m = Double(finite)
        let total = n + m
        let delta = mean - runningMean
        runningMean += delta * (m / total)
        sumSquaredDeviations += m2 + delta * delta * (n * m / total)
        finiteCount += finite
        min = Swift.min(min ?? lo, lo)
        max = Swift.max(max ?? hi, hi)
    }

    /// Elements decoded per step by the streaming functions: 64K values (256 KiB of Float),
    /// a whole number of bytes for every sub-byte kind.
    public static let defaultChunkElements = 1 << 16

    /// Statistics of `count` elements stored as `dtype` in `raw`, decoded `chunkElements` at a
    /// time through a bounded buffer. Nil when the dtype holds no real numbers (C64).
    /// `progress(elementsDone)` is called after each chunk.
    public static func compute(_ dtype: DType, count: Int, from raw: UnsafeRawBufferPointer,
                               chunkElements: Int = defaultChunkElements,
                               progress: ((Int) -> Void)? = nil) -> TensorStatistics? {
        guard FloatCodec.canDecode(dtype) else { return nil }
        // A chunk must start on a byte boundary: round it to a multiple of 8 elements.
        let chunk = Swift.max(8, chunkElements / 8 * 8)
        var stats = TensorStatistics()
        withUnsafeTemporaryAllocation(of: Float.self, capacity: Swift.min(chunk, Swift.max(count, 1))) { scratch in
            var done = 0
            while done < count {
                let n = Swift.min(scratch.count, count - done)
                let part = UnsafeMutableBufferPointer(rebasing: scratch[0..<n])
                // `done` is a multiple of 8, so `done * bits` is a whole number of bytes.
                FloatCodec.decode(dtype, from: UnsafeRawBufferPointer(rebasing: raw[(done * dtype.bits / 8)...]), into: part)
                stats.add(UnsafeBufferPointer(part))
                done += n
                progress?(done)
            }
        }
        return stats
    }
}

extension SafeTensorsFile {
    /// Streamed statistics of one tensor of this file, read through the mapping with read-ahead
    /// advice; never more than one chunk of decoded values in memory. Throws `conversion` for C64.
    /// `progress(bytesDone)` is called after each chunk.
    public func statistics(of info: TensorInfo, chunkElements: Int = TensorStatistics.defaultChunkElements,
                           progress: ((Int) -> Void)? = nil) throws(SafeTensorsError) -> TensorStatistics {
        guard FloatCodec.canDecode(info.dtype) else {
            throw .conversion(file: path, tensor: info.name, reason: "\(info.dtype.rawValue) values have no statistics (not real numbers)")
        }
        let range = fileOffset(of: info)..<(fileOffset(of: info) + info.byteCount)
        advise(.sequential, fileRange: range)
        let bits = info.dtype.bits
        let stats = withBytes(of: info) { raw in
            TensorStatistics.compute(info.dtype, count: info.elementCount, from: raw, chunkElements: chunkElements,
                                     progress: progress.map { report in { elements in report(elements * bits / 8) } })
        }
        // The pages were read once; drop them from this mapping so a 24 GB pass keeps a small footprint.
        advise(.dontNeed, fileRange: range)
        return stats ?? TensorStatistics()
    }
}

/// The statistics of one tensor of a collection, or why it has none.
public struct NamedTensorStatistics: Sendable, Hashable {
    /// The tensor's name.
    public var name: String
    /// The tensor's dtype.
    public var dtype: DType
    /// The statistics; nil when the tensor was skipped.
    public var statistics: TensorStatistics?
    /// Why the tensor was skipped (a non-numeric dtype), when it was.
    public var note: String?
}

/// Statistics of every tensor of a checkpoint, with totals.
public struct CollectionStatistics: Sendable, Hashable {
    /// One entry per tensor, in the collection's order.
    public var tensors: [NamedTensorStatistics]

    /// Total NaNs over every tensor.
    public var nanCount: Int { tensors.reduce(0) { $0 + ($1.statistics?.nanCount ?? 0) } }
    /// Total +∞ over every tensor.
    public var positiveInfinityCount: Int { tensors.reduce(0) { $0 + ($1.statistics?.positiveInfinityCount ?? 0) } }
    /// Total −∞ over every tensor.
    public var negativeInfinityCount: Int { tensors.reduce(0) { $0 + ($1.statistics?.negativeInfinityCount ?? 0) } }
    /// Number of tensors skipped because their dtype holds no real numbers.
    public var skippedCount: Int { tensors.filter { $0.statistics == nil }.count }
}

extension TensorCollection {
    /// Streams every tensor's values once and returns their statistics. Tensors whose dtype holds
    /// no real numbers (C64) are skipped with a note. `progress(bytesDone, bytesTotal)` is called
    /// between chunks.
    public func statistics(chunkElements: Int = TensorStatistics.defaultChunkElements,
                           progress: ((Int, Int) -> Void)? = nil) -> CollectionStatistics {
        let total = dataBytes
        var before = 0
        var out: [NamedTensorStatistics] = []
        out.reserveCapacity(entries.count)
        for entry in entries {
            let info = entry.info
            if let encoding = entry.encoding {
                let stats = encoding.isDecodable ? try? entry.blockStatistics { done in progress?(before + done, total) } : nil
                out.append(NamedTensorStatistics(name: info.name, dtype: info.dtype, statistics: stats,
                                                 note: stats == nil ? "skipped: \(encoding.name) blocks cannot be decoded" : nil))
            } else if FloatCodec.canDecode(info.dtype) {
                let stats = try? entry.file.statistics(of: info, chunkElements: chunkElements) { done in progress?(before + done, total) }
                out.append(NamedTensorStatistics(name: info.name, dtype: info.dtype, statistics: stats, note: nil))
            } else {
                out.append(NamedTensorStatistics(name: info.name, dtype: info.dtype, statistics: nil,
                                                 note: "skipped: \(info.dtype.rawValue) values are not real numbers"))
            }
            before += info.byteCount
            progress?(before, total)
        }
        return CollectionStatistics(tensors: out)
    }
}

extension TensorEntry {
    /// Streamed statistics of a block-encoded (GGUF) tensor: decoded a few dim-0 rows at a time
    /// (the whole tensor for a 0- or 1-d one). `progress(bytesDone)` is called after each step.
    func blockStatistics(progress: ((Int) -> Void)? = nil) throws(SafeTensorsError) -> TensorStatistics {
        var stats = TensorStatistics()
        guard let rowBytes = rowByteCount else {
            let all = try floats()
            all.withUnsafeBufferPointer { stats.add($0) }
            progress?(info.byteCount)
            return stats
        }
        let stepRows = Swift.max(1, TensorStatistics.defaultChunkElements / Swift.max(rowElements, 1))
        var scratch = [Float](repeating: 0, count: Swift.min(stepRows, rowCount) * rowElements)
        var row = 0
        while row < rowCount {
            let rows = Swift.min(stepRows, rowCount - row)
            try scratch.withUnsafeMutableBufferPointer { (all: inout UnsafeMutableBufferPointer<Float>) throws(SafeTensorsError) in
                let part = UnsafeMutableBufferPointer(rebasing: all[0..<(rows * rowElements)])
                try decodeRows(row..<(row + rows), into: part)
                stats.add(UnsafeBufferPointer(part))
            }
            row += rows
            progress?(row * rowBytes)
        }
        return stats
    }
}
