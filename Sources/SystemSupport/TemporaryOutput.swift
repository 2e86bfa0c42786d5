/// The temporary output of a writer that has not finished — `AtomicFile`'s temporary file or
/// `AtomicFolder`'s staging folder: registered with `MappingGuard`, so a SIGBUS or an interrupt
/// removes it, until it is published (renamed into place) or discarded, whichever comes first.
struct TemporaryOutput {
    /// Where it is.
    let path: String
    /// Whether it is a staging folder (removed with its contents) rather than a file.
    let isFolder: Bool
    private let token: Int
    /// Whether it was published or discarded.
    private(set) var isFinished = false

    /// Registers `path` (which the writer has just created).
    init(path: String, isFolder: Bool) {
        self.path = path
        self.isFolder = isFolder
        token = MappingGuard.registerCleanup(path: path, isFolder: isFolder)
    }

    /// Records that it was renamed into place: nothing is to be removed any more.
    mutating func published() {
        isFinished = true
        MappingGuard.unregisterCleanup(token)
    }

    /// Removes it, once; later calls do nothing.
    mutating func discard() {
        guard !isFinished else { return }
        isFinished = true
        if isFolder { FileSystem.removeTree(path) } else { FileSystem.removeFile(path) }
        MappingGuard.unregisterCleanup(token)
    }
}
