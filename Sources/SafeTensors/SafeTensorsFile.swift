#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A safetensors file mapped read-only into memory, with its validated header.
///
/// Opening reads and validates only the header; tensor bytes are paged in from the mapping when
/// first touched, so inspecting a 24 GB file costs a header's worth of I/O. Tensor byte buffers
/// handed out by `withBytes` are views into the mapping, valid while the file object is alive.
public final class SafeTensorsFile: @unchecked Sendable {
    // @unchecked: the mapping is immutable (PROT_READ) after init and unmapped only in deinit.

    /// The path the file was opened with.
    public let path: String
    /// The validated header.
    public let header: SafeTensorsHeader
    /// Size of the file in bytes.
    public let fileSize: Int
    private let base: UnsafeRawPointer?
    /// The open descriptor, kept for kernel-side copies (`copy_file_range`).
    let descriptor: Int32
    /// The mapping's entry in `MappingGuard` (so a truncation under us is reported, not a crash).
    private let guardToken: Int

    /// Opens, maps and validates `path`. Throws a `SafeTensorsError` naming the file (and tensor
    /// and byte offset where it applies) if it is not a valid safetensors file.
    public init(path: String) throws(SafeTensorsError) {
        self.path = path
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw .io(file: path, operation: "open", message: errnoMessage()) }
        var keepOpen = false
        defer { if !keepOpen { close(fd) } }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw .io(file: path, operation: "stat", message: errnoMessage()) }
        guard (st.st_mode & S_IFMT) == S_IFREG else {
            throw .io(file: path, operation: "open", message: "not a regular file")
        }
        let size = Int(st.st_size)
        fileSize = size
        guard size >= 8 else { throw .headerTooSmall(file: path, size: size) }
        guard let mapped = mmap(nil, size, PROT_READ, MAP_SHARED, fd, 0), mapped != MAP_FAILED else {
            throw .io(file: path, operation: "mmap", message: errnoMessage())
        }
        let pointer = UnsafeRawPointer(mapped)
        guardToken = MappingGuard.registerMapping(start: pointer, length: size, path: path)
        do {
            header = try SafeTensorsHeader.parse(UnsafeRawBufferPointer(start: pointer, count: size), fileSize: size, file: path)
        } catch {
            MappingGuard.unregisterMapping(guardToken)
            munmap(mapped, size)
            throw error
        }
        base = pointer
        descriptor = fd
        keepOpen = true
    }

    deinit {
        MappingGuard.unregisterMapping(guardToken)
        if let base { munmap(UnsafeMutableRawPointer(mutating: base), fileSize) }
        close(descriptor)
    }

    /// The tensors in data order.
    public var tensors: [TensorInfo] { header.tensors }

    /// The tensor called `name`, or a `tensorNotFound` error.
    public func info(_ name: String) throws(SafeTensorsError) -> TensorInfo {
        guard let info = header.info(name) else { throw .tensorNotFound(file: path, tensor: name) }
        return info
    }

    /// Absolute byte offset in the file of a tensor's first data byte.
    public func fileOffset(of info: TensorInfo) -> Int { header.dataStart + info.dataRange.lowerBound }

    /// Calls `body` with a zero-copy view of the tensor's bytes inside the mapping.
    public func withBytes<R, E: Error>(of info: TensorInfo, _ body: (UnsafeRawBufferPointer) throws(E) -> R) throws(E) -> R {
        try withBytes(fileRange: fileOffset(of: info)..<(fileOffset(of: info) + info.byteCount), body)
    }

    /// Calls `body` with a zero-copy view of bytes `range` of the file (absolute offsets).
    /// The range must lie inside the file.
    public func withBytes<R, E: Error>(fileRange range: Range<Int>, _ body: (UnsafeRawBufferPointer) throws(E) -> R) throws(E) -> R {
        precondition(range.lowerBound >= 0 && range.upperBound <= fileSize, "byte range outside the mapped file")
        // Invariant: `base` maps `fileSize` bytes for the lifetime of self; the range was checked.
        return try body(UnsafeRawBufferPointer(start: base.map { $0 + range.lowerBound }, count: range.count))
    }

    /// A copy of the tensor's bytes.
    public func bytes(of name: String) throws(SafeTensorsError) -> [UInt8] {
        let info = try info(name)
        return withBytes(of: info) { Array($0) }
    }

    /// The tensor's values widened to `Float` (any float or integer dtype; see `FloatCodec`).
    public func floats(of name: String) throws(SafeTensorsError) -> [Float] {
        let info = try info(name)
        return try floats(of: info)
    }

    /// The tensor's values widened to `Float`.
    public func floats(of info: TensorInfo) throws(SafeTensorsError) -> [Float] {
        let count = info.elementCount
        guard FloatCodec.canDecode(info.dtype) else {
            throw .conversion(file: path, tensor: info.name, reason: "\(info.dtype.rawValue) values cannot be read as numbers")
        }
        return withBytes(of: info) { raw in
            [Float](unsafeUninitializedCapacity: count) { buffer, initialized in
                FloatCodec.decode(info.dtype, from: raw, into: buffer)
                initialized = count
            }
        }
    }

    /// Tells the kernel how a range of the file will be read, so it can read ahead
    /// (`sequential`) or fault pages in now (`willNeed`). Advisory: failures are ignored.
    public func advise(_ advice: ReadAdvice, fileRange range: Range<Int>) {
        guard let base, !range.isEmpty else { return }
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let start = (range.lowerBound / page) * page
        let end = min(fileSize, range.upperBound)
        guard end > start else { return }
        let pointer = UnsafeMutableRawPointer(mutating: base + start)
        switch advice {
        case .sequential: _ = madvise(pointer, end - start, MADV_SEQUENTIAL)
        case .willNeed: _ = madvise(pointer, end - start, MADV_WILLNEED)
        case .populate:
            // MADV_POPULATE_READ (Linux 5.14+) faults the range in one call; older kernels
            // reject it and the read simply faults page by page.
            if madvise(pointer, end - start, 22) != 0 { _ = madvise(pointer, end - start, MADV_WILLNEED) }
        case .dontNeed: _ = madvise(pointer, end - start, MADV_DONTNEED)
        }
    }
}

/// How a mapped range is about to be used; see `SafeTensorsFile.advise`.
public enum ReadAdvice: Sendable {
    /// Read front to back: read ahead aggressively.
    case sequential
    /// Start reading this range in the background now.
    case willNeed
    /// Fault the whole range into the mapping now, in one call.
    case populate
    /// The range is no longer needed; its pages may be dropped from this mapping.
    case dontNeed
}

/// The C library's message for the current `errno`.
func errnoMessage(_ code: Int32 = errno) -> String {
    String(cString: strerror(code))
}
