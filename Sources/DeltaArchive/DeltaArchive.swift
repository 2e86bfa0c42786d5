import JSON
import SafeTensors
import SystemSupport

/// How `DeltaArchive.pack` stores tensors.
public struct PackOptions: Sendable {
    /// zstd compression level (see `Zstd.levels`) of the frames that are not literals-only.
    public var level: Int
    /// Code byte-planed float chunks as literals-only zstd frames (`Zstd.compressLiterals`: Huffman
    /// per 128 KiB block, no match search) — within a few per cent of the order-0 bound of the
    /// planes at several times the speed of any level. XOR-delta chunks get the smaller of that
    /// and a frame at `level` (sparse updates leave long zero runs that matches shrink further).
    /// False: every frame at `level`.
    public var literalsOnly: Bool
    /// Group the bytes of 16-, 32- and 64-bit float tensors into planes before compressing.
    public var bytePlanes: Bool
    /// With `literalsOnly`: store planes whose sampled entropy is at least `Zstd.rawPlaneEntropy`
    /// bits per byte as zstd raw blocks without any entropy work (`ZstdCompressor.compressPlanes`).
    /// False: every plane goes through zstd's literal stage, which decides per block (what writers
    /// before this option did; the frames are equally valid and read the same way).
    public var rawPlanes: Bool = true
    /// Worker threads for compression.
    public var threads: Int
    /// Store tensors that also exist in this reference (same name, dtype, shape) as XOR deltas.
    public var reference: DeltaReference?
    /// The base model's fingerprint (`BaseFingerprint.compute`), recorded verbatim.
    public var baseFingerprint: String?
    /// The adapter configuration (JSON text); nil takes `__metadata__["lora_adapter_metadata"]` if present.
    public var config: String?
    /// Raw bytes per chunk (a multiple of 8 in `DeltaArchiveFormat.chunkSizes`).
    public var chunkSize: Int

    /// Creates options; the defaults are level 3, byte planes on and coded literals-only, all
    /// processors, no reference.
    public init(level: Int = 3, bytePlanes: Bool = true, literalsOnly: Bool = true, threads: Int = activeProcessors(),
                reference: DeltaReference? = nil, baseFingerprint: String? = nil, config: String? = nil,
                chunkSize: Int = DeltaArchiveFormat.defaultChunkSize) {
        self.level = level
        self.literalsOnly = literalsOnly
        self.bytePlanes = bytePlanes
        self.threads = threads
        self.reference = reference
        self.baseFingerprint = baseFingerprint
        self.config = config
        self.chunkSize = chunkSize
    }
}

/// What one tensor became in the archive.
public struct TensorPackReport: Sendable, Hashable {
    /// The tensor's key.
    public var name: String
    /// Element type.
    public var dtype: DType
    /// Raw bytes.
    public var rawBytes: Int
    /// Compressed bytes (all frames).
    public var compressedBytes: Int
    /// Byte planes used (0 = none).
    public var bytePlanes: Int
    /// Stored as an XOR delta of the reference.
    public var xorReference: Bool
}

/// What `DeltaArchive.pack` did.
public struct PackReport: Sendable {
    /// Size of the input file.
    public var inputBytes: Int
    /// Size of the archive.
    public var outputBytes: Int
    /// Wall-clock seconds, everything included.
    public var seconds: Double
    /// Of `seconds`, the time spent making the file durable and visible (fsync, rename, fsync of
    /// the folder) after the last byte was handed to the kernel.
    public var commitSeconds: Double
    /// Threads used.
    public var threads: Int
    /// Per tensor, in data order.
    public var tensors: [TensorPackReport]
    /// inputBytes / outputBytes.
    public var ratio: Double { outputBytes == 0 ? 0 : Double(inputBytes) / Double(outputBytes) }
}

/// What `DeltaArchive.unpack` did.
public struct UnpackReport: Sendable {
    /// Size of the restored file.
    public var outputBytes: Int
    /// Wall-clock seconds from opening the output to the end of the commit (the archive was
    /// opened and validated before).
    public var seconds: Double
    /// Of `seconds`, the time spent making the file durable and visible (fsync, rename, fsync of
    /// the folder).
    public var commitSeconds: Double
    /// Threads used.
    public var threads: Int
}

