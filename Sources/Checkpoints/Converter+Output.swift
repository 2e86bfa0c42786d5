import SafeTensors
import SystemSupport

extension Converter {
    /// Throws unless `path` is a different file from every file of the source (shards and
    /// index included).
    func refuseOverwritingSource(_ path: String) throws {
        guard let target = FileSystem.identity(of: path) else { return }
        for input in source.files.map(\.path) + (source.indexPath.map { [$0] } ?? []) {
            if let id = FileSystem.identity(of: input), id == target {
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
        if FileSystem.isFolder(path), let target = FileSystem.identity(of: path) {
            for input in source.files.map(\.path) + (source.indexPath.map { [$0] } ?? []) {
                if let id = FileSystem.identity(of: FileSystem.parentFolder(of: input)), id == target {
                    throw SafeTensorsError.io(file: FileSystem.trimmingTrailingSlashes(path), operation: "write the output",
                                              message: "the folder holds the input '\(input)'; choose another output folder")
                }
            }
            // Staging folders an older FlowGuard left inside the folder.
            StaleTemporaries.remove(in: FileSystem.trimmingTrailingSlashes(path), prefix: ".convert-tmp-")
        }
        // The new folder is staged beside the old one and replaces it whole (no file of the old
        // folder is left beside the new ones). Staging folders of killed earlier conversions are
        // removed first; if a source file is truncated under us, the SIGBUS handler empties and
        // removes the staging folder.
        let folder: AtomicFolder
        do { folder = try AtomicFolder(destination: path, placement: .replace()) } catch { throw SafeTensorsError.system(error) }
        var staged = try ShardedWriter.write(folder: folder.stagingPath, baseName: Converter.folderBaseName, specs: specs,
                                             metadata: outputMetadata, maxShardBytes: shardSize, produce: produce)
        if plan.targetLayout == .diffusers {
            let config = folder.stagingPath + "/config.json"
            do {
                let file = try AtomicFile(destination: config)
                try file.write(Array(plan.architecture.diffusersConfigJSON().utf8))
                try file.commit()
            } catch { throw SafeTensorsError.system(error) }
            staged.append(config)
        }
        do { return try folder.commit(order: staged.map(FileSystem.lastComponent(of:))) } catch { throw SafeTensorsError.system(error) }
    }
}
