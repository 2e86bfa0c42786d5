/// A folder being written in place of `destination`: files go into a hidden staging folder, and
/// only `commit()` makes them visible, by renames, then an fsync of the folders involved. If the
/// writer is dropped or `abandon()` is called first, the staging folder is removed and the
/// destination is untouched. While it exists the staging folder is registered with
/// `MappingGuard`, so a SIGBUS or an interrupt removes it too; staging folders of killed
/// earlier writers are removed when the next one starts.
package final class AtomicFolder {
    /// How the staged files take the destination's place.
    package enum Placement: Sendable {
        /// The staged folder replaces the destination whole: staged beside it, then swapped with
        /// an existing folder in one atomic `renameat2` exchange where the kernel offers it
        /// (otherwise the old folder is moved aside and the new one renamed into place), and the
        /// old one removed.
        /// `staging` and `aside` name the hidden folders beside the destination (default
        /// `.NAME.tmp-PID-RANDOM` and `.NAME.old-PID-RANDOM`); a named staging folder left by an
        /// earlier run is removed first.
        case replace(staging: String? = nil, aside: String? = nil)
        /// The staged files join the destination: when it does not exist, the staged folder
        /// (beside it, `.NAME.tmp-PID-RANDOM`) is renamed into place; when it does, the staged
        /// folder is made inside it (`.TAG-tmp-PID-RANDOM`) and each file is renamed into it,
        /// replacing files of the same name and leaving the others.
        case merge(tag: String = "publish")
    }

    /// The folder `commit()` creates or fills.
    package let destination: String
    /// The folder to write the files into.
    package var stagingPath: String { staging.path }
    private let placement: Placement
    private let existed: Bool
    /// The staging folder, registered with `MappingGuard` until it is published or removed.
    private var staging: TemporaryOutput

    /// Creates the staging folder for `destination` (trailing slashes ignored). Throws when the
    /// destination is a file, or the staging folder cannot be made.
    package init(destination path: String, placement: Placement) throws(SystemError) {
        let folder = FileSystem.trimmingTrailingSlashes(path)
        destination = folder
        self.placement = placement
        let parent = FileSystem.parentFolder(of: folder)
        let name = FileSystem.lastComponent(of: folder)
        let status = FileSystem.status(of: folder)
        existed = status?.kind == .folder
        if status != nil && !existed {
            throw SystemError(path: folder, operation: "create the output folder", message: "a file of that name exists")
        }
        let tag = "tmp-\(ProcessControl.currentID)-\(UInt32.random(in: 0...UInt32.max))"
        let path: String
        switch placement {
        case let .replace(staging, _):
            StaleTemporaries.remove(in: parent, prefix: ".\(name).tmp-")
            StaleTemporaries.remove(in: parent, prefix: ".\(name).old-")
            if let staging { FileSystem.removeTree(parent + "/" + staging) }
            path = parent + "/" + (staging ?? ".\(name).\(tag)")
        case let .merge(inside):
            // Staging folders of killed earlier writers to this folder are removed first.
            if existed { StaleTemporaries.remove(in: folder, prefix: ".\(inside)-tmp-") }
            StaleTemporaries.remove(in: parent, prefix: ".\(name).tmp-")
            path = existed ? folder + "/.\(inside)-" + tag : parent + "/.\(name)." + tag
        }
        do { try FileSystem.makeFolder(path) } catch {
            throw SystemError(path: folder, operation: "create the output folder", code: error.code)
        }
        staging = TemporaryOutput(path: path, isFolder: true)
    }

    deinit { abandon() }

    /// Puts the staged files in place. `order`, for a merge into an existing folder, gives the
    /// names to move and their order (an index last, so it never names a missing shard);
    /// by default every staged name is moved. Returns the paths of the published files.
    @discardableResult
    package func commit(order: [String]? = nil) throws(SystemError) -> [String] {
        precondition(!staging.isFinished, "commit called twice")
        do throws(SystemError) {
            var names = order ?? []
            if order == nil { names = try FileSystem.listFolder(stagingPath).sorted() }
            for name in names { FileSystem.sync(stagingPath + "/" + name) }
            FileSystem.sync(stagingPath)
            let parent = FileSystem.parentFolder(of: destination)
            switch placement {
            case .merge where existed:
                for name in names {
                    try FileSystem.rename(stagingPath + "/" + name, to: destination + "/" + name, operation: "move into place")
                }
                FileSystem.removeEmptyFolder(stagingPath)
            case .merge:
                try FileSystem.rename(stagingPath, to: destination, operation: "move into place")
            case .replace where FileSystem.isFolder(destination) && FileSystem.exchange(stagingPath, destination):
                // One atomic swap: the new folder is in place and the old one at the staging path.
                FileSystem.removeTree(stagingPath)
            case let .replace(_, aside):
                var old: String?
                if FileSystem.exists(destination) {
                    let moved = parent + "/" + (aside ?? ".\(FileSystem.lastComponent(of: destination)).old-\(ProcessControl.currentID)-\(UInt32.random(in: 0...UInt32.max))")
                    FileSystem.removeTree(moved)
                    try FileSystem.rename(destination, to: moved, operation: "replace")
                    old = moved
                }
                do { try FileSystem.rename(stagingPath, to: destination, operation: "move into place") } catch {
                    // Put the old folder back: the destination keeps its old contents.
                    if let old { try? FileSystem.rename(old, to: destination) }
                    throw error
                }
                FileSystem.sync(destination)
                if let old { FileSystem.removeTree(old) }
            }
            staging.published()
            FileSystem.sync(destination)
            FileSystem.sync(parent)
            return names.map { destination + "/" + $0 }
        } catch {
            abandon()
            throw error
        }
    }

    /// Removes the staging folder and everything in it; the destination is untouched.
    package func abandon() { staging.discard() }
}

extension AtomicFile {
    /// Throws the error writing `destination` would meet (its folder missing or not writable), by
    /// creating and removing the temporary file a writer would use: for commands that compute a
    /// while before they write.
    package static func checkWritable(_ destination: String) throws(SystemError) {
        try AtomicFile(destination: destination).abandon()
    }
}

extension AtomicFolder {
    /// Throws the error writing folder `destination` would meet (its parent missing or not
    /// writable, a file in its place), by creating and removing the staging folder.
    package static func checkWritable(_ destination: String) throws(SystemError) {
        try AtomicFolder(destination: destination, placement: .replace()).abandon()
    }
}
