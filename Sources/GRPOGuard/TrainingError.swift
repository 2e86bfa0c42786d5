/// Everything that can stop `flowguard train`. The description is the sentence the user reads: it
/// names the file (config, model, prompts, run folder) and the key or tensor at fault.
public enum TrainingError: Error, Sendable, CustomStringConvertible {
    /// The config file cannot be read or is not a JSON object.
    case unreadableConfig(path: String, reason: String)
    /// A config key is unknown, or its value has the wrong type or lies outside its range.
    case badConfigValue(source: String, key: String, reason: String)
    /// A `lora_targets` name that matches no attention module of the model.
    case unknownTarget(target: String, model: String, known: [String])
    /// A required config key is missing.
    case missingConfigValue(source: String, key: String)
    /// The model cannot be loaded.
    case model(path: String, reason: String)
    /// A base adapter (`base_adapters`) cannot be read, does not fit the model, or is not the
    /// file the config's content hash names; the message starts with the adapter's path.
    case baseAdapter(String)
    /// The prompt file cannot be read or does not fit the model.
    case prompts(path: String, reason: String)
    /// The reward failed (per its failure policy) or is misconfigured.
    case reward(String)
    /// A run folder, checkpoint or export could not be written or read.
    case io(path: String, reason: String)
    /// A checkpoint on disk is damaged or does not belong to this run's config.
    case badCheckpoint(path: String, reason: String)
    /// Training diverged (a non-finite loss, gradient or parameter).
    case nonFinite(step: Int, what: String)

    /// The message shown to the user.
    public var description: String {
        switch self {
        case let .unreadableConfig(path, reason):
            return "config \(path): \(reason)"
        case let .unknownTarget(target, model, known):
            return "lora_targets: \"\(target)\" matches no attention module of \(model) (its attention modules: \(known.joined(separator: ", ")))"
        case let .badConfigValue(source, key, reason):
            return "config \(source): key \"\(key)\": \(reason)"
        case let .missingConfigValue(source, key):
            return "config \(source): key \"\(key)\" is required"
        case let .model(path, reason):
            return "model \(path): \(reason)"
        case let .baseAdapter(message):
            return "base_adapters: \(message)"
        case let .prompts(path, reason):
            // Prompt-set errors already start with the file's name.
            return reason.hasPrefix(path) ? "prompts " + reason : "prompts \(path): \(reason)"
        case let .reward(message):
            return "reward: \(message)"
        case let .io(path, reason):
            return "\(path): \(reason)"
        case let .badCheckpoint(path, reason):
            return "checkpoint \(path): \(reason)"
        case let .nonFinite(step, what):
            return "training step \(step): \(what) is not finite (training diverged; lower the learning rate)"
        }
    }
}
