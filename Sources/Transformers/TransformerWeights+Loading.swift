import Checkpoints
import JSON
import SafeTensors
import SystemSupport

/// What opening a checkpoint finds: the architecture, layout and the diffusers-name table.
/// Reads headers (and `config.json`) only, never tensor data.
struct OpenedCheckpoint {
    var architecture: Architecture
    var layout: KeyLayout
    var notes: [String]
    var configPath: String?
    var table: [String: StoredWeight]
    var names: [String]

    init(path: String, configPath explicitConfig: String?) throws(TransformerError) {
        let collection: TensorCollection
        do { collection = try TensorCollection.transformerCheckpoint(path) } catch { throw .unreadable(error) }
        let entries = collection.infos.map(TensorShapeEntry.init)

        let config = explicitConfig ?? Self.folderConfig(path)
        let detected: DetectedCheckpoint
        if let config {
            let described = try Self.readConfig(config)
            do { detected = try described.recogniseLayout(of: entries) } catch {
                throw .badCheckpoint(path: path, reason: "the weights do not match \(config), which describes "
                                     + "\(described.summary): \(error)")
            }
        } else {
            do { detected = try Architecture.detect(entries) } catch {
                throw .badCheckpoint(path: path, reason: "not a transformer checkpoint FlowGuard knows "
                                     + "(SD3/SD3.5 or FLUX.1, original or diffusers layout): \(error)")
            }
        }
        // Values neither the weights nor a configuration determine (an SD3 head size, FLUX RoPE
        // axes) are not needed to read weights: they are reported in `notes`, and a model that
        // needs them refuses to run.
        let architecture = detected.architecture
        notes = collection.notes + architecture.notes
        self.architecture = architecture
        layout = detected.layout
        configPath = config

        let plan = ConversionPlan(source: detected, to: .diffusers)
        var table: [String: StoredWeight] = [:]
        var names: [String] = []
        names.reserveCapacity(plan.outputs.count)
        for output in plan.outputs {
            var pieces: [MappedPiece] = []
            for slice in output.pieces {
                guard let entry = collection.entry(slice.source) else {
                    throw .missingWeight(path: path, name: slice.source)
                }
                let info = entry.info
                let offset = entry.file.fileOffset(of: info)
                guard info.dtype.isFloatingPoint else {
                    throw .badWeight(file: entry.file.path, tensor: info.name, offset: offset,
                                     reason: "stored as \(info.dtype.rawValue), which is not a floating-point type")
                }
                if let encoding = entry.encoding, !encoding.isDecodable {
                    throw .badWeight(file: entry.file.path, tensor: info.name, offset: offset,
                                     reason: "stored as \(encoding.name) blocks, which FlowGuard cannot decode")
                }
                let rowCount = info.shape.first ?? 1
                guard slice.rows.lowerBound >= 0, slice.rows.upperBound <= rowCount,
                      Array(info.shape.dropFirst()) == Array(output.shape.dropFirst()) else {
                    throw .badWeight(file: entry.file.path, tensor: info.name, offset: offset,
                                     reason: "rows \(slice.rows.lowerBound)..<\(slice.rows.upperBound) of shape \(info.shape) "
                                         + "do not fit \"\(output.name)\" of shape \(output.shape)")
                }
                pieces.append(MappedPiece(entry: entry, rows: slice.rows))
            }
            table[output.name] = StoredWeight(shape: output.shape, storage: .mapped(pieces))
            names.append(output.name)
        }
        self.table = table
        self.names = names
    }

    /// `config.json` beside the weights when `path` is a folder holding one.
    static func folderConfig(_ path: String) -> String? {
        guard FileSystem.isFolder(path) else { return nil }
        let candidate = (path.hasSuffix("/") ? path : path + "/") + "config.json"
        return FileSystem.isRegularFile(candidate) ? candidate : nil
    }

    /// The architecture a diffusers `config.json` describes.
    static func readConfig(_ path: String) throws(TransformerError) -> Architecture {
        let bytes = try readSmallFile(path)
        let json: JSONValue
        do { json = try JSONValue.parse(bytes) } catch {
            throw .badCheckpoint(path: path, reason: "not valid JSON: \(error)")
        }
        do { return try Architecture(diffusersConfig: json) } catch {
            throw .badCheckpoint(path: path, reason: "not a diffusers transformer configuration: \(error)")
        }
    }

    /// The bytes of a small text file (a configuration), at most 16 MB.
    static func readSmallFile(_ path: String) throws(TransformerError) -> [UInt8] {
        do { return try FileSystem.readFile(path, limit: 16 << 20) } catch {
            if error.exceedsLimit { throw .badCheckpoint(path: path, reason: "the configuration is larger than 16 MB") }
            let verb = error.operation == "open" ? "open" : "read"
            throw .badCheckpoint(path: path, reason: "cannot \(verb) the configuration: \(error.message)")
        }
    }
}
