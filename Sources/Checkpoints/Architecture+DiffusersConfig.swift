extension Architecture {
    /// The diffusers `config.json` of the transformer (the family's `diffusersClassName` and its
    /// configuration's `diffusersConfigEntries`), derived from the sizes.
    ///
    /// Keys are sorted and indented by two spaces, as diffusers writes them; values the weights do
    /// not determine (see `underivedConfigKeys`) are `null`. Ends with a newline.
    public func diffusersConfigJSON() -> String {
        var entries: [(String, ConfigValue)] = [("_class_name", .string(family.diffusersClassName))]
        entries += config.base.diffusersConfigEntries.map { ($0.key, $0.value) }
        entries.sort { $0.0.unicodeScalars.lexicographicallyPrecedes($1.0.unicodeScalars) }
        let body = entries.map { "  \"\($0.0)\": \($0.1.json)" }.joined(separator: ",\n")
        return "{\n" + body + "\n}\n"
    }
}

/// The few JSON values a diffusers transformer configuration holds.
public enum ConfigValue: Sendable {
    /// An integer.
    case int(Int)
    /// `true` or `false`.
    case bool(Bool)
    /// A string (written without escaping: configuration strings are identifiers).
    case string(String)
    /// A list of integers.
    case ints([Int])
    /// `null`: a value the weights do not determine.
    case null

    /// The value as JSON, arrays one element per line at the depth of a top-level value.
    var json: String {
        switch self {
        case .int(let v): return String(v)
        case .bool(let v): return v ? "true" : "false"
        case .string(let v): return "\"" + v + "\""
        case .null: return "null"
        case .ints(let v):
            return v.isEmpty ? "[]" : "[\n" + v.map { "    \($0)" }.joined(separator: ",\n") + "\n  ]"
        }
    }
}
