#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A folder written in place of `destination` as a whole: files go into a hidden staging folder
/// beside it (`.NAME.tmp-PID-RANDOM`), and only `commit()` puts it in place, replacing what was
/// at `destination` entirely — no file of an earlier folder (a stale shard, an
/// `adapter_model.bin`) survives beside the new ones. The replacement is one atomic
/// `renameat2(RENAME_EXCHANGE)` where the kernel offers it, otherwise the old folder is moved
/// aside first. If the writer is dropped or `abandon()` is called first, the staging folder is
/// removed and the destination is untouched.
public final class StagedFolder {
    /// The folder `commit()` creates or replaces (trailing slashes removed).
    public let destination: String
    /// The folder to write the files into.
    public let stagingPath: String
    private var finished = false
    private var guardToken: Int

    /// Creates the staging folder beside `destination`. Throws when a file (not a folder) is
    /// at `destination`, or the staging folder cannot be made.
    public init(destination path: String) throws(SafeTensorsError) {
        var folder = path
        while folder.count > 1 && folder.hasSuffix("/") { folder.removeLast() }
        destination = folder
        var st = stat()
        if stat(folder, &st) == 0 && (st.st_mode & S_IFMT) != S_IFDIR {
            throw .io(file: folder, operation: "create the output folder", message: "a file of that name exists")
        }
        let parent = AtomicFile.folder(of: folder)
        let name = folder.split(separator: "/").last.map(String.init) ?? folder
        // Staging folders of killed earlier writers of this destination.
        StaleTemporaries.remove(in: parent, prefix: ".\(name).tmp-")
        StaleTemporaries.remove(in: parent, prefix: ".\(name).old-")
        let staging = (parent == "." && !folder.hasPrefix("./") ? "" : parent + "/")
            + ".\(name).tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        if mkdir(staging, 0o755) != 0 {
            throw .io(file: folder, operation: "create the output folder", message: errnoMessage())
        }
        stagingPath = staging
        guardToken = MappingGuard.registerCleanup(path: staging, isFolder: true)
    }

    deinit { abandon() }

    /// Puts the staged folder in place of the destination (replacing it whole) and removes the
    /// old one. Returns the paths of the files now in the destination, sorted by name.
    @discardableResult
    public func commit() throws(SafeTensorsError) -> [String] {
        precondition(!finished, "commit called twice")
        let names = ((try? StagedFolder.names(in: stagingPath)) ?? []).sorted()
        for name in names { AtomicFile.syncPath(stagingPath + "/" + name) }
        AtomicFile.syncPath(stagingPath)
        var st = stat()
        if lstat(destination, &st) != 0 {
            guard rename(stagingPath, destination) == 0 else {
                let message = errnoMessage()
                abandon()
                throw .io(file: destination, operation: "move into place", message: message)
            }
        } else if Exchange.function?(AT_FDCWD, stagingPath, AT_FDCWD, destination, Exchange.flag) == 0 {
            // The old folder is now at the staging path.
            StagedFolder.removeTree(stagingPath)
        } else {
            let aside = AtomicFile.folder(of: stagingPath) + "/." + (destination.split(separator: "/").last.map(String.init) ?? destination)
                + ".old-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
            guard rename(destination, aside) == 0 else {
                let message = errnoMessage()
                abandon()
                throw .io(file: destination, operation: "replace", message: message)
            }
            guard rename(stagingPath, destination) == 0 else {
                let message = errnoMessage()
                _ = rename(aside, destination)
                abandon()
                throw .io(file: destination, operation: "move into place", message: message)
            }
            StagedFolder.removeTree(aside)
        }
        finished = true
        MappingGuard.unregisterCleanup(guardToken)
        AtomicFile.syncPath(destination)
        AtomicFile.syncPath(AtomicFile.folder(of: destination))
        return names.map { destination + "/" + $0 }
    }

    /// Removes the staging folder and everything in it; the destination is untouched.
    public func abandon() {
        guard !finished else { return }
        finished = true
        StagedFolder.removeTree(stagingPath)
        MappingGuard.unregisterCleanup(guardToken)
    }

    /// Removes `path` and, for a folder, everything below it; links are removed, never followed.
    @discardableResult
    public static func removeTree(_ path: String) -> Bool {
        var st = stat()
        guard lstat(path, &st) == 0 else { return true }
        guard (st.st_mode & S_IFMT) == S_IFDIR else { return unlink(path) == 0 }
        for name in (try? names(in: path)) ?? [] { removeTree(path + "/" + name) }
        return rmdir(path) == 0
    }

    /// The names in a folder, without `.` and `..`.
    static func names(in path: String) throws(SafeTensorsError) -> [String] {
        guard let dir = opendir(path) else { throw .io(file: path, operation: "list folder", message: errnoMessage()) }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            // d_name is a NUL-terminated array inside the entry, valid until the next readdir.
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }
}

/// glibc's `renameat2`, looked up at run time (Swift's Glibc module does not import it); used
/// with RENAME_EXCHANGE only: swap two paths atomically.
enum Exchange {
    typealias Function = @convention(c) (Int32, UnsafePointer<CChar>, Int32, UnsafePointer<CChar>, UInt32) -> Int32
    /// RENAME_EXCHANGE.
    static let flag: UInt32 = 2
    /// The function, or nil on a C library without it.
    static let function: Function? = {
        guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "renameat2") else { return nil }
        return unsafeBitCast(symbol, to: Function.self)
    }()
}

extension AtomicFile {
    /// fsync of a file or folder (best effort).
    static func syncPath(_ path: String) {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        if fd >= 0 { _ = fsync(fd); close(fd) }
    }
}

extension AtomicFile {
    /// Throws the error writing `destination` would meet (its folder missing or not writable)
    /// by creating and removing the temporary file a writer would use: for commands that
    /// compute for a while before they write.
    public static func checkWritable(_ destination: String) throws(SafeTensorsError) {
        let probe = try AtomicFile(destination: destination)
        probe.abandon()
    }
}

extension StagedFolder {
    /// Throws the error writing folder `destination` would meet (its parent missing or not
    /// writable, a file in its place), by creating and removing the staging folder.
    public static func checkWritable(_ destination: String) throws(SafeTensorsError) {
        let probe = try StagedFolder(destination: destination)
        probe.abandon()
    }
}
