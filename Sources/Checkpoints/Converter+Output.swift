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
    /// beside `path` and put in place only when complete, replacing an existing folder whole (no
    /// file of it is left beside the new ones); a failure removes the staging folder, so nothing
    /// is left behind. A folder that holds the input is refused.
    func writeFolder(_ path: String, specs: [TensorSpec], shardSize: Int,
                     produce: (TensorSink) throws -> Void) throws -> [String] {
        var folder = path
        while folder.count > 1 && folder.hasSuffix("/") { folder.removeLast() }
        if Converter.isFolder(folder) {
            let target = Converter.fileIdentity(folder)!
            for input in source.files.map(\.path) + (source.indexPath.map { [$0] } ?? []) {
                if let id = Converter.fileIdentity(Converter.parentFolder(of: input)), id == target {
                    throw SafeTensorsError.io(file: folder, operation: "write the output",
                                              message: "the folder holds the input '\(input)'; choose another output folder")
                }
            }
            // Staging folders an older FlowGuard left inside the folder.
            StaleTemporaries.remove(in: folder, prefix: ".convert-tmp-")
        }
        let staged = try StagedFolder(destination: folder)
        var names = try ShardedWriter.write(folder: staged.stagingPath, baseName: Converter.folderBaseName, specs: specs,
                                            metadata: outputMetadata, maxShardBytes: shardSize, produce: produce)
            .map(Converter.lastComponent(of:))
        if plan.targetLayout == .diffusers {
            let file = try AtomicFile(destination: staged.stagingPath + "/config.json")
            try file.write(Array(plan.architecture.diffusersConfigJSON().utf8))
            try file.commit()
            names.append("config.json")
        }
        try staged.commit()
        return names.map { folder + "/" + $0 }
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
