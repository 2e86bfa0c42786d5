/// Removes what killed runs left behind: temporary outputs named `<prefix><pid>-<random>` (files,
/// or staging folders) whose process `pid` no longer exists. A writer that is killed with
/// SIGKILL cannot clean up after itself, and a reserved temporary file can be as large as the
/// whole output; the next writer to the same destination removes it. Entries of processes that
/// are still running (another writer at work) are left alone.
package enum StaleTemporaries {
    /// Removes stale entries of `folder` whose names start with `prefix` followed by a process id
    /// and a dash. Returns how many were removed. Errors are ignored: this is housekeeping.
    @discardableResult
    package static func remove(in folder: String, prefix: String) -> Int {
        let names = ((try? FileSystem.listFolder(folder)) ?? []).filter { $0.hasPrefix(prefix) }
        var removed = 0
        for name in names {
            let rest = name.dropFirst(prefix.count)
            guard let dash = rest.firstIndex(of: "-"), let pid = Int32(rest[rest.startIndex..<dash]), pid > 0 else { continue }
            if ProcessControl.exists(pid) { continue }
            let path = folder + "/" + name
            if FileSystem.removeFile(path) || removeFolder(path) { removed += 1 }
        }
        return removed
    }

    /// Removes a staging folder and what it holds (best effort: such folders only ever hold
    /// what a writer put there). True when the folder is gone.
    @discardableResult
    package static func removeFolder(_ path: String) -> Bool {
        FileSystem.isFolder(path) && FileSystem.removeTree(path)
    }
}