/// The delta archive (`.fgdelta`): any safetensors file compressed with zstd, tensor by tensor in
/// independently decodable chunks, restorable byte for byte. Format: `docs/delta-archive.md`.
public enum DeltaArchive {
    /// Packs the safetensors file `input` into the archive `output` (written atomically).
    /// `progress(rawBytesDone, rawBytesTotal)` is called from the calling thread.
    @discardableResult
    public static func pack(input: String, output: String, options: PackOptions = PackOptions(),
                            progress: ((Int, Int) -> Void)? = nil) throws(DeltaArchiveError) -> PackReport {
        let started = monotonicSeconds()
        let source: SafeTensorsFile
        do { source = try SafeTensorsFile(path: input) } catch { throw .source(error) }
        try checkOptions(options, input: input)
        let config = try adapterConfig(options, source: source, input: input)
        let headerBytes = source.withBytes(fileRange: 0..<source.header.dataStart) { Array($0) }
        let plans: [TensorPlan] = source.tensors.map { info in
            let planes = options.bytePlanes && info.dtype.isFloatingPoint ? (ChunkTransform.planeWidth(info.dtype) ?? 0) : 0
            return TensorPlan(info: info, planes: planes, xor: options.reference?.matches(info) ?? false)
        }

        let file: AtomicFile
        do { file = try AtomicFile(destination: output) } catch { throw .source(.system(error)) }
        do throws(DeltaArchiveError) {
            var out = ArchiveOutput(file: file)
            var preamble = DeltaArchiveFormat.magic
            appendLE(&preamble, DeltaArchiveFormat.version)
            appendLE(&preamble, UInt32(0))
            try out.write(preamble)
            let headerFrame = try compressFrame(headerBytes, level: options.level, input: input)
            let sourceChunk = DeltaChunk(offset: out.cursor, length: headerFrame.count, rawLength: headerBytes.count, hash: XXH64.hash(headerBytes))
            try out.write(headerFrame)
            let chunks = try compressChunks(source: source, plans: plans, options: options, input: input, into: &out, progress: progress)
            let entries = plans.enumerated().map { t, plan in
                DeltaEntry(name: plan.info.name, dtype: plan.info.dtype, shape: plan.info.shape, dataRange: plan.info.dataRange,
                           codec: .zstd, bytePlanes: plan.planes, xorReference: plan.xor, chunks: chunks[t])
            }
            let index = DeltaIndex(chunkSize: options.chunkSize, baseFingerprint: options.baseFingerprint, config: config,
                                   metadata: source.header.metadata, sourceHeader: sourceChunk, entries: entries)
            try writeIndexAndTrailer(index, level: options.level, input: input, into: &out)
            let encoded = monotonicSeconds()
            do { try file.commit() } catch { throw .source(.system(error)) }
            let committed = monotonicSeconds()
            let reports = entries.map {
                TensorPackReport(name: $0.name, dtype: $0.dtype, rawBytes: $0.byteCount, compressedBytes: $0.compressedCount,
                                 bytePlanes: $0.bytePlanes, xorReference: $0.xorReference)
            }
            return PackReport(inputBytes: source.fileSize, outputBytes: out.cursor, seconds: committed - started,
                              commitSeconds: committed - encoded, threads: options.threads, tensors: reports)
        } catch {
            file.abandon()
            throw error
        }
    }

    /// Refuses options `pack` cannot honour: a zstd level outside `Zstd.levels`, a chunk size
    /// outside `DeltaArchiveFormat.chunkSizes` or not a multiple of 8, fewer than one thread.
    private static func checkOptions(_ options: PackOptions, input: String) throws(DeltaArchiveError) {
        guard Zstd.levels.contains(options.level) else {
            throw .invalidInput(file: input, reason: "zstd level \(options.level) outside \(Zstd.levels)")
        }
        guard DeltaArchiveFormat.chunkSizes.contains(options.chunkSize), options.chunkSize % 8 == 0 else {
            throw .invalidInput(file: input, reason: "chunk size \(options.chunkSize) outside \(DeltaArchiveFormat.chunkSizes) or not a multiple of 8")
        }
        guard options.threads >= 1 else { throw .invalidInput(file: input, reason: "threads must be at least 1") }
    }

