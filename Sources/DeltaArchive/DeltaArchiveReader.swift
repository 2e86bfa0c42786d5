import SafeTensors
import SystemSupport

/// The tensors an archive's XOR deltas were taken against: a safetensors file or another archive.
public enum DeltaReference: Sendable {
    /// A safetensors file (mapped).
    case safetensors(SafeTensorsFile)
    /// Another delta archive (self-contained, or opened with its own reference).
    case archive(DeltaArchiveReader)

    /// Opens `path`, an archive when it starts with the archive magic, else a safetensors file.
    public static func open(path: String) throws(DeltaArchiveError) -> DeltaReference {
        if DeltaArchiveReader.hasMagic(path: path) { return .archive(try DeltaArchiveReader(path: path)) }
        do { return .safetensors(try SafeTensorsFile(path: path)) } catch { throw .source(error) }
    }

    /// The path it was opened from.
    public var path: String {
        switch self {
        case let .safetensors(f): return f.path
        case let .archive(a): return a.path
        }
    }

    /// Whether the reference holds a tensor with this name, dtype and shape.
    func matches(_ info: TensorInfo) -> Bool {
        switch self {
        case let .safetensors(f):
            guard let r = f.header.info(info.name) else { return false }
            return r.dtype == info.dtype && r.shape == info.shape
        case let .archive(a):
            guard let r = a.entry(info.name) else { return false }
            return r.dtype == info.dtype && r.shape == info.shape
        }
    }

    /// The reference's bytes `range` (relative to the tensor's start) of the tensor `name`,
    /// which must match (see `matches`).
    func bytes(of name: String, range: Range<Int>, chunkIndex: Int, chunkSize: Int) throws(DeltaArchiveError) -> [UInt8] {
        switch self {
        case let .safetensors(f):
            guard let info = f.header.info(name) else { throw .reference(file: f.path, tensor: name, reason: "tensor missing from the reference", offset: 0) }
            let start = f.fileOffset(of: info)
            return f.withBytes(fileRange: (start + range.lowerBound)..<(start + range.upperBound)) { Array($0) }
        case let .archive(a):
            guard let entry = a.entry(name) else { throw .reference(file: a.path, tensor: name, reason: "tensor missing from the reference", offset: 0) }
            guard a.index.chunkSize == chunkSize else {
                throw .reference(file: a.path, tensor: name, reason: "reference archive uses chunks of \(a.index.chunkSize) bytes, this archive \(chunkSize)", offset: 0)
            }
            var out = [UInt8](repeating: 0, count: range.count)
            let result = out.withUnsafeMutableBytes { buffer in
                Result { () throws(DeltaArchiveError) in try a.decodeChunk(entry, chunkIndex, into: buffer) }
            }
            try result.get()
            return out
        }
    }
}

/// Limits a reader enforces before allocating anything.
public struct DeltaReadLimits: Sendable {
    /// The most raw tensor bytes an archive may declare in total.
    public var maximumTotalRawBytes: UInt64
    /// The defaults: 1 TiB of tensor data.
    public init(maximumTotalRawBytes: UInt64 = 1 << 40) { self.maximumTotalRawBytes = maximumTotalRawBytes }
}

/// A delta archive mapped read-only: opening validates the whole layout and the index (and
/// decodes the source header) without decompressing any tensor; tensors are then decoded on
/// demand, each chunk checked against its recorded sizes and checksums.
public final class DeltaArchiveReader: @unchecked Sendable {
    // @unchecked: the mapping is immutable (PROT_READ) after init and unmapped only in deinit.

    /// The path the archive was opened with.
    public let path: String
    /// Size of the archive in bytes.
    public let fileSize: Int
    /// The validated index.
    public let index: DeltaIndex
    /// The original file's first 8 + N bytes (length field and JSON header), verbatim.
    public let sourceHeaderBytes: [UInt8]
    /// The original file's header, parsed and validated.
    public let sourceHeader: SafeTensorsHeader
    /// The reference XOR deltas are undone against, if given.
    public let reference: DeltaReference?
    /// The mapping, registered so that a truncation under us is reported by the SIGBUS
    /// handler, not a crash.
    private let mapping: MappedRegion
    private let byName: [String: Int]

    /// The tensors, in the original file's data order.
    public var entries: [DeltaEntry] { index.entries }
    /// Size of the file `unpack` restores.
    public var originalSize: Int { sourceHeaderBytes.count + sourceHeader.dataSize }

