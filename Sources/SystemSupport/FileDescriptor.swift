#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// An open file descriptor and the path it was opened with (named in its errors). Reads and
/// writes retry EINTR and finish short transfers; every failure is a `SystemError` naming the
/// path and the operation. A value: closing is explicit (`close()`), as with the descriptor itself.
package struct FileDescriptor: Sendable, Hashable {
    /// The descriptor number.
    package let rawValue: Int32
    /// The path (or a label such as `<standard error>`) used in error messages.
    package let path: String

    /// Wraps a descriptor that is already open.
    package init(rawValue: Int32, path: String) {
        self.rawValue = rawValue
        self.path = path
    }

    /// Standard error (descriptor 2).
    package static let standardError = FileDescriptor(rawValue: 2, path: "<standard error>")

    /// Whether the descriptor is a terminal (`isatty(3)`): progress is redrawn in place only there.
    package var isTerminal: Bool { isatty(rawValue) == 1 }

    // MARK: opening and closing

    /// Opens `path` read-only (close-on-exec).
    package static func openForReading(_ path: String) throws(SystemError) -> FileDescriptor {
        try open(path, flags: O_RDONLY, permissions: 0, operation: "open")
    }

    /// Opens (creating when missing) `path` write-only, close-on-exec. With `exclusive` an
    /// existing file is an error (`alreadyExists`); with `truncate` an existing file is emptied.
    package static func openForWriting(_ path: String, exclusive: Bool = false, truncate: Bool = false,
                                       permissions: UInt32 = 0o644) throws(SystemError) -> FileDescriptor {
        let flags = O_WRONLY | O_CREAT | (exclusive ? O_EXCL : 0) | (truncate ? O_TRUNC : 0)
        return try open(path, flags: flags, permissions: permissions, operation: "open for writing")
    }

    private static func open(_ path: String, flags: Int32, permissions: UInt32, operation: String) throws(SystemError) -> FileDescriptor {
        let fd = retryingInterrupts { systemOpen(path, flags | O_CLOEXEC, mode_t(permissions)) }
        guard fd >= 0 else { throw .last(path: path, operation: operation) }
        return FileDescriptor(rawValue: fd, path: path)
    }

    /// Closes the descriptor, ignoring errors (for descriptors only read from, or on error paths).
    package func close() { _ = systemClose(rawValue) }

    /// Closes the descriptor; a failure (a delayed write error on some filesystems) is reported.
    package func closeReportingErrors() throws(SystemError) {
        if systemClose(rawValue) != 0 { throw .last(path: path, operation: "close") }
    }

    // MARK: reading

    /// One `read(2)` into `buffer` (EINTR retried): the number of bytes read, 0 at end of file.
    package func readSome(into buffer: UnsafeMutableRawBufferPointer) throws(SystemError) -> Int {
        guard let base = buffer.baseAddress, buffer.count > 0 else { return 0 }
        let n = retryingInterrupts { systemRead(rawValue, base, buffer.count) }
        guard n >= 0 else { throw .last(path: path, operation: "read") }
        return n
    }

    /// Reads until `buffer` is full or the file ends; returns the bytes read.
    package func read(into buffer: UnsafeMutableRawBufferPointer) throws(SystemError) -> Int {
        var done = 0
        while done < buffer.count {
            let n = try readSome(into: UnsafeMutableRawBufferPointer(rebasing: buffer[done...]))
            if n == 0 { break }
            done += n
        }
        return done
    }

    /// Reads from file offset `offset` (`pread(2)`, not moving the descriptor's position) until
    /// `buffer` is full or the file ends; returns the bytes read.
    package func read(into buffer: UnsafeMutableRawBufferPointer, at offset: Int) throws(SystemError) -> Int {
        guard let base = buffer.baseAddress else { return 0 }
        var done = 0
        // Invariant: each call gets `base + done ..< base + buffer.count`, inside the buffer.
        while done < buffer.count {
            let n = retryingInterrupts { pread(rawValue, base + done, buffer.count - done, off_t(offset + done)) }
            guard n >= 0 else { throw .last(path: path, operation: "read") }
            if n == 0 { break }
            done += n
        }
        return done
    }

    // MARK: writing

    /// Writes all of `bytes` at the current position, however many `write(2)` calls it takes.
    package func write(_ bytes: UnsafeRawBufferPointer) throws(SystemError) {
        guard let base = bytes.baseAddress else { return }
        var done = 0
        // Invariant: each call gets `base + done ..< base + bytes.count`, inside the buffer.
        while done < bytes.count {
            let n = retryingInterrupts { systemWrite(rawValue, base + done, bytes.count - done) }
            guard n >= 0 else { throw .last(path: path, operation: "write") }
            // A write of zero bytes for a non-empty request makes no progress: report it.
            guard n > 0 else { throw SystemError(path: path, operation: "write", code: EIO) }
            done += n
        }
    }

    /// Writes all of `bytes`.
    package func write(_ bytes: [UInt8]) throws(SystemError) {
        try bytes.withUnsafeBytes { raw in Result { () throws(SystemError) in try write(raw) } }.get()
    }

    /// Writes all of `bytes` at file offset `offset` (`pwrite(2)`, not moving the position).
    package func write(_ bytes: UnsafeRawBufferPointer, at offset: Int) throws(SystemError) {
        guard let base = bytes.baseAddress else { return }
        var done = 0
        // Invariant: each call gets `base + done ..< base + bytes.count`, inside the buffer.
        while done < bytes.count {
            let n = retryingInterrupts { pwrite(rawValue, base + done, bytes.count - done, off_t(offset + done)) }
            guard n >= 0 else { throw .last(path: path, operation: "write") }
            guard n > 0 else { throw SystemError(path: path, operation: "write", code: EIO) }
            done += n
        }
    }

    // MARK: size, position, durability

    /// What `fstat(2)` says about the open file.
    package func status() throws(SystemError) -> FileStatus {
        var st = stat()
        guard fstat(rawValue, &st) == 0 else { throw .last(path: path, operation: "stat") }
        return FileStatus(st)
    }

    /// Sets the file's size (`ftruncate(2)`).
    package func truncate(to size: Int) throws(SystemError) {
        guard retryingInterrupts({ ftruncate(rawValue, off_t(size)) }) == 0 else {
            throw .last(path: path, operation: "truncate")
        }
    }

    /// Moves the position to `offset` from the start.
    package func seek(to offset: Int) throws(SystemError) {
        guard lseek(rawValue, off_t(offset), SEEK_SET) >= 0 else { throw .last(path: path, operation: "seek") }
    }

    /// The current position (bytes from the start; -1 if the descriptor cannot seek).
    package var position: Int { Int(lseek(rawValue, 0, SEEK_CUR)) }

    /// Flushes the file's data and metadata to the disk (`fsync(2)`).
    package func sync() throws(SystemError) {
        guard retryingInterrupts({ fsync(rawValue) }) == 0 else { throw .last(path: path, operation: "fsync") }
    }

    /// Reserves `size` bytes from the start (`posix_fallocate`); returns 0 or the error code
    /// (`posix_fallocate` reports through its result, not errno).
    package func allocate(_ size: Int) -> Int32 {
        #if canImport(Glibc)
        return posix_fallocate(rawValue, 0, off_t(size))
        #else
        return 0
        #endif
    }

    /// Bytes available to this user on the file's filesystem (`fstatvfs`), nil when unknown.
    package func availableSpace() -> Int? {
        var fs = statvfs()
        guard fstatvfs(rawValue, &fs) == 0 else { return nil }
        return Int(clamping: UInt64(fs.f_bavail) &* UInt64(fs.f_frsize))
    }

    /// Starts the disk writes of bytes `offset ..< offset + count` without waiting for them
    /// (`sync_file_range` with SYNC_FILE_RANGE_WRITE; Linux). Advisory: nothing happens where
    /// the call does not exist.
    package func startWriteback(offset: Int, count: Int) {
        _ = DynamicSymbols.syncFileRange?(rawValue, Int64(offset), Int64(count), DynamicSymbols.syncFileRangeWrite)
    }

    /// Appends up to `count` bytes of `source` from `offset` (advanced by what was copied) at
    /// this descriptor's position, copied by the kernel (`copy_file_range`). Returns the bytes
    /// copied (0 when the source ended), or nil when the C library has no such call.
    package func copyFromKernel(_ source: FileDescriptor, offset: inout Int64, count: Int) throws(SystemError) -> Int? {
        guard let copy = DynamicSymbols.copyFileRange else { return nil }
        let n = retryingInterrupts { copy(source.rawValue, &offset, rawValue, nil, count, 0) }
        guard n >= 0 else { throw .last(path: path, operation: "copy") }
        return n
    }

    /// Whether every page of bytes `range` of the file is in the page cache (`mincore` on a
    /// short-lived mapping of the range). False when it cannot be told.
    package func isResident(_ range: Range<Int>) -> Bool {
        let page = SystemInfo.pageSize
        let start = range.lowerBound / page * page
        let length = range.upperBound - start
        guard length > 0 else { return true }
        // Invariant: the short-lived mapping is only passed to mincore (never read) and
        // unmapped before returning; `vector` holds one byte per page of it.
        guard let map = mmap(nil, length, PROT_READ, MAP_SHARED, rawValue, off_t(start)), map != MAP_FAILED else { return false }
        defer { munmap(map, length) }
        var vector = [UInt8](repeating: 0, count: (length + page - 1) / page)
        #if canImport(Glibc)
        guard mincore(map, length, &vector) == 0 else { return false }
        #else
        guard vector.withUnsafeMutableBufferPointer({ mincore(map, length, UnsafeMutableRawPointer($0.baseAddress!).assumingMemoryBound(to: CChar.self)) }) == 0 else { return false }
        #endif
        return vector.allSatisfy { $0 & 1 == 1 }
    }
}