    /// The adapter configuration to record: `options.config` (which must be JSON), else the
    /// source's `__metadata__["lora_adapter_metadata"]` when that is JSON, else nil.
    private static func adapterConfig(_ options: PackOptions, source: SafeTensorsFile, input: String) throws(DeltaArchiveError) -> String? {
        var config = options.config ?? source.header.metadataValue("lora_adapter_metadata")
        if let text = config {
            do { _ = try JSONValue.parse(Array(text.utf8)) } catch {
                if options.config != nil { throw .invalidInput(file: input, reason: "adapter config is not JSON: \(error)") }
                config = nil   // metadata that is not JSON is still kept verbatim in the source header
            }
        }
        return config
    }

    /// How one tensor is stored: its byte-plane width (0 = none) and whether it is an XOR delta.
    private struct TensorPlan { var info: TensorInfo; var planes: Int; var xor: Bool }

    /// One chunk to compress: the tensor's position in the plans, the chunk's index in the
    /// tensor and its byte range relative to the tensor's start.
    private struct ChunkUnit { var tensor: Int; var chunk: Int; var range: Range<Int> }

    /// What a worker reports for one compressed chunk (the frame stays in its window slot).
    private struct CompressedChunk { var length = 0; var inAlternate = false; var hash: UInt64 = 0; var refHash: UInt64? = nil }

    /// The archive being written: the atomic file and the offset of the next byte.
    private struct ArchiveOutput {
        let file: AtomicFile
        private(set) var cursor = 0

        init(file: AtomicFile) { self.file = file }

        /// Appends `bytes` through the file's write buffer.
        mutating func write(_ bytes: [UInt8]) throws(DeltaArchiveError) {
            do { try file.write(bytes) } catch { throw .source(.system(error)) }
            cursor += bytes.count
        }

        /// Appends a frame held in a window slot: large frames go straight from the slot to the
        /// kernel, small ones through the write buffer.
        mutating func write(frame: UnsafeRawBufferPointer) throws(DeltaArchiveError) {
            do {
                if frame.count >= 1 << 16 { try file.writeUnbuffered(frame) }
                else { try file.write(frame) }
            } catch { throw .source(.system(error)) }
            cursor += frame.count
        }
    }

    /// One zstd frame (with content checksum) of a whole buffer: the source header or the index.
    private static func compressFrame(_ bytes: [UInt8], level: Int, input: String) throws(DeltaArchiveError) -> [UInt8] {
        do { return try bytes.withUnsafeBytes { raw in Result { () throws(ZstdError) in try Zstd.compress(raw, level: level, checksum: true) } }.get() }
        catch { throw .invalidInput(file: input, reason: error.description) }
    }

    /// The chunks of every tensor, each `chunkSize` raw bytes but the last of a tensor.
    private static func chunkUnits(_ plans: [TensorPlan], chunkSize: Int) -> [ChunkUnit] {
        var units: [ChunkUnit] = []
        for (t, plan) in plans.enumerated() {
            let n = plan.info.byteCount
            var start = 0, c = 0
            while start < n {
                units.append(ChunkUnit(tensor: t, chunk: c, range: start..<min(n, start + chunkSize)))
                start += chunkSize
                c += 1
            }
        }
        return units
    }

