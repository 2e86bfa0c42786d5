#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Paths: what they name, their folders' contents, and the calls that create, move and remove
/// them. Queries answer nil/false rather than throw; changes throw `SystemError`.
package enum FileSystem {
    // MARK: what a path names

    /// What `stat(2)` (or with `followingLinks: false`, `lstat(2)`) says, nil when the path
    /// does not exist or cannot be reached.
    package static func status(of path: String, followingLinks: Bool = true) -> FileStatus? {
        var st = stat()
        let result = followingLinks ? stat(path, &st) : lstat(path, &st)
        return result == 0 ? FileStatus(st) : nil
    }

    /// Whether `path` names an existing folder (following links).
    package static func isFolder(_ path: String) -> Bool { status(of: path)?.kind == .folder }

    /// Whether `path` names an existing regular file (following links).
    package static func isRegularFile(_ path: String) -> Bool { status(of: path)?.kind == .regular }

    /// Whether anything exists at `path` (following links).
    package static func exists(_ path: String) -> Bool { status(of: path) != nil }

    /// The size of the file at `path`, 0 when it cannot be read.
    package static func size(of path: String) -> Int { status(of: path)?.size ?? 0 }

    /// Device and inode of `path`, nil when it does not exist.
    package static func identity(of path: String) -> FileIdentity? { status(of: path)?.identity }

    /// Whether `path` is a regular file this process may execute.
    package static func isExecutableFile(_ path: String) -> Bool {
        access(path, X_OK) == 0 && isRegularFile(path)
    }

    // MARK: path strings

    /// The folder part of a path ("." when there is none, "/" for a file at the root).
    package static func parentFolder(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        let folder = String(path[..<slash])
        return folder.isEmpty ? "/" : folder
    }

    /// `path` without trailing slashes ("/" stays "/").
    package static func trimmingTrailingSlashes(_ path: String) -> String {
        var trimmed = path
        while trimmed.count > 1 && trimmed.hasSuffix("/") { trimmed.removeLast() }
        return trimmed
    }

    /// The last component of a path (trailing slashes ignored).
    package static func lastComponent(of path: String) -> String {
        path.split(separator: "/").last.map(String.init) ?? path
    }

    // MARK: folders

    /// The names in folder `path` (hidden ones included, `.` and `..` not), in the order the
    /// filesystem gives them.
    package static func listFolder(_ path: String) throws(SystemError) -> [String] {
        guard let dir = opendir(path) else { throw .last(path: path, operation: "list folder") }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = entryName(entry)
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }

    /// The name in a `readdir` entry. `d_name` is a fixed-size, NUL-terminated C array inside
    /// the entry, valid until the next `readdir` on the same stream (we copy it out at once).
    private static func entryName(_ entry: UnsafeMutablePointer<dirent>) -> String {
        withUnsafeBytes(of: entry.pointee.d_name) { raw in
            String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
        }
    }

    /// Creates folder `path` (mode 0755 less the umask). Fails if anything exists there.
    package static func makeFolder(_ path: String) throws(SystemError) {
        guard mkdir(path, 0o755) == 0 else { throw .last(path: path, operation: "create folder") }
    }

    /// Creates a new, uniquely named folder `<folder>/<prefix>XXXXXX` (mode 0700) and returns
    /// its path.
    package static func makeTemporaryFolder(in folder: String, prefix: String) throws(SystemError) -> String {
        var template = Array(((folder.hasSuffix("/") ? folder : folder + "/") + prefix + "XXXXXX").utf8CString)
        // mkdtemp replaces the X's in place; the result is the template up to its NUL.
        let made = template.withUnsafeMutableBufferPointer { buffer in mkdtemp(buffer.baseAddress!).map { String(cString: $0) } }
        guard let made else { throw .last(path: folder, operation: "create a temporary folder") }
        return made
    }

    // MARK: moving and removing

    /// Renames `source` to `destination`, replacing a file (or an empty folder) there
    /// (`rename(2)`: atomic within one filesystem).
    package static func rename(_ source: String, to destination: String, operation: String = "rename") throws(SystemError) {
        guard systemRename(source, destination) == 0 else { throw .last(path: destination, operation: operation) }
    }

    /// Swaps `a` and `b` atomically (`renameat2(2)` with RENAME_EXCHANGE; both must exist, in one
    /// filesystem). False, having changed nothing, where the kernel or C library cannot.
    package static func exchange(_ a: String, _ b: String) -> Bool {
        guard let renameAt2 = DynamicSymbols.renameAt2 else { return false }
        return renameAt2(AT_FDCWD, a, AT_FDCWD, b, DynamicSymbols.renameExchange) == 0
    }

    /// Removes the file (not folder) `path`; true when it is gone.
    @discardableResult
    package static func removeFile(_ path: String) -> Bool { unlink(path) == 0 }

    /// Removes the empty folder `path`; true when it is gone.
    @discardableResult
    package static func removeEmptyFolder(_ path: String) -> Bool { rmdir(path) == 0 }

    /// Removes `path` and, for a folder, everything below it. Links are removed, never
    /// followed. True when nothing is left at `path`.
    @discardableResult
    package static func removeTree(_ path: String) -> Bool {
        guard let st = status(of: path, followingLinks: false) else { return true }
        guard st.kind == .folder else { return unlink(path) == 0 }
        for name in (try? listFolder(path)) ?? [] { removeTree(path + "/" + name) }
        return rmdir(path) == 0
    }

    /// Makes the entry of `path` and its contents durable (`fsync` of the file or folder).
    /// Best effort: renames in a folder are durable once the folder is synced.
    package static func sync(_ path: String) {
        let fd = systemOpen(path, O_RDONLY | O_CLOEXEC, 0)
        if fd >= 0 { _ = fsync(fd); _ = systemClose(fd) }
    }

    // MARK: whole files

    /// Reads a whole small file (an index, a config), refusing files that are not regular or are
    /// larger than `limit` bytes (`exceedsLimit`), before reading anything.
    package static func readFile(_ path: String, limit: Int) throws(SystemError) -> [UInt8] {
        let file = try FileDescriptor.openForReading(path)
        defer { file.close() }
        let st = try file.status()
        guard st.kind == .regular else { throw SystemError(path: path, operation: "read", message: "not a regular file") }
        guard st.size <= limit else {
            throw SystemError(path: path, operation: "read", message: "file larger than \(limit) bytes", code: SystemError.limitCode)
        }
        var bytes = [UInt8](repeating: 0, count: st.size)
        let done = try bytes.withUnsafeMutableBytes { raw in Result { () throws(SystemError) in try file.read(into: raw) } }.get()
        return done == bytes.count ? bytes : Array(bytes[0..<done])
    }
}
