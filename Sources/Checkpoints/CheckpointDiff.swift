import SafeTensors
import SystemSupport

/// How one tensor of checkpoint A compares with its counterpart in checkpoint B.
public struct TensorComparison: Sendable, Hashable {
    /// The verdict on one tensor.
    public enum Status: String, Sendable, Hashable, CaseIterable {
        /// Same dtype, same shape, same bytes.
        case identical
        /// Values equal within the tolerance (exactly equal with tolerance 0), bytes not identical
        /// (for instance another dtype holding the same numbers).
        case equal
        /// Values differ beyond the tolerance, or NaNs sit in different places.
        case differ
        /// The shapes differ; values are not compared.
        case shape
        /// Present in A only.
        case onlyInA = "only-in-A"
        /// Present in B only.
        case onlyInB = "only-in-B"
        /// Bytes differ and the values cannot be compared as real numbers (C64).
        case incomparable
    }

    /// The tensor's name (A's name; B's own name for tensors only in B).
    public var name: String
    /// The verdict.
    public var status: Status
    /// A's dtype, if present in A.
    public var dtypeA: DType?
    /// B's dtype, if present in B (nil also when B's mapped tensor mixes dtypes).
    public var dtypeB: DType?
    /// A's shape, if present in A.
    public var shapeA: [Int]?
    /// B's shape, if present in B.
    public var shapeB: [Int]?
    /// Number of value pairs compared.
    public var elementCount: Int = 0
    /// Largest |a − b| (∞ when an infinity meets a different value).
    public var maxAbsDifference: Double = 0
    /// Largest |a − b| / max(|a|, |b|, tiny).
    public var maxRelativeDifference: Double = 0
    /// √(mean (a − b)²) over the pairs whose difference is finite.
    public var rmsDifference: Double = 0
    /// Pairs where exactly one side is NaN.
    public var nanMismatches: Int = 0

    /// True when both sides exist and their dtypes differ.
    public var dtypeChanged: Bool { dtypeA != nil && dtypeB != nil && dtypeA != dtypeB }
}

/// The comparison of two checkpoints tensor by tensor: which tensors exist on one side only,
/// which changed shape or dtype, and for the rest whether their bytes are identical and how far
/// their values are apart — streamed in bounded chunks, so two 24 GB files compare in the memory
/// of a few chunks.
public struct CheckpointDiff: Sendable {
    /// What to compare and how strictly.
    public struct Options: Sendable, Hashable {
        /// When A and B use different key layouts (or key prefixes), compare A's tensors with B's
        /// tensors converted to A's layout (row slices of B's tensors), so an original file can be
        /// compared with a diffusers folder.
        public var mapLayouts: Bool
        /// Values count as equal when every |a − b| is at most this (0: exactly equal values).
        public var tolerance: Double
        /// Elements decoded per step.
        public var chunkElements: Int

        /// Creates options; by default exact comparison without layout mapping.
        public init(mapLayouts: Bool = false, tolerance: Double = 0, chunkElements: Int = 1 << 16) {
            self.mapLayouts = mapLayouts
            self.tolerance = tolerance
            self.chunkElements = chunkElements
        }
    }

    /// The layouts involved when B was mapped onto A's layout.
    public struct LayoutMapping: Sendable, Hashable {
        /// The architecture both sides were recognised as (A's).
        public var architecture: String
        /// A's layout (the one compared in).
        public var layoutA: KeyLayout
        /// A's key prefix.
        public var prefixA: KeyPrefix
        /// B's layout (converted from).
        public var layoutB: KeyLayout
        /// B's key prefix.
        public var prefixB: KeyPrefix
    }

    /// One comparison per tensor: A's tensors in A's order, then B's tensors absent from A.
    public var tensors: [TensorComparison]
    /// The options used.
    public var options: Options
    /// Set when B was mapped onto A's layout.
    public var mapping: LayoutMapping?

    /// Number of tensors with the given status.
    public func count(_ status: TensorComparison.Status) -> Int { tensors.filter { $0.status == status }.count }
    /// Tensors whose bytes are identical.
    public var identicalCount: Int { count(.identical) }
    /// Tensors whose values are equal within the tolerance but whose bytes are not identical.
    public var equalCount: Int { count(.equal) }
    /// Tensors present on both sides that differ (values, shape, or incomparable bytes).
    public var differCount: Int { count(.differ) + count(.shape) + count(.incomparable) }
    /// Tensors present in A only.
    public var onlyInACount: Int { count(.onlyInA) }
    /// Tensors present in B only.
    public var onlyInBCount: Int { count(.onlyInB) }
    /// True when anything differs beyond the tolerance: the checkpoints are not the same.
    public var differs: Bool { differCount + onlyInACount + onlyInBCount > 0 }

