import SystemSupport


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
    /// The mapping, registered with `MappingGuard` (so a truncation under us is reported, not a
    /// crash).
    private let mapping: MappedRegion
    /// The open descriptor, kept for kernel-side copies (`copy_file_range`).
    let descriptor: FileDescriptor
    /// The container: `safetensors`, or the `format` of the `ContainerReader` that read it (`GGUF`).
    public let format: String
    /// The block encoding of each tensor not stored as plain `dtype` values (GGUF quant types).
    public let encodings: [String: any BlockEncoding]
    /// A foreign container's metadata as display text; empty for safetensors.
    public let details: [(key: String, value: String)]

    /// Opens, maps and validates `path`. Throws a `SafeTensorsError` naming the file (and tensor
    /// and byte offset where it applies) if it is not a valid safetensors file. A file that begins
    /// like one of `containers` is read by that reader instead; a GGUF file, delta archive or
    /// pickle checkpoint without a reader is an error saying what the file is.
    public init(path: String, containers: [any ContainerReader] = []) throws(SafeTensorsError) {
        self.path = path
        let file: FileDescriptor
        do { file = try FileDescriptor.openForReading(path) } catch { throw .system(error) }
        var keepOpen = false
        defer { if !keepOpen { file.close() } }
        let status: FileStatus
        do { status = try file.status() } catch { throw .system(error) }
        guard status.kind == .regular else {
            throw .io(file: path, operation: "open", message: "not a regular file")
        }
        let size = status.size
        fileSize = size
        guard size >= 8 else {
            var bytes = [UInt8](repeating: 0, count: size)
            let got = (try? bytes.withUnsafeMutableBytes { try file.read(into: $0, at: 0) }) ?? 0
            if let what = ForeignFile.describe(Array(bytes.prefix(got)), path: path) { throw .container(file: path, reason: what) }
            throw .headerTooSmall(file: path, size: size)
        }
        // Released (unregistered and unmapped) on every path that leaves without keeping it.
        do { mapping = try MappedRegion(mapping: file, count: size) } catch { throw .system(error) }
        let magic = Array(mapping.bytes.prefix(8))
        if let reader = containers.first(where: { $0.recognises(magic) }) {
            let layout = try reader.read(mapping.bytes, file: path)
            header = SafeTensorsHeader(foreign: layout, fileSize: size)
            format = layout.format
            encodings = layout.encodings
            details = layout.details
        } else {
            // Safetensors first: its 8-byte length can begin like another format's magic. Only a
            // file that is not valid safetensors is named for what else it looks like.
            do { header = try SafeTensorsHeader.parse(mapping.bytes, fileSize: size, file: path) } catch {
                if let what = ForeignFile.describe(magic, path: path) { throw .container(file: path, reason: what) }
                throw error
            }
            format = "safetensors"
            encodings = [:]
            details = []
        }
        descriptor = file
        keepOpen = true
    }

    deinit { descriptor.close() }

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
        // Invariant: `mapping` maps `fileSize` bytes for the lifetime of self; the range was checked.
        return try body(UnsafeRawBufferPointer(rebasing: mapping.bytes[range]))
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
        switch advice {
        case .sequential: mapping.advise(.sequential, range: range)
        case .willNeed: mapping.advise(.willNeed, range: range)
        case .populate: mapping.advise(.populate, range: range)
        case .dontNeed: mapping.advise(.dontNeed, range: range)
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
