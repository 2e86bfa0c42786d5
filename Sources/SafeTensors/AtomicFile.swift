#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A file being written in place of `destination`: bytes go to a temporary file in the same
/// folder, and only `commit()` makes them visible, by fsync then rename then fsync of the folder.
/// If the writer is dropped or `abandon()` is called first, the temporary file is removed and the
/// destination is untouched — old contents or nothing, never a partial file.
public final class AtomicFile {
    /// The path that `commit()` will create or replace.
    public let destination: String
    /// The temporary path the bytes are written to.
    public let temporaryPath: String
    private var fd: Int32
    private var buffer: UnsafeMutableRawPointer
    private var buffered = 0
    private let bufferCapacity = 4 << 20
    /// Bytes written so far (buffered included).
    public private(set) var bytesWritten = 0
    private var finished = false
    /// The temporary file's entry in `MappingGuard`, removed once it is renamed or deleted.
    private var guardToken = -1

    /// Creates the temporary file beside `destination` (exclusively; mode 0644 less the umask).
    public init(destination: String) throws(SafeTensorsError) {
        self.destination = destination
        let folder = AtomicFile.folder(of: destination)
        let name = destination.split(separator: "/", omittingEmptySubsequences: false).last.map(String.init) ?? destination
        // Temporaries of earlier writers of this destination that were killed (SIGKILL cannot be
        // caught) would otherwise stay forever, each as large as the output.
        StaleTemporaries.remove(in: folder, prefix: ".\(name).tmp-")
        var attempt = 0
        var created: Int32 = -1
        var path = ""
        while created < 0 {
            path = (folder == "." && !destination.hasPrefix("./") ? "" : folder + "/") + ".\(name).tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
            created = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
            if created < 0 {
                let code = errno
                attempt += 1
                if code != EEXIST || attempt > 16 {
                    throw .io(file: destination, operation: "create a temporary file in '\(folder)'", message: errnoMessage(code))
                }
            }
        }
        fd = created
        temporaryPath = path
        guardToken = MappingGuard.registerCleanup(path: path)
        buffer = UnsafeMutableRawPointer.allocate(byteCount: bufferCapacity, alignment: 4096)
    }

    deinit {
        if !finished { abandon() }
        buffer.deallocate()
    }

    /// Reserves `size` bytes on disk up front, so a full disk is reported before any work.
    public func preallocate(_ size: Int) throws(SafeTensorsError) {
        guard size > 0 else { return }
        var fs = statvfs()
        if fstatvfs(fd, &fs) == 0 {
            let available = Int(clamping: UInt64(fs.f_bavail) &* UInt64(fs.f_frsize))
            if available < size {
                throw .io(file: destination, operation: "reserve \(size) bytes",
                          message: "not enough disk space: the output needs \(size) bytes, the folder's filesystem has \(available) available")
            }
        }
        let result = posix_fallocate(fd, 0, off_t(size))
        if result == ENOSPC || result == EFBIG || result == EDQUOT {
            throw .io(file: destination, operation: "reserve \(size) bytes", message: errnoMessage(result) + " (not enough disk space)")
        }
        // Other failures (e.g. a filesystem without fallocate) are not fatal: the writes will tell.
    }

    /// Appends bytes.
    public func write(_ bytes: UnsafeRawBufferPointer) throws(SafeTensorsError) {
        guard let src = bytes.baseAddress, bytes.count > 0 else { return }
        if buffered + bytes.count <= bufferCapacity {
            (buffer + buffered).copyMemory(from: src, byteCount: bytes.count)
            buffered += bytes.count
        } else {
            try flush()
            if bytes.count >= bufferCapacity / 2 {
                try writeAll(src, bytes.count)
            } else {
                buffer.copyMemory(from: src, byteCount: bytes.count)
                buffered = bytes.count
            }
        }
        bytesWritten += bytes.count
    }

    /// Appends bytes without copying them into the write buffer (what is buffered goes first):
    /// for large blocks the caller already holds in memory.
    public func writeUnbuffered(_ bytes: UnsafeRawBufferPointer) throws(SafeTensorsError) {
        guard let src = bytes.baseAddress, bytes.count > 0 else { return }
        try flush()
        try writeAll(src, bytes.count)
        bytesWritten += bytes.count
    }

    /// Appends bytes from an array.
    public func write(_ bytes: [UInt8]) throws(SafeTensorsError) {
        try bytes.withUnsafeBytes { raw in Result { () throws(SafeTensorsError) in try write(raw) } }.get()
    }

    /// Lends `body` a writable region of `count` bytes (up to the buffer capacity) that becomes
    /// part of the file when `body` returns; avoids a copy for converted data.
    public func withWritableRegion(count: Int, _ body: (UnsafeMutableRawBufferPointer) -> Void) throws(SafeTensorsError) {
        precondition(count <= bufferCapacity, "region larger than the write buffer")
        if buffered + count > bufferCapacity { try flush() }
        body(UnsafeMutableRawBufferPointer(start: buffer + buffered, count: count))
        buffered += count
        bytesWritten += count
    }

    /// The largest region `withWritableRegion` can lend.
    public var regionCapacity: Int { bufferCapacity }