    /// Compares `a` with `b`. Throws `CheckpointError` when `mapLayouts` is asked for and either
    /// side is not a recognisable transformer, or they are of different families. `progress(bytesDone, bytesTotal)` counts A's bytes.
    static func compareFiles(_ a: TensorCollection, _ b: TensorCollection, options: Options = Options(),
                               progress: ((Int, Int) -> Void)? = nil) throws -> CheckpointDiff {
        var operandsB: [Operand] = b.entries.map(Operand.init(entry:))
        var mapping: LayoutMapping? = nil
        if options.mapLayouts {
            let detectedA = try Architecture.detect(a.infos)
            let detectedB = try Architecture.detect(b.infos)
            guard detectedA.architecture.family == detectedB.architecture.family else {
                throw CheckpointError.differentFamilies(a: "\(detectedA.architecture.name) (\(detectedA.layout.rawValue) layout)",
                                                        b: "\(detectedB.architecture.name) (\(detectedB.layout.rawValue) layout)")
            }
            if detectedA.layout != detectedB.layout || detectedA.prefix != detectedB.prefix {
                let plan = ConversionPlan(source: detectedB, to: detectedA.layout, prefix: detectedA.prefix)
                operandsB = try plan.outputs.map { try Operand(planned: $0, in: b) }
                mapping = LayoutMapping(architecture: detectedA.architecture.name,
                                        layoutA: detectedA.layout, prefixA: detectedA.prefix,
                                        layoutB: detectedB.layout, prefixB: detectedB.prefix)
            }
        }
        let byNameB = Dictionary(operandsB.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
        let total = a.entries.reduce(0) { $0 + $1.info.byteCount }
        var done = 0
        var out: [TensorComparison] = []
        var seen = Set<String>()
        for entry in a.entries {
            let opA = Operand(entry: entry)
            if let opB = byNameB[opA.name] {
                seen.insert(opA.name)
                let before = done
                out.append(compare(opA, opB, options: options) { progress?(before + $0, total) })
            } else {
                out.append(TensorComparison(name: opA.name, status: .onlyInA, dtypeA: opA.dtype, shapeA: opA.shape))
            }
            done += entry.info.byteCount
            progress?(done, total)
        }
        for opB in operandsB where !seen.contains(opB.name) {
            out.append(TensorComparison(name: opB.name, status: .onlyInB, dtypeB: opB.dtype, shapeB: opB.shape))
        }
        return CheckpointDiff(tensors: out, options: options, mapping: mapping)
    }

    /// Compares one pair of tensors present on both sides.
    static func compare(_ a: Operand, _ b: Operand, options: Options, progress: (Int) -> Void) -> TensorComparison {
        var result = TensorComparison(name: a.name, status: .identical, dtypeA: a.dtype, dtypeB: b.dtype,
                                      shapeA: a.shape, shapeB: b.shape)
        guard a.shape == b.shape else {
            result.status = .shape
            return result
        }
        result.elementCount = a.elementCount
        if a.dtype != nil, a.dtype == b.dtype, a.bytesEqual(b) {
            a.release()
            b.release()
            progress(a.byteCount)
            return result
        }
        guard a.canDecode, b.canDecode else {
            result.status = .incomparable
            return result
        }
        var accumulator = DifferenceAccumulator()
        let chunk = max(8, options.chunkElements / 8 * 8)
        let count = a.elementCount
        let bytesPerElement = Double(a.byteCount) / Double(max(count, 1))
        withUnsafeTemporaryAllocation(of: Float.self, capacity: 2 * min(chunk, max(count, 1))) { scratch in
            let half = scratch.count / 2
            let left = UnsafeMutableBufferPointer(rebasing: scratch[0..<half])
            let right = UnsafeMutableBufferPointer(rebasing: scratch[half...])
            var position = 0
            while position < count {
                let n = min(half, count - position)
                a.decode(position..<(position + n), into: left)
                b.decode(position..<(position + n), into: right)
                accumulator.add(UnsafeBufferPointer(rebasing: left[0..<n]), UnsafeBufferPointer(rebasing: right[0..<n]))
                position += n
                progress(Int(Double(position) * bytesPerElement))
            }
        }
        a.release()
        b.release()
        result.maxAbsDifference = accumulator.maxAbs
        result.maxRelativeDifference = accumulator.maxRelative
        result.rmsDifference = count > 0 ? (accumulator.sumSquares / Double(count)).squareRoot() : 0
        result.nanMismatches = accumulator.nanMismatches
        result.status = accumulator.nanMismatches == 0 && accumulator.maxAbs <= options.tolerance ? .equal : .differ
        return result
    }
}

/// Running maxima and sums of the differences between two value streams.
struct DifferenceAccumulator {
    var maxAbs = 0.0
    var maxRelative = 0.0
    var sumSquares = 0.0
    var nanMismatches = 0

