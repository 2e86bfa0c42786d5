import JSON
import SafeTensors
import SystemSupport

extension Architecture {
    /// The architecture of the checkpoint at `path` (a .safetensors file, a shard index or a model
    /// folder), detected from its tensor names and shapes; see `detect(_:)`. Only headers are read.
    public init(checkpointAt path: String) throws {
        self = try Architecture.detect(TensorCollection.transformerCheckpoint(path).infos).architecture
    }

    /// The architecture described by the diffusers transformer `config.json` at `path`; see
    /// `init(diffusersConfig:)`. A file that is not JSON is a `CheckpointError.invalidConfig` naming it.
    public init(diffusersConfigAt path: String) throws {
        let data = try readWholeFile(path, limit: 16 << 20)
        let value: JSONValue
        do { value = try JSONValue.parse(data) } catch {
            throw CheckpointError.invalidConfig("\(path) is not JSON (\(error))")
        }
        try self.init(diffusersConfig: value)
    }

    /// The base architecture a user names for an adapter: detected from the checkpoint `base`, or
    /// read from the diffusers config file `config` (when both are given, `base`); nil when neither
    /// is given, and the caller infers it from the adapter.
    public static func given(base: String?, config: String?) throws -> Architecture? {
        if let base { return try Architecture(checkpointAt: base) }
        if let config { return try Architecture(diffusersConfigAt: config) }
        return nil
    }
}

/// A checkpoint's architecture as the commands report it: detected from the weights, with the
/// values no weight holds taken from a diffusers `config.json` when there is one, and notes on
/// what is assumed or unknown.
public struct DescribedCheckpoint: Sendable {
    /// The architecture, layout and prefix.
    public var detected: DetectedCheckpoint
    /// The `config.json` whose values were used (given, or the folder's own), if any.
    public var configPath: String?
    /// Sentences on the derived `config.json`: values assumed, left null, or written with
    /// diffusers' default because neither the weights nor a configuration hold them.
    public var notes: [String]

    /// Describes tensors by their names and shapes alone (no configuration).
    public init(detecting infos: [TensorInfo], families: [ModelFamily] = ModelFamily.builtIn) throws {
        let detected = try Architecture.detect(infos, families: families)
        let defaulted = detected.architecture.config.base.defaultedConfigKeys.map { key, value in
            "\(key) is not stored in the weights: diffusers' default \(value) is written; "
                + "pass --config with the model's config.json to carry its own value"
        }
        self.init(detected: detected, configPath: nil, notes: detected.architecture.notes + defaulted)
    }

    /// A description from its parts.
    public init(detected: DetectedCheckpoint, configPath: String?, notes: [String]) {
        self.detected = detected
        self.configPath = configPath
        self.notes = notes
    }
}

extension Architecture {
    /// Describes the checkpoint `collection` (opened from `collection.path`). `configPath` (a
    /// diffusers `config.json`) — or, without it, the `config.json` of a model folder — supplies
    /// the values the weights do not hold (`sample_size`, a head size, RoPE axes); the weights
    /// must match it. Without any, those values are diffusers' defaults or null, and the notes
    /// say which.
    public static func describe(_ collection: TensorCollection, configPath: String? = nil) throws -> DescribedCheckpoint {
        var config = configPath
        if config == nil, FileSystem.isFolder(collection.path) {
            let candidate = FileSystem.trimmingTrailingSlashes(collection.path) + "/config.json"
            if FileSystem.isRegularFile(candidate) { config = candidate }
        }
        guard let config else { return try DescribedCheckpoint(detecting: collection.infos) }
        let entries = collection.infos.map(TensorShapeEntry.init)
        let described = try Architecture(diffusersConfigAt: config)
        let detected: DetectedCheckpoint
        do { detected = try described.recogniseLayout(of: entries) } catch {
            throw CheckpointError.invalidConfig("the weights of \(collection.path) do not match \(config), which describes "
                                                + "\(described.summary): \(error)")
        }
        return DescribedCheckpoint(detected: detected, configPath: config, notes: detected.architecture.notes)
    }
}
