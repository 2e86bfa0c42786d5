#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import SafeTensors

extension Converter {
    /// Throws unless `path` is a different file from every file of the source (shards and
    /// index included).
    func refuseOverwritingSource(_ path: String) throws {
        guard let target = Converter.fileIdentity(path) else { return }
        for input in source.files.map(\.path) + (source.indexPath.map { [$0] } ?? []) {
            if let id = Converter.fileIdentity(input), id == target {
                throw SafeTensorsError.io(file: path, operation: "write the output",
                                          message: "it is the input file '\(input)' itself; choose another output path")
            }
        }
    }

    /// Writes the folder form of the output. Everything is written into a hidden staging folder
    /// first (beside `path` when it does not exist yet, inside it otherwise) and moved into place
    /// only when complete; a failure removes the staging folder, so nothing is left behind.
    func writeFolder(_ path: String, specs: [TensorSpec], shardSize: Int,
                     produce: (TensorSink) throws -> Void) throws -> [String] {
        var folder = path
        while folder.count > 1 && folder.hasSuffix("/") { folder.removeLast() }
        let exists = Converter.isFolder(folder)
        if exists {
            let target = Converter.fileIdentity(folder)!
            for input in source.files.map(\.path) + (source.indexPath.map { [$0] } ?? []) {
                if let id = Converter.fileIdentity(Converter.parentFolder(of: input)), id == target {
                    throw SafeTensorsError.io(file: folder, operation: "write the output",
                                              message: "the folder holds the input '\(input)'; choose another output folder")
                }
            }
        } else if Converter.fileIdentity(folder) != nil {
            throw SafeTensorsError.io(file: folder, operation: "create the output folder", message: "a file of that name exists")
        }
        // Staging folders of killed earlier conversions to this folder are removed first.
        if exists { StaleTemporaries.remove(in: folder, prefix: ".convert-tmp-") }
        StaleTemporaries.remove(in: Converter.parentFolder(of: folder), prefix: "." + Converter.lastComponent(of: folder) + ".tmp-")
        let tag = "tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let staging = exists ? folder + "/.convert-" + tag
                             : Converter.parentFolder(of: folder) + "/." + Converter.lastComponent(of: folder) + "." + tag
        if mkdir(staging, 0o755) != 0 {
            let code = errno
            throw SafeTensorsError.io(file: folder, operation: "create the output folder", message: Converter.systemMessage(code))
        }
        // If a source file is truncated under us, the SIGBUS handler empties and removes this.
        let guardToken = MappingGuard.registerCleanup(path: staging, isFolder: true)
        defer { MappingGuard.unregisterCleanup(guardToken) }
        do {
            var staged = try ShardedWriter.write(folder: staging, baseName: Converter.folderBaseName, specs: specs,
                                                 metadata: outputMetadata, maxShardBytes: shardSize, produce: produce)
            if plan.targetLayout == .diffusers {
                let config = staging + "/config.json"
                let file = try AtomicFile(destination: config)
                try file.write(Array(plan.architecture.diffusersConfigJSON().utf8))
                try file.commit()
                staged.append(config)
            }
            let names = staged.map(Converter.lastComponent(of:))
            if exists {
                for name in names where rename(staging + "/" + name, folder + "/" + name) != 0 {
                    let code = errno
                    throw SafeTensorsError.io(file: folder + "/" + name, operation: "move into place", message: Converter.systemMessage(code))
                }
                rmdir(staging)
            } else if rename(staging, folder) != 0 {
                let code = errno
                throw SafeTensorsError.io(file: folder, operation: "move into place", message: Converter.systemMessage(code))
            }
            Converter.syncFolder(folder)
            Converter.syncFolder(Converter.parentFolder(of: folder))
            return names.map { folder + "/" + $0 }
        } catch {
            StaleTemporaries.removeFolder(staging)
            throw error
        }
    }
}

extension Converter {
    /// The folder part of a path ("." when there is none).
    static func parentFolder(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        let folder = String(path[..<slash])
        return folder.isEmpty ? "/" : folder
    }

    /// The last component of a path.
    static func lastComponent(of path: String) -> String {
        path.split(separator: "/").last.map(String.init) ?? path
    }

    /// fsync of a folder, so renames in it are durable. Best effort.
    static func syncFolder(_ folder: String) {
        let fd = open(folder, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if fd >= 0 { _ = fsync(fd); close(fd) }
    }

}