    /// Below this magnitude both values count as zero for the relative difference.
    static let tiny = Double(Float.leastNormalMagnitude)

    mutating func add(_ a: UnsafeBufferPointer<Float>, _ b: UnsafeBufferPointer<Float>) {
        for i in 0..<a.count {
            let x = a[i], y = b[i]
            if x == y { continue }  // also +0 = −0 and equal infinities
            if x.isNaN || y.isNaN {
                if !(x.isNaN && y.isNaN) { nanMismatches += 1 }
                continue
            }
            let dx = Double(x), dy = Double(y)
            let diff = abs(dx - dy)
            if diff > maxAbs { maxAbs = diff }
            if diff.isFinite {
                sumSquares += diff * diff
                let relative = diff / max(abs(dx), abs(dy), DifferenceAccumulator.tiny)
                if relative > maxRelative { maxRelative = relative }
            } else {
                // An infinity met a finite value or the opposite infinity: as far apart as can be.
                maxRelative = .infinity
            }
        }
    }
}

/// One side of a comparison: a tensor, or for a mapped checkpoint the concatenation of row slices
/// of several tensors (as a `PlannedTensor` describes it).
struct Operand {
    /// A run of elements of one stored tensor.
    struct Segment {
        var entry: TensorEntry
        var elements: Range<Int>
    }

    var name: String
    var shape: [Int]
    var segments: [Segment]

    init(entry: TensorEntry) {
        name = entry.info.name
        shape = entry.info.shape
        segments = [Segment(entry: entry, elements: 0..<entry.info.elementCount)]
    }

    /// The planned tensor's pieces, located in `collection`.
    init(planned: PlannedTensor, in collection: TensorCollection) throws {
        name = planned.name
        shape = planned.shape
        segments = try planned.pieces.map { piece in
            guard let entry = collection.entry(piece.source) else {
                throw SafeTensorsError.tensorNotFound(file: collection.path, tensor: piece.source)
            }
            let rowElements = entry.info.shape.dropFirst().reduce(1, *)
            return Segment(entry: entry, elements: (piece.rows.lowerBound * rowElements)..<(piece.rows.upperBound * rowElements))
        }
    }

    var elementCount: Int { shape.reduce(1, *) }

    /// The dtype shared by every segment, nil when they mix dtypes.
    var dtype: DType? {
        guard let first = segments.first?.entry.info.dtype else { return nil }
        return segments.allSatisfy { $0.entry.info.dtype == first } ? first : nil
    }

    var canDecode: Bool { segments.allSatisfy { $0.entry.encoding?.isDecodable ?? FloatCodec.canDecode($0.entry.info.dtype) } }

    var byteCount: Int {
        segments.reduce(0) { total, s in
            guard s.entry.isPlain else { return total + s.entry.info.byteCount * s.elements.count / max(1, s.entry.info.elementCount) }
            return total + s.entry.info.dtype.bits * s.elements.count / 8
        }
    }

    /// Whether every segment starts and ends on a byte boundary (always, except for odd runs of
    /// sub-byte kinds).
    var byteAligned: Bool {
        // Block-encoded (GGUF) segments are compared by value, never byte for byte.
        segments.allSatisfy { s in
            guard s.entry.isPlain else { return false }
            let bits = s.entry.info.dtype.bits
            return (s.elements.lowerBound * bits) % 8 == 0 && (s.elements.upperBound * bits) % 8 == 0
        }
    }

    /// Calls `body` with each segment's bytes, in order.
    func forEachByteRun(_ body: (UnsafeRawBufferPointer) -> Bool) {
        for s in segments {
            let bits = s.entry.info.dtype.bits
            let info = s.entry.info
            let start = s.entry.file.fileOffset(of: info) + s.elements.lowerBound * bits / 8
            let end = s.entry.file.fileOffset(of: info) + s.elements.upperBound * bits / 8
            if !s.entry.file.withBytes(fileRange: start..<end, body) { return }
        }
    }

