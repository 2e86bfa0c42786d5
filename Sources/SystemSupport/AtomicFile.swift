#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A file being written in place of `destination`: bytes go to a temporary file in the same
/// folder, and only `commit()` makes them visible, by fsync then rename then fsync of the folder.
/// If the writer is dropped or `abandon()` is called first, the temporary file is removed and the
/// destination is untouched — old contents or nothing, never a partial file.
package final class AtomicFile {
    /// The path that `commit()` will create or replace.
    package let destination: String
    /// The temporary path the bytes are written to.
    package var temporaryPath: String { temporary.path }
    private let file: FileDescriptor
    private var isOpen = true
    private var buffer: UnsafeMutableRawPointer
    private var buffered = 0
    private let bufferCapacity = 4 << 20
    /// Bytes written so far (buffered included).
    package private(set) var bytesWritten = 0
    /// The temporary file, registered with `MappingGuard` until it is renamed or deleted.
    private var temporary: TemporaryOutput

    /// Creates the temporary file beside `destination` (exclusively; mode 0644 less the umask).
    package init(destination: String) throws(SystemError) {
        self.destination = destination
        let folder = FileSystem.parentFolder(of: destination)
        let name = destination.split(separator: "/", omittingEmptySubsequences: false).last.map(String.init) ?? destination
        // Temporaries of earlier writers of this destination that were killed (SIGKILL cannot be
        // caught) would otherwise stay forever, each as large as the output.
        StaleTemporaries.remove(in: folder, prefix: ".\(name).tmp-")
        var attempt = 0
        var created: FileDescriptor?
        var path = ""
        while created == nil {
            path = (folder == "." && !destination.hasPrefix("./") ? "" : folder + "/") + ".\(name).tmp-\(ProcessControl.currentID)-\(UInt32.random(in: 0...UInt32.max))"
            do {
                created = try FileDescriptor.openForWriting(path, exclusive: true)
            } catch {
                attempt += 1
                if !error.alreadyExists || attempt > 16 {
                    throw SystemError(path: destination, operation: "create a temporary file in '\(folder)'", code: error.code)
                }
            }
        }
        file = created!
        temporary = TemporaryOutput(path: path, isFolder: false)
        buffer = UnsafeMutableRawPointer.allocate(byteCount: bufferCapacity, alignment: 4096)
    }

    deinit {
        abandon()
        buffer.deallocate()
    }

    /// Reserves `size` bytes on disk up front, so a full disk is reported before any work.
    package func preallocate(_ size: Int) throws(SystemError) {
        guard size > 0 else { return }
        if let available = file.availableSpace(), available < size {
            throw SystemError(path: destination, operation: "reserve \(size) bytes",
                              message: "not enough disk space: the output needs \(size) bytes, the folder's filesystem has \(available) available")
        }
        let result = file.allocate(size)
        if result == ENOSPC || result == EFBIG || result == EDQUOT {
            throw SystemError(path: destination, operation: "reserve \(size) bytes", code: result, hint: " (not enough disk space)")
        }
        // Other failures (e.g. a filesystem without fallocate) are not fatal: the writes will tell.
    }

    /// Appends bytes.
    package func write(_ bytes: UnsafeRawBufferPointer) throws(SystemError) {
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
    package func writeUnbuffered(_ bytes: UnsafeRawBufferPointer) throws(SystemError) {
        guard let src = bytes.baseAddress, bytes.count > 0 else { return }
        try flush()
        try writeAll(src, bytes.count)
        bytesWritten += bytes.count
    }

    /// Appends bytes from an array.
    package func write(_ bytes: [UInt8]) throws(SystemError) {
        try bytes.withUnsafeBytes { raw in Result { () throws(SystemError) in try write(raw) } }.get()
    }

    /// Lends `body` a writable region of `count` bytes (up to the buffer capacity) that becomes
    /// part of the file when `body` returns; avoids a copy for converted data.
    package func withWritableRegion(count: Int, _ body: (UnsafeMutableRawBufferPointer) -> Void) throws(SystemError) {
        precondition(count <= bufferCapacity, "region larger than the write buffer")
        if buffered + count > bufferCapacity { try flush() }
        body(UnsafeMutableRawBufferPointer(start: buffer + buffered, count: count))
        buffered += count
        bytesWritten += count
    }

    /// The largest region `withWritableRegion` can lend.
    package var regionCapacity: Int { bufferCapacity }

    /// Prepares for positioned writes of the bytes that follow the current end: what is
    /// buffered goes to the kernel first. Then `write(_:atEndOffset:)` may be called from several
    /// threads at once for disjoint ranges, and `advance(by:)` appends what they wrote.
    package func beginPositionedWrites() throws(SystemError) {
        try flush()
    }

    /// Writes `bytes` at `offset` bytes past the current end (`pwrite`), without moving the end.
    /// Safe to call from several threads at once for disjoint ranges, between
    /// `beginPositionedWrites()` and `advance(by:)` (which nothing else may run alongside).
    package func write(_ bytes: UnsafeRawBufferPointer, atEndOffset offset: Int) throws(SystemError) {
        precondition(buffered == 0, "positioned write with buffered bytes (call beginPositionedWrites first)")
        do { try file.write(bytes, at: bytesWritten + offset) } catch {
            let code = error.code
            let hint = code == ENOSPC || code == EDQUOT ? " (not enough disk space)" : ""
            throw SystemError(path: destination, operation: "write", code: code, hint: hint)
        }
    }

    /// Appends the `count` bytes written past the end by `write(_:atEndOffset:)` (all of
    /// them must have been written) and starts their writeback as `write` does.
    package func advance(by count: Int) throws(SystemError) {
        precondition(buffered == 0 && count >= 0, "advance with buffered bytes")
        bytesWritten += count
        try file.seek(to: bytesWritten)
        handedOver += count
        if handedOver - writebackStart >= AtomicFile.writebackStep {
            file.startWriteback(offset: writebackStart, count: handedOver - writebackStart)
            writebackStart = handedOver
        }
    }

    /// Appends `count` bytes of another open file, starting at `offset`, copied by the kernel
    /// (`copy_file_range`) without passing through this process's memory. Returns false, having
    /// written nothing, when the kernel cannot do it for these files; the caller then copies.
    package func appendKernelCopy(from source: FileDescriptor, offset: Int, count: Int) throws(SystemError) -> Bool {
        guard count > 0 else { return true }
        try flush()
        var inOffset = Int64(offset)
        var done = 0
        while done < count {
            let copied: Int?
            do { copied = try file.copyFromKernel(source, offset: &inOffset, count: count - done) } catch {
                let code = error.code
                if done == 0 && (code == ENOSYS || code == EXDEV || code == EINVAL || code == EOPNOTSUPP || code == EBADF) { return false }
                let hint = code == ENOSPC || code == EDQUOT ? " (not enough disk space)" : ""
                throw SystemError(path: destination, operation: "copy", code: code, hint: hint)
            }
            guard let n = copied else { return false }
            if n == 0 { throw SystemError(path: destination, operation: "copy", message: "source ended early") }
            done += n
        }
        bytesWritten += count
        return true
    }

    private func flush() throws(SystemError) {
        if buffered > 0 { try writeAll(buffer, buffered) }
        buffered = 0
    }

    private func writeAll(_ pointer: UnsafeRawPointer, _ count: Int) throws(SystemError) {
        do { try file.write(UnsafeRawBufferPointer(start: pointer, count: count)) } catch {
            let code = error.code
            let hint = code == ENOSPC || code == EDQUOT ? " (not enough disk space)"
                : code == EFAULT ? " (the bytes being written come from a file that was truncated while being read)" : ""
            throw SystemError(path: destination, operation: "write", code: code, hint: hint)
        }
        handedOver += count
        // Start the disk writes of what the kernel holds now (asynchronously), so they overlap
        // with the caller's work and the fsync in `commit()` has little left to wait for.
        if handedOver - writebackStart >= AtomicFile.writebackStep {
            file.startWriteback(offset: writebackStart, count: handedOver - writebackStart)
            writebackStart = handedOver
        }
    }

    /// Bytes given to the kernel so far, and the start of those whose writeback was not started.
    private var handedOver = 0
    private var writebackStart = 0
    /// How many bytes accumulate before their writeback is started.
    private static let writebackStep = 8 << 20

    /// Flushes, fsyncs, renames over the destination and fsyncs the folder.
    package func commit() throws(SystemError) {
        precondition(!temporary.isFinished, "commit called twice")
        do throws(SystemError) {
            try flush()
            // The reservation may exceed what was written (it never should); trim to the truth.
            do { try file.truncate(to: bytesWritten) } catch { throw error.about(destination) }
            do { try file.sync() } catch { throw error.about(destination) }
            isOpen = false
            do { try file.closeReportingErrors() } catch { throw error.about(destination) }
            try FileSystem.rename(temporaryPath, to: destination, operation: "rename into place")
            temporary.published()
            FileSystem.sync(FileSystem.parentFolder(of: destination))
        } catch {
            abandon()
            throw error
        }
    }

    /// Discards the temporary file; the destination is untouched.
    package func abandon() {
        if isOpen { file.close(); isOpen = false }
        temporary.discard()
    }
}

extension SystemError {
    /// The same failure, reported for `path` (the destination rather than a temporary file).
    func about(_ path: String) -> SystemError {
        var copy = self
        copy.path = path
        return copy
    }
}
