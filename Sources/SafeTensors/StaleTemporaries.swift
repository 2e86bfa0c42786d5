#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Removes what killed runs left behind: temporary outputs named `<prefix><pid>-<random>` (files,
/// or staging folders holding plain files) whose process `pid` no longer exists. A writer that is
/// killed with SIGKILL cannot clean up after itself, and a reserved temporary file can be as large
/// as the whole output; the next writer to the same destination removes it. Entries of processes
/// that are still running (another writer at work) are left alone.
public enum StaleTemporaries {
    /// Removes stale entries of `folder` whose names start with `prefix` followed by a process id
    /// and a dash. Returns how many were removed. Errors are ignored: this is housekeeping.
    @discardableResult
    public static func remove(in folder: String, prefix: String) -> Int {
        guard let dir = opendir(folder) else { return 0 }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
            }
            if name.hasPrefix(prefix) { names.append(name) }
        }
        closedir(dir)
        var removed = 0
        for name in names {
            let rest = name.dropFirst(prefix.count)
            guard let dash = rest.firstIndex(of: "-"), let pid = Int32(rest[rest.startIndex..<dash]), pid > 0 else { continue }
            // kill(pid, 0) fails with ESRCH only when no such process exists.
            if kill(pid, 0) == 0 || errno != ESRCH { continue }
            let path = folder + "/" + name
            if unlink(path) == 0 || removeFolder(path) { removed += 1 }
        }
        return removed
    }

    /// Removes a staging folder's plain files, then the folder (best effort: such folders only
    /// ever hold files a writer put there). True when the folder is gone.
    @discardableResult
    public static func removeFolder(_ path: String) -> Bool {
        guard let dir = opendir(path) else { return false }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
            }
            if name != "." && name != ".." { names.append(name) }
        }
        closedir(dir)
        for name in names { _ = unlink(path + "/" + name) }
        return rmdir(path) == 0
    }
}
