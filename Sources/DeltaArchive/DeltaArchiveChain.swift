import JSON
import SafeTensors
import SystemSupport

// A training run stores successive checkpoints as XOR deltas of their predecessors
// (`RUN/checkpoints/step-N/adapter.fgdelta`, docs/training.md); the `checkpoint.json` beside each
// archive names the archive it was packed against (`"reference": "step-M/adapter.fgdelta"`,
// relative to the checkpoints folder). Following those names resolves a whole chain, so an
// archive of a run opens by its path alone.

extension DeltaArchiveReader {
    /// The longest chain of references followed.
    public static let maximumChainLength = 64

    /// Opens the archive at `path`. With `reference`, XOR deltas are undone against it; without
    /// one, the reference recorded in a `checkpoint.json` beside the archive (a training run's
    /// checkpoint) is opened the same way, link by link, so any checkpoint of a run's XOR chain
    /// decodes by itself. An archive that needs a reference and has none recorded opens, and
    /// says so (naming `--reference`) when an XOR tensor is decoded.
    public static func openingChain(path: String, reference: DeltaReference? = nil) throws(DeltaArchiveError) -> DeltaArchiveReader {
        try openingChain(path: path, reference: reference, depth: 0)
    }

    private static func openingChain(path: String, reference: DeltaReference?, depth: Int) throws(DeltaArchiveError) -> DeltaArchiveReader {
        if let reference { return try DeltaArchiveReader(path: path, reference: reference) }
        guard let recorded = try recordedReference(of: path) else { return try DeltaArchiveReader(path: path) }
        guard depth < maximumChainLength else {
            throw .reference(file: path, tensor: "*", reason: "its chain of references is longer than \(maximumChainLength) archives", offset: 0)
        }
        let previous = try openingChain(path: recorded, reference: nil, depth: depth + 1)
        return try DeltaArchiveReader(path: path, reference: .archive(previous))
    }

    /// The path of the archive that `checkpoint.json` beside `path` names as its reference, or
    /// nil when there is no such file or it names none.
    static func recordedReference(of path: String) throws(DeltaArchiveError) -> String? {
        let folder = FileSystem.parentFolder(of: path)
        let sidecar = folder + "/checkpoint.json"
        guard FileSystem.isRegularFile(sidecar) else { return nil }
        let json: JSONValue
        do { json = try JSONValue.parse(try readWholeFile(sidecar, limit: 1 << 20)) } catch {
            throw .reference(file: sidecar, tensor: "*", reason: "the checkpoint's description cannot be read: \(error)", offset: 0)
        }
        guard let reference = json["reference"]?.stringValue else { return nil }
        guard !reference.hasPrefix("/") else {
            throw .reference(file: sidecar, tensor: "*", reason: "the reference \"\(reference)\" is not relative to the checkpoints folder", offset: 0)
        }
        return FileSystem.parentFolder(of: folder) + "/" + reference
    }
}

extension DeltaReference {
    /// Opens `path` as a reference: a delta archive (with its own recorded chain, see
    /// `DeltaArchiveReader.openingChain(path:reference:)`) when it starts with the archive magic,
    /// else a safetensors file.
    public static func openResolvingChain(path: String) throws(DeltaArchiveError) -> DeltaReference {
        if DeltaArchiveReader.hasMagic(path: path) { return .archive(try DeltaArchiveReader.openingChain(path: path)) }
        return try open(path: path)
    }
}