    /// Compresses every chunk of every tensor in windows of `2 × threads` chunks (compressed side
    /// by side, written in order) and returns each tensor's chunk descriptions.
    private static func compressChunks(source: SafeTensorsFile, plans: [TensorPlan], options: PackOptions, input: String,
                                       into out: inout ArchiveOutput, progress: ((Int, Int) -> Void)?) throws(DeltaArchiveError) -> [[DeltaChunk]] {
        let chunkSize = options.chunkSize
        let reference = options.reference
        let units = chunkUnits(plans, chunkSize: chunkSize)
        let total = source.header.dataSize
        var chunks: [[DeltaChunk]] = plans.map { _ in [] }
        let window = max(1, options.threads * 2)
        // Per window slot, reused for every chunk (fresh buffers per chunk would page-fault
        // them anew each time): a zstd context, an XOR scratch and a plane buffer of
        // chunkSize each, and two frame buffers (literals-only / at the level).
        let frameCapacity = Zstd.planesBound(chunkSize)
        let slotBytes = 2 * chunkSize + 2 * frameCapacity
        let pool = UnsafeMutableRawBufferPointer.allocate(byteCount: window * slotBytes, alignment: 4096)
        defer { pool.deallocate() }
        var compressors: [ZstdCompressor] = []
        do { for _ in 0..<window { compressors.append(try ZstdCompressor()) } }
        catch { throw .invalidInput(file: input, reason: error.description) }
        func region(_ k: Int, _ offset: Int, _ count: Int) -> UnsafeMutableRawBufferPointer {
            UnsafeMutableRawBufferPointer(rebasing: pool[(k * slotBytes + offset)..<(k * slotBytes + offset + count)])
        }
        var done = 0
        var next = 0
        while next < units.count {
            let batch = Array(units[next..<min(units.count, next + window)])
            var results = [CompressedChunk](repeating: CompressedChunk(), count: batch.count)
            let errors = ErrorSlots(count: batch.count)
            results.withUnsafeMutableBufferPointer { slots in
                parallelFor(batch.count, threads: options.threads) { k in
                    let unit = batch[k]
                    let plan = plans[unit.tensor]
                    do throws(DeltaArchiveError) {
                        // Invariant: slot k owns pool bytes [k·slotBytes, (k+1)·slotBytes) and compressors[k].
                        let buffers = UnitBuffers(scratch: region(k, 0, chunkSize), planes: region(k, chunkSize, chunkSize),
                                                  frame: region(k, 2 * chunkSize, frameCapacity),
                                                  alternate: region(k, 2 * chunkSize + frameCapacity, frameCapacity))
                        let r = try compressUnit(source: source, plan.info, range: unit.range, chunkIndex: unit.chunk, planes: plan.planes,
                                                 buffers: buffers, compressor: compressors[k],
                                                 reference: plan.xor ? reference : nil, chunkSize: chunkSize, level: options.level,
                                                 literalsOnly: options.literalsOnly, rawPlanes: options.rawPlanes, input: input)
                        slots[k] = CompressedChunk(length: r.length, inAlternate: r.inAlternate, hash: r.hash, refHash: r.refHash)
                    } catch { errors.set(k, error) }
                }
            }
            if let error = errors.first { throw error }
            for (k, unit) in batch.enumerated() {
                let r = results[k]
                chunks[unit.tensor].append(DeltaChunk(offset: out.cursor, length: r.length, rawLength: unit.range.count, hash: r.hash, referenceHash: r.refHash))
                let frame = region(k, 2 * chunkSize + (r.inAlternate ? frameCapacity : 0), r.length)
                try out.write(frame: UnsafeRawBufferPointer(frame))
                done += unit.range.count
            }
            progress?(done, total)
            next += batch.count
        }
        return chunks
    }

    /// Writes the index frame (at level ≥ 3) and the trailer: index offset, length, XXH64 of
    /// the index JSON, tail magic.
    private static func writeIndexAndTrailer(_ index: DeltaIndex, level: Int, input: String, into out: inout ArchiveOutput) throws(DeltaArchiveError) {
        let indexBytes = Array(index.json().compactText.utf8)
        let indexFrame = try compressFrame(indexBytes, level: max(level, 3), input: input)
        let indexOffset = out.cursor
        try out.write(indexFrame)
        var trailer: [UInt8] = []
        appendLE(&trailer, UInt64(indexOffset))
        appendLE(&trailer, UInt64(indexFrame.count))
        appendLE(&trailer, XXH64.hash(indexBytes))
        trailer += DeltaArchiveFormat.tailMagic
        try out.write(trailer)
    }

    /// The working memory of one window slot while it compresses a chunk.
    private struct UnitBuffers {
        /// The XOR-ed bytes (chunk size).
        var scratch: UnsafeMutableRawBufferPointer
        /// The byte planes (chunk size).
        var planes: UnsafeMutableRawBufferPointer
        /// The frame written (`Zstd.planesBound(chunkSize)`).
        var frame: UnsafeMutableRawBufferPointer
        /// The other candidate frame when two are compared (same size).
        var alternate: UnsafeMutableRawBufferPointer
    }