    /// Appends `count` bytes of another open file, starting at `offset`, copied by the kernel
    /// (`copy_file_range`) without passing through this process's memory. Returns false, having
    /// written nothing, when the kernel cannot do it for these files; the caller then copies.
    public func appendKernelCopy(from source: Int32, offset: Int, count: Int) throws(SafeTensorsError) -> Bool {
        guard count > 0 else { return true }
        guard let copyFileRange = KernelCopy.function else { return false }
        try flush()
        var inOffset = Int64(offset)
        var done = 0
        while done < count {
            let n = copyFileRange(source, &inOffset, fd, nil, count - done, 0)
            if n < 0 {
                let code = errno
                if code == EINTR { continue }
                if done == 0 && (code == ENOSYS || code == EXDEV || code == EINVAL || code == EOPNOTSUPP || code == EBADF) { return false }
                let hint = code == ENOSPC || code == EDQUOT ? " (not enough disk space)" : ""
                throw .io(file: destination, operation: "copy", message: errnoMessage(code) + hint)
            }
            if n == 0 { throw .io(file: destination, operation: "copy", message: "source ended early") }
            done += n
        }
        bytesWritten += count
        return true
    }

    private func flush() throws(SafeTensorsError) {
        if buffered > 0 { try writeAll(buffer, buffered) }
        buffered = 0
    }

    private func writeAll(_ pointer: UnsafeRawPointer, _ count: Int) throws(SafeTensorsError) {
        var done = 0
        while done < count {
            let n = Glibc.write(fd, pointer + done, count - done)
            if n < 0 {
                let code = errno
                if code == EINTR { continue }
                let hint = code == ENOSPC || code == EDQUOT ? " (not enough disk space)"
                    : code == EFAULT ? " (the bytes being written come from a file that was truncated while being read)" : ""
                throw .io(file: destination, operation: "write", message: errnoMessage(code) + hint)
            }
            done += n
        }
        handedOver += count
        // Start the disk writes of what the kernel holds now (asynchronously), so they overlap
        // with the caller's work and the fsync in `commit()` has little left to wait for.
        if handedOver - writebackStart >= AtomicFile.writebackStep {
            _ = StartWriteback.function?(fd, Int64(writebackStart), Int64(handedOver - writebackStart), StartWriteback.write)
            writebackStart = handedOver
        }
    }

    /// Bytes given to the kernel so far, and the start of those whose writeback was not started.
    private var handedOver = 0
    private var writebackStart = 0
    /// How many bytes accumulate before their writeback is started.
    private static let writebackStep = 8 << 20

    /// Flushes, fsyncs, renames over the destination and fsyncs the folder.
    public func commit() throws(SafeTensorsError) {
        precondition(!finished, "commit called twice")
        do throws(SafeTensorsError) {
            try flush()
            // The reservation may exceed what was written (it never should); trim to the truth.
            if ftruncate(fd, off_t(bytesWritten)) != 0 {
                throw .io(file: destination, operation: "truncate", message: errnoMessage())
            }
            if fsync(fd) != 0 { throw .io(file: destination, operation: "fsync", message: errnoMessage()) }
            let closed = close(fd)
            fd = -1
            if closed != 0 { throw .io(file: destination, operation: "close", message: errnoMessage()) }
            if rename(temporaryPath, destination) != 0 {
                throw .io(file: destination, operation: "rename into place", message: errnoMessage())
            }
            finished = true
            MappingGuard.unregisterCleanup(guardToken)
            AtomicFile.syncFolder(AtomicFile.folder(of: destination))
        } catch {
            abandon()
            throw error
        }
    }

    /// Discards the temporary file; the destination is untouched.
    public func abandon() {
        guard !finished else { return }
        finished = true
        if fd >= 0 { close(fd); fd = -1 }
        unlink(temporaryPath)
        MappingGuard.unregisterCleanup(guardToken)
    }

    /// The folder part of a path ("." when there is none).
    static func folder(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        let folder = String(path[..<slash])
        return folder.isEmpty ? "/" : folder
    }

    /// fsync of a folder, so a rename in it is durable. Best effort.
    static func syncFolder(_ folder: String) {
        let dfd = open(folder, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if dfd >= 0 { _ = fsync(dfd); close(dfd) }
    }
}

/// glibc's `copy_file_range`, looked up at run time: the Glibc module does not export it.
enum KernelCopy {
    typealias Function = @convention(c) (Int32, UnsafeMutablePointer<Int64>?, Int32, UnsafeMutablePointer<Int64>?, Int, UInt32) -> Int
    /// The function, or nil on a C library without it.
    static let function: Function? = {
        // RTLD_DEFAULT is the null handle on glibc.
        guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "copy_file_range") else { return nil }
        return unsafeBitCast(symbol, to: Function.self)
    }()
}

/// `sync_file_range(2)` (Linux), looked up at run time because Swift's Glibc module does not
/// import it; used with SYNC_FILE_RANGE_WRITE only: start writeback, do not wait.
enum StartWriteback {
    typealias Function = @convention(c) (Int32, Int64, Int64, UInt32) -> Int32
    /// SYNC_FILE_RANGE_WRITE.
    static let write: UInt32 = 2
    /// The function, or nil on a C library without it.
    static let function: Function? = {
        guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "sync_file_range") else { return nil }
        return unsafeBitCast(symbol, to: Function.self)
    }()
}
