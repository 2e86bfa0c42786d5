#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Dispatch
import Foundation
import SafeTensors

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
    private let base: UnsafeRawPointer
    private let byName: [String: Int]
    private let guardToken: Int

    /// The tensors, in the original file's data order.
    public var entries: [DeltaEntry] { index.entries }
    /// Size of the file `unpack` restores.
    public var originalSize: Int { sourceHeaderBytes.count + sourceHeader.dataSize }

    /// The entry called `name`, if present.
    public func entry(_ name: String) -> DeltaEntry? { byName[name].map { index.entries[$0] } }

    /// Whether the file at `path` starts with the archive magic.
    public static func hasMagic(path: String) -> Bool {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var head = [UInt8](repeating: 0, count: 8)
        let n = head.withUnsafeMutableBytes { read(fd, $0.baseAddress, 8) }
        return n == 8 && head == DeltaArchiveFormat.magic
    }

    /// Opens, maps and validates the archive at `path`. `reference` is needed only to decode
    /// tensors stored as XOR deltas.
    public init(path: String, reference: DeltaReference? = nil, limits: DeltaReadLimits = DeltaReadLimits()) throws(DeltaArchiveError) {
        self.path = path
        self.reference = reference
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw .io(file: path, operation: "open", message: String(cString: strerror(errno))) }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw .io(file: path, operation: "stat", message: String(cString: strerror(errno))) }
        guard (st.st_mode & S_IFMT) == S_IFREG else { throw .io(file: path, operation: "open", message: "not a regular file") }
        let size = Int(st.st_size)
        fileSize = size
        let minimum = DeltaArchiveFormat.preambleSize + DeltaArchiveFormat.trailerSize
        guard size >= minimum else {
            throw .truncated(file: path, reason: "\(size) bytes, an archive has at least \(minimum)", offset: size)
        }
        guard let mapped = mmap(nil, size, PROT_READ, MAP_SHARED, fd, 0), mapped != MAP_FAILED else {
            throw .io(file: path, operation: "mmap", message: String(cString: strerror(errno)))
        }
        let pointer = UnsafeRawPointer(mapped)
        // Registered so that a truncation under us is reported by the SIGBUS handler, not a crash.
        guardToken = MappingGuard.registerMapping(start: pointer, length: size, path: path)
        do {
            let parsed = try DeltaArchiveReader.validate(UnsafeRawBufferPointer(start: pointer, count: size), file: path, limits: limits)
            index = parsed.index
            sourceHeaderBytes = parsed.headerBytes
            sourceHeader = parsed.header
        } catch {
            MappingGuard.unregisterMapping(guardToken)
            munmap(mapped, size)
            throw error
        }
        base = pointer
        var byName: [String: Int] = [:]
        for (i, e) in index.entries.enumerated() { byName[e.name] = i }
        self.byName = byName
    }

    deinit {
        MappingGuard.unregisterMapping(guardToken)
        munmap(UnsafeMutableRawPointer(mutating: base), fileSize)
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
        let frame = UnsafeRawBufferPointer(start: base + chunk.offset, count: chunk.length)
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
public func activeProcessors() -> Int { max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))) }

/// Runs `body(0..<count)` on up to `threads` threads; each index runs exactly once.
func parallelFor(_ count: Int, threads: Int, _ body: (Int) -> Void) {
    let workers = max(1, min(threads, count))
    if workers == 1 {
        for i in 0..<count { body(i) }
        return
    }
    // The body only touches disjoint slots per index; the box carries it across threads.
    withoutActuallyEscaping(body) { body in
        let box = UncheckedBox(body)
        DispatchQueue.concurrentPerform(iterations: workers) { w in
            var i = w
            while i < count {
                box.value(i)
                i += workers
            }
        }
    }
}

/// Runs `body(worker, i)` for every i in `0..<count` on up to `threads` workers that take the next
/// index as they become free (work items of uneven size stay balanced). `worker` is in
/// `0..<threads`: per-worker scratch state can be indexed by it.
func parallelForDynamic(_ count: Int, threads: Int, _ body: (Int, Int) -> Void) {
    let workers = max(1, min(threads, count))
    if workers == 1 {
        for i in 0..<count { body(0, i) }
        return
    }
    let counter = WorkCounter()
    withoutActuallyEscaping(body) { body in
        let box = UncheckedBox(body)
        DispatchQueue.concurrentPerform(iterations: workers) { w in
            while true {
                let i = counter.next()
                if i >= count { break }
                box.value(w, i)
            }
        }
    }
}

/// A shared "next index" handed out under a lock.
final class WorkCounter: @unchecked Sendable {
    private let lock = NSLock()
    private var value = 0

    /// The next index (0, 1, 2, …), one per call across threads.
    func next() -> Int {
        lock.lock()
        defer { lock.unlock() }
        value += 1
        return value - 1
    }
}

/// Carries a non-Sendable value into `concurrentPerform`; the caller guarantees thread safety.
struct UncheckedBox<T>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}

/// One error slot per work item, written by the worker that owns the slot; `first` is the
/// lowest-numbered failure, so the error reported does not depend on scheduling.
final class ErrorSlots: @unchecked Sendable {
    // @unchecked: each slot is written by one worker only, and read after all workers finished.
    private var slots: [DeltaArchiveError?]
    private let lock = PthreadLock()
    init(count: Int) { slots = Array(repeating: nil, count: count) }
    func set(_ i: Int, _ error: DeltaArchiveError) { lock.locked { slots[i] = error } }
    var first: DeltaArchiveError? { lock.locked { slots.first { $0 != nil } ?? nil } }
}

/// A pthread mutex, to avoid importing Foundation.
final class PthreadLock: @unchecked Sendable {
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    init() { pthread_mutex_init(mutex, nil) }
    deinit { pthread_mutex_destroy(mutex); mutex.deallocate() }
    func locked<R>(_ body: () -> R) -> R {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return body()
    }
}