    /// Compresses one chunk: XOR with the reference (if any), byte planes (if any), zstd. The
    /// frame is left in `buffers.frame` (or `buffers.alternate` when `inAlternate`).
    private static func compressUnit(source: SafeTensorsFile, _ info: TensorInfo, range: Range<Int>, chunkIndex: Int, planes: Int,
                                     buffers: UnitBuffers, compressor: ZstdCompressor,
                                     reference: DeltaReference?, chunkSize: Int, level: Int, literalsOnly: Bool, rawPlanes: Bool, input: String)
        throws(DeltaArchiveError) -> (length: Int, inAlternate: Bool, hash: UInt64, refHash: UInt64?) {
        let start = source.fileOffset(of: info) + range.lowerBound
        return try source.withBytes(fileRange: start..<(start + range.count)) { raw throws(DeltaArchiveError) in
            let hash = XXH64.hash(raw)
            var refHash: UInt64? = nil
            var work: UnsafeRawBufferPointer = raw
            if let reference {
                let other = try reference.bytes(of: info.name, range: range, chunkIndex: chunkIndex, chunkSize: chunkSize)
                refHash = other.withUnsafeBytes { XXH64.hash($0) }
                let xored = UnsafeMutableRawBufferPointer(rebasing: buffers.scratch[0..<raw.count])
                if raw.count > 0 { xored.copyMemory(from: raw) }
                other.withUnsafeBytes { ChunkTransform.xor(xored, with: $0) }
                work = UnsafeRawBufferPointer(xored)
            }
            if planes > 0 {
                let grouped = UnsafeMutableRawBufferPointer(rebasing: buffers.planes[0..<raw.count])
                ChunkTransform.splitPlanes(work, width: planes, into: grouped)
                work = UnsafeRawBufferPointer(grouped)
            }
            do throws(ZstdError) {
                // Literals-only for byte planes (see PackOptions.literalsOnly); for XOR deltas the
                // smaller of the two frames (ties: literals-only), so the choice is deterministic.
                guard literalsOnly && planes > 0 else {
                    return (try compressor.compress(work, level: level, checksum: true, into: buffers.frame), false, hash, refHash)
                }
                let literals: Int
                if rawPlanes, let assembled = try compressor.compressPlanes(work, planes: planes, into: buffers.frame) {
                    literals = assembled
                } else {
                    literals = try compressor.compressLiterals(work, checksum: true, segmentLength: raw.count / planes, into: buffers.frame)
                }
                // Repetition (zero runs, constant tensors, XOR deltas) is what matches exploit and
                // Huffman cannot: then keep the smaller of the two frames.
                guard reference != nil || ChunkTransform.hasRepeats(work) else { return (literals, false, hash, refHash) }
                let matched = try compressor.compress(work, level: level, checksum: true, into: buffers.alternate)
                return matched < literals ? (matched, true, hash, refHash) : (literals, false, hash, refHash)
            } catch {
                throw .invalidInput(file: input, reason: "tensor '\(escapeForDisplay(info.name))': \(error.description)")
            }
        }
    }

    /// Restores the exact original safetensors file from the archive `input` into `output`
    /// (atomically: on any error nothing is left at `output`). `reference` is needed when the
    /// archive holds XOR deltas.
    @discardableResult
    public static func unpack(input: String, output: String, threads: Int = activeProcessors(), reference: DeltaReference? = nil,
                              progress: ((Int, Int) -> Void)? = nil) throws(DeltaArchiveError) -> UnpackReport {
        let reader = try DeltaArchiveReader(path: input, reference: reference)
        return try unpack(reader, output: output, threads: threads, progress: progress)
    }