    /// The entry called `name`, if present.
    public func entry(_ name: String) -> DeltaEntry? { byName[name].map { index.entries[$0] } }

    /// Whether the file at `path` starts with the archive magic.
    public static func hasMagic(path: String) -> Bool {
        guard let file = try? FileDescriptor.openForReading(path) else { return false }
        defer { file.close() }
        var head = [UInt8](repeating: 0, count: 8)
        let n = head.withUnsafeMutableBytes { try? file.read(into: $0) }
        return n == 8 && head == DeltaArchiveFormat.magic
    }

    /// Opens, maps and validates the archive at `path`. `reference` is needed only to decode
    /// tensors stored as XOR deltas.
    public init(path: String, reference: DeltaReference? = nil, limits: DeltaReadLimits = DeltaReadLimits()) throws(DeltaArchiveError) {
        self.path = path
        self.reference = reference
        let file: FileDescriptor
        do { file = try FileDescriptor.openForReading(path) } catch { throw .io(file: path, operation: error.operation, message: error.message) }
        defer { file.close() }
        let status: FileStatus
        do { status = try file.status() } catch { throw .io(file: path, operation: error.operation, message: error.message) }
        guard status.kind == .regular else { throw .io(file: path, operation: "open", message: "not a regular file") }
        let size = status.size
        fileSize = size
        let minimum = DeltaArchiveFormat.preambleSize + DeltaArchiveFormat.trailerSize
        guard size >= minimum else {
            throw .truncated(file: path, reason: "\(size) bytes, an archive has at least \(minimum)", offset: size)
        }
        do { mapping = try MappedRegion(mapping: file, count: size) } catch { throw .io(file: path, operation: error.operation, message: error.message) }
        // A failure releases the mapping (unregistered, then unmapped).
        let parsed = try DeltaArchiveReader.validate(mapping.bytes, file: path, limits: limits)
        index = parsed.index
        sourceHeaderBytes = parsed.headerBytes
        sourceHeader = parsed.header
        var byName: [String: Int] = [:]
        for (i, e) in index.entries.enumerated() { byName[e.name] = i }
        self.byName = byName
    }

    /// Decodes tensor `name` (random access: only its frames are read).
    public func readTensor(_ name: String, threads: Int = activeProcessors()) throws(DeltaArchiveError) -> [UInt8] {
        guard let entry = entry(name) else { throw .tensorNotFound(file: path, tensor: name) }
        var out = [UInt8](repeating: 0, count: entry.byteCount)
        let chunkSize = index.chunkSize
        let errors = ErrorSlots(count: entry.chunks.count)
        out.withUnsafeMutableBytes { buffer in
            parallelFor(entry.chunks.count, threads: threads) { i in
                let start = i * chunkSize
                let region = UnsafeMutableRawBufferPointer(rebasing: buffer[start..<(start + entry.chunks[i].rawLength)])
                do throws(DeltaArchiveError) { try decodeChunk(entry, i, into: region) } catch { errors.set(i, error) }
            }
        }
        if let error = errors.first { throw error }
        return out
    }

