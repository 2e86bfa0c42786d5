import JSON
import SafeTensors

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