    /// Restores the original file from an opened archive.
    @discardableResult
    public static func unpack(_ reader: DeltaArchiveReader, output: String, threads: Int = activeProcessors(),
                              progress: ((Int, Int) -> Void)? = nil) throws(DeltaArchiveError) -> UnpackReport {
        let started = monotonicSeconds()
        guard threads >= 1 else { throw .invalidInput(file: reader.path, reason: "threads must be at least 1") }
        if reader.entries.contains(where: \.xorReference) && reader.reference == nil {
            let first = reader.entries.first(where: \.xorReference)!
            throw .reference(file: reader.path, tensor: first.name, reason: "stored as an XOR delta of a reference checkpoint; give the reference (--reference)",
                             offset: first.chunks.first?.offset ?? 0)
        }
        let file: AtomicFile
        do { file = try AtomicFile(destination: output) } catch { throw .source(.system(error)) }
        do throws(DeltaArchiveError) {
            do {
                try file.preallocate(reader.originalSize)
                try file.write(reader.sourceHeaderBytes)
            } catch { throw .source(.system(error)) }
            let units = reader.entries.flatMap { e in e.chunks.indices.map { (e, $0) } }
            let total = reader.sourceHeader.dataSize
            var done = 0
            var next = 0
            let capacity = reader.index.chunkSize
            let workers = max(1, threads)
            // A batch is as many consecutive chunks as fit in `batchCapacity` bytes (at least one;
            // every chunk is ≤ capacity, validated): LoRA factors are often far smaller than a
            // chunk, so batching by count would leave the workers idle between tiny batches. The
            // chunks are decoded side by side into one buffer, taken by whichever worker is free,
            // and the buffer is written with one call, without a copy.
            let batchCapacity = max(2 * workers, 4) * capacity
            let batchBuffer = UnsafeMutableRawBufferPointer.allocate(byteCount: batchCapacity, alignment: 4096)
            let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: workers * capacity, alignment: 4096)
            defer { batchBuffer.deallocate(); scratch.deallocate() }
            var decompressors: [ZstdDecompressor] = []
            // zstd's content checksum is not recomputed here: decodeChunk hashes every restored
            // chunk (XXH64, 64 bits, over the final bytes), which catches any damage that changes
            // the output; `DeltaArchiveReader.verify` checks both.
            do { for _ in 0..<workers { decompressors.append(try ZstdDecompressor(verifyChecksum: false)) } }
            catch { throw .invalidInput(file: reader.path, reason: error.description) }
            while next < units.count {
                var starts: [Int] = []
                var batchBytes = 0
                var end = next
                while end < units.count {
                    let length = units[end].0.chunks[units[end].1].rawLength
                    if end > next && batchBytes + length > batchCapacity { break }
                    starts.append(batchBytes)
                    batchBytes += length
                    end += 1
                }
                let batch = Array(units[next..<end])
                let errors = ErrorSlots(count: batch.count)
                parallelForDynamic(batch.count, threads: workers) { worker, k in
                    let (entry, i) = batch[k]
                    // Invariant: chunk k's bytes are [starts[k], starts[k] + rawLength) ⊂ the batch
                    // buffer; `worker` owns scratch slot `worker` and decompressor `worker`.
                    let slot = UnsafeMutableRawBufferPointer(rebasing: batchBuffer[starts[k]..<(starts[k] + entry.chunks[i].rawLength)])
                    let planes = UnsafeMutableRawBufferPointer(rebasing: scratch[(worker * capacity)..<((worker + 1) * capacity)])
                    do throws(DeltaArchiveError) {
                        try reader.decodeChunk(entry, i, into: slot, scratch: planes, decompressor: decompressors[worker])
                    } catch { errors.set(k, error) }
                }
                if let error = errors.first { throw error }
                do { try file.writeUnbuffered(UnsafeRawBufferPointer(rebasing: batchBuffer[0..<batchBytes])) } catch { throw .source(.system(error)) }
                done += batchBytes
                progress?(done, total)
                next = end
            }
            let decoded = monotonicSeconds()
            do { try file.commit() } catch { throw .source(.system(error)) }
            return UnpackReport(outputBytes: reader.originalSize, seconds: monotonicSeconds() - started,
                                commitSeconds: monotonicSeconds() - decoded, threads: threads)
        } catch {
            file.abandon()
            throw error
        }
    }
}

/// Appends the little-endian bytes of an integer.
func appendLE<T: FixedWidthInteger>(_ bytes: inout [UInt8], _ value: T) {
    withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) }
}