    /// Decodes every frame and checks every checksum without writing anything.
    public func verify(threads: Int = activeProcessors()) throws(DeltaArchiveError) {
        let units = index.entries.flatMap { e in e.chunks.indices.map { (e, $0) } }
        let errors = ErrorSlots(count: units.count)
        parallelFor(units.count, threads: threads) { u in
            let (entry, i) = units[u]
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: max(entry.chunks[i].rawLength, 1), alignment: 16)
            defer { buffer.deallocate() }
            do throws(DeltaArchiveError) { try decodeChunk(entry, i, into: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<entry.chunks[i].rawLength])) } catch { errors.set(u, error) }
        }
        if let error = errors.first { throw error }
    }

    /// Decodes chunk `i` of `entry` into `destination` (exactly the chunk's raw length): checks
    /// the frame's declared content size against the index before decompressing, then the zstd
    /// checksum, then XXH64 of the restored bytes.
    /// `scratch`, when given, must hold at least the chunk's raw length and is used for the planes.
    /// `decompressor`, when given, is the caller's reused zstd context (one per thread).
    func decodeChunk(_ entry: DeltaEntry, _ i: Int, into destination: UnsafeMutableRawBufferPointer,
                     scratch given: UnsafeMutableRawBufferPointer? = nil, decompressor: ZstdDecompressor? = nil) throws(DeltaArchiveError) {
        let chunk = entry.chunks[i]
        precondition(destination.count == chunk.rawLength, "destination must be the chunk's raw length")
        // Invariant: validate() checked offset + length <= fileSize for every chunk.
        let frame = UnsafeRawBufferPointer(rebasing: mapping.bytes[chunk.offset..<(chunk.offset + chunk.length)])
        func fail(_ reason: String) -> DeltaArchiveError { .corruptFrame(file: path, tensor: entry.name, reason: reason, offset: chunk.offset) }
        let declared: UInt64?
        do { declared = try Zstd.frameContentSize(frame) } catch { throw fail(error.reason) }
        guard let declared else { throw fail("frame does not record its content size") }
        guard declared == UInt64(chunk.rawLength) else {
            throw fail("frame declares \(declared) raw bytes but the index says \(chunk.rawLength) (refused before decompressing)")
        }
        let frameLength: Int
        do { frameLength = try Zstd.frameCompressedSize(frame) } catch { throw fail(error.reason) }
        guard frameLength == chunk.length else { throw fail("frame is \(frameLength) bytes but the index says \(chunk.length)") }
        guard Zstd.frameHasChecksum(frame) else { throw fail("frame has no content checksum") }
        // The writer never sets the frame header's unused and reserved bits (0x18); zstd ignores
        // the unused one, we do not, so no flipped bit of a frame goes unnoticed.
        guard frame[4] & 0x18 == 0 else { throw fail("frame header descriptor has unused or reserved bits set") }
        func decompress(into buffer: UnsafeMutableRawBufferPointer) throws(DeltaArchiveError) {
            do {
                if let decompressor { try decompressor.decompress(frame, into: buffer) } else { try Zstd.decompress(frame, into: buffer) }
            } catch { throw fail(error.reason) }
        }
        if entry.bytePlanes > 0 {
            let owned = given == nil ? UnsafeMutableRawBufferPointer.allocate(byteCount: max(chunk.rawLength, 1), alignment: 16) : nil
            defer { owned?.deallocate() }
            let scratch = given ?? owned!
            precondition(scratch.count >= chunk.rawLength, "scratch smaller than the chunk")
            let planes = UnsafeMutableRawBufferPointer(rebasing: scratch[0..<chunk.rawLength])
            try decompress(into: planes)
            ChunkTransform.joinPlanes(UnsafeRawBufferPointer(planes), width: entry.bytePlanes, into: destination)
        } else {
            try decompress(into: destination)
        }
        if entry.xorReference {
            guard let reference else {
                throw .reference(file: path, tensor: entry.name, reason: "stored as an XOR delta of a reference checkpoint; give the reference (--reference)", offset: chunk.offset)
            }
            guard reference.matches(entry.info) else {
                throw .reference(file: reference.path, tensor: entry.name, reason: "reference has no tensor of this name with dtype \(entry.dtype.rawValue) and shape \(entry.shape)", offset: chunk.offset)
            }
            let start = i * index.chunkSize
            let other = try reference.bytes(of: entry.name, range: start..<(start + chunk.rawLength), chunkIndex: i, chunkSize: index.chunkSize)
            let otherHash = other.withUnsafeBytes { XXH64.hash($0) }
            guard otherHash == chunk.referenceHash else {
                throw .reference(file: reference.path, tensor: entry.name,
                                 reason: "reference bytes \(start)..<\(start + chunk.rawLength) differ from the ones the archive \(path) was packed against (wrong reference)", offset: chunk.offset)
            }
            other.withUnsafeBytes { ChunkTransform.xor(destination, with: $0) }
        }
        guard XXH64.hash(UnsafeRawBufferPointer(destination)) == chunk.hash else {
            throw fail("XXH64 of the restored bytes does not match the index")
        }
    }
}

/// The number of processors available to this process (the default thread count).
public func activeProcessors() -> Int { SystemInfo.activeProcessors }

/// One error slot per work item, written by the worker that owns the slot; `first` is the
/// lowest-numbered failure, so the error reported does not depend on scheduling.
final class ErrorSlots: @unchecked Sendable {
    // @unchecked: each slot is written by one worker only, and read after all workers finished.
    private var slots: [DeltaArchiveError?]
    private let lock = Lock()
    init(count: Int) { slots = Array(repeating: nil, count: count) }
    func set(_ i: Int, _ error: DeltaArchiveError) { lock.withLock { slots[i] = error } }
    var first: DeltaArchiveError? { lock.withLock { slots.first { $0 != nil } ?? nil } }
}
