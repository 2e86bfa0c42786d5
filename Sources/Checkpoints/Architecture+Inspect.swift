import JSON
import SafeTensors

extension Architecture {
    /// The architecture part of `flowguard inspect`'s report for a file's tensors: the line
    /// "  architecture: <summary>, <layout> layout[, key prefix '…']", the derived diffusers
    /// config on one line and a line per note; or "  architecture: not recognised (<why>)". Each
    /// line ends with a newline. `families` are the families detection tries.
    public static func inspectText(_ infos: [TensorInfo], families: [ModelFamily] = ModelFamily.builtIn) -> String {
        do { return inspectText(try DescribedCheckpoint(detecting: infos, families: families)) } catch {
            return "  architecture: not recognised (\(String(describing: error)))\n"
        }
    }

    /// The architecture part of `flowguard inspect`'s report for a described checkpoint (see
    /// `inspectText(_:families:)`), with the configuration file used, if any.
    public static func inspectText(_ described: DescribedCheckpoint) -> String {
        let detected = described.detected
        var out = "  architecture: \(detected.architecture.summary), \(detected.layout.rawValue) layout"
        if detected.prefix != .none { out += ", key prefix '\(detected.prefix.rawValue)'" }
        if let config = described.configPath { out += ", with \(config)" }
        out += "\n  diffusers config: \(detected.architecture.diffusersConfigJSON().split(separator: "\n").map { $0.trimmingPrefix(while: { $0 == " " }) }.joined(separator: " "))\n"
        for note in described.notes { out += "    note: \(note)\n" }
        return out
    }

    /// The `architecture` member of `flowguard inspect --json`: name, layout, prefix, diffusers
    /// config and notes, or null when the tensors are not recognised.
    public static func inspectJSON(_ infos: [TensorInfo], families: [ModelFamily] = ModelFamily.builtIn) -> JSONValue {
        guard let described = try? DescribedCheckpoint(detecting: infos, families: families) else { return .null }
        return inspectJSON(described)
    }

    /// The `architecture` member of `flowguard inspect --json` for a described checkpoint, with
    /// `config_file` (the configuration used, or null).
    public static func inspectJSON(_ described: DescribedCheckpoint) -> JSONValue {
        let detected = described.detected
        let config = (try? JSONValue.parse(Array(detected.architecture.diffusersConfigJSON().utf8))) ?? .null
        return .object([("name", .string(detected.architecture.name)), ("layout", .string(detected.layout.rawValue)),
                        ("prefix", .string(detected.prefix.rawValue)), ("diffusers_config", config),
                        ("config_file", described.configPath.map { .string($0) } ?? .null),
                        ("notes", .array(described.notes.map { .string($0) }))])
    }
}