/// What `stat(2)` tells about a file.
package struct FileStatus: Sendable, Equatable {
    /// The kinds of file FlowGuard tells apart.
    package enum Kind: Sendable, Equatable {
        /// A regular file.
        case regular
        /// A folder.
        case folder
        /// A symbolic link (only from `FileSystem.status(of:followingLinks: false)`).
        case link
        /// Anything else: a device, a pipe, a socket.
        case other
    }

    /// The kind of file.
    package var kind: Kind
    /// Its size in bytes.
    package var size: Int
    /// Device and inode: equal for two paths naming the same file.
    package var identity: FileIdentity

    init(_ st: stat) {
        switch st.st_mode & S_IFMT {
        case S_IFREG: kind = .regular
        case S_IFDIR: kind = .folder
        case S_IFLNK: kind = .link
        default: kind = .other
        }
        size = Int(st.st_size)
        identity = FileIdentity(device: UInt64(st.st_dev), inode: UInt64(st.st_ino))
    }
}

/// A file's device and inode numbers: two paths with equal identities name the same file.
package struct FileIdentity: Sendable, Hashable {
    /// `st_dev`.
    package var device: UInt64
    /// `st_ino`.
    package var inode: UInt64
}

/// Facts about the machine.
package enum SystemInfo {
    /// The size of a memory page.
    package static var pageSize: Int { Int(sysconf(Int32(_SC_PAGESIZE))) }
    /// The number of processors available to this process (at least 1).
    package static var activeProcessors: Int { max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))) }
}