    /// True when both operands hold the same bytes (same dtype assumed), compared run against run
    /// over the mapped files.
    func bytesEqual(_ other: Operand) -> Bool {
        guard byteAligned, other.byteAligned, byteCount == other.byteCount else { return false }
        // Flatten the other side's runs lazily: walk both lists of runs in step.
        var runsB: [(SafeTensorsFile, Range<Int>)] = []
        for s in other.segments {
            let bits = s.entry.info.dtype.bits
            let base = s.entry.file.fileOffset(of: s.entry.info)
            runsB.append((s.entry.file, (base + s.elements.lowerBound * bits / 8)..<(base + s.elements.upperBound * bits / 8)))
        }
        var indexB = 0, offsetB = 0
        var equal = true
        forEachByteRun { runA in
            var position = 0
            while position < runA.count {
                guard indexB < runsB.count else { equal = false; return false }
                let (file, range) = runsB[indexB]
                let n = min(runA.count - position, range.count - offsetB)
                let same = file.withBytes(fileRange: (range.lowerBound + offsetB)..<(range.lowerBound + offsetB + n)) { runB in
                    n == 0 || SystemSupport.bytesEqual(runA.baseAddress! + position, runB.baseAddress!, count: n)
                }
                if !same { equal = false; return false }
                position += n
                offsetB += n
                if offsetB == range.count { indexB += 1; offsetB = 0 }
            }
            return true
        }
        return equal
    }

    /// Decodes elements `range` of the operand into `output` (at least `range.count` long).
    func decode(_ range: Range<Int>, into output: UnsafeMutableBufferPointer<Float>) {
        var segmentStart = 0
        var written = 0
        for s in segments {
            let segmentRange = segmentStart..<(segmentStart + s.elements.count)
            segmentStart = segmentRange.upperBound
            let lo = max(range.lowerBound, segmentRange.lowerBound), hi = min(range.upperBound, segmentRange.upperBound)
            guard lo < hi else { continue }
            let first = s.elements.lowerBound + (lo - segmentRange.lowerBound)
            Operand.decode(s.entry, elements: first..<(first + hi - lo),
                           into: UnsafeMutableBufferPointer(rebasing: output[written..<(written + hi - lo)]))
            written += hi - lo
        }
    }

    /// Decodes elements of one stored tensor. Sub-byte kinds decode from the byte boundary at or
    /// before the first element (at most 3 extra elements) and drop the extras.
    static func decode(_ entry: TensorEntry, elements: Range<Int>, into output: UnsafeMutableBufferPointer<Float>) {
        if !entry.isPlain { return decodeBlocks(entry, elements: elements, into: output) }
        let info = entry.info
        let bits = info.dtype.bits
        let quantum = bits % 8 == 0 ? 1 : (bits == 4 ? 2 : 4)
        let alignedStart = elements.lowerBound / quantum * quantum
        let skip = elements.lowerBound - alignedStart
        let startByte = entry.file.fileOffset(of: info) + alignedStart * bits / 8
        let endByte = entry.file.fileOffset(of: info) + info.byteCount
        entry.file.withBytes(fileRange: startByte..<endByte) { raw in
            if skip == 0 {
                FloatCodec.decode(info.dtype, from: raw, into: output)
            } else {
                withUnsafeTemporaryAllocation(of: Float.self, capacity: elements.count + skip) { scratch in
                    FloatCodec.decode(info.dtype, from: raw, into: scratch)
                    for i in 0..<elements.count { output[i] = scratch[skip + i] }
                }
            }
        }
    }

    /// Decodes elements of a block-encoded (GGUF) tensor: the dim-0 rows covering them (the whole
    /// tensor for a 1-d one), then the elements asked for. `canDecode` was checked by the caller.
    static func decodeBlocks(_ entry: TensorEntry, elements: Range<Int>, into output: UnsafeMutableBufferPointer<Float>) {
        guard entry.rowByteCount != nil else {
            guard let all = try? entry.floats() else { preconditionFailure("undecodable blocks in \(entry.info.name)") }
            for i in 0..<elements.count { output[i] = all[elements.lowerBound + i] }
            return
        }
        let rowElements = max(1, entry.rowElements)
        let firstRow = elements.lowerBound / rowElements
        let lastRow = (elements.upperBound + rowElements - 1) / rowElements
        let skip = elements.lowerBound - firstRow * rowElements
        withUnsafeTemporaryAllocation(of: Float.self, capacity: (lastRow - firstRow) * rowElements) { scratch in
            guard (try? entry.decodeRows(firstRow..<lastRow, into: scratch)) != nil else {
                preconditionFailure("undecodable blocks in \(entry.info.name)")
            }
            for i in 0..<elements.count { output[i] = scratch[skip + i] }
        }
    }

    /// Lets the kernel drop the pages just compared from the mappings.
    func release() {
        for s in segments {
            let start = s.entry.file.fileOffset(of: s.entry.info)
            s.entry.file.advise(.dontNeed, fileRange: start..<(start + s.entry.info.byteCount))
        }
    }
}
