extension Converter {
    /// Parses a size as users write it: plain bytes (`1048576`), or a number with a unit —
    /// decimal `K`/`KB`, `M`/`MB`, `G`/`GB`, `T`/`TB` (powers of 1000, as transformers and
    /// diffusers read `max_shard_size`) or binary `KiB`, `MiB`, `GiB`, `TiB` (powers of 1024).
    /// Fractions are allowed (`1.5G`); case does not matter. Nil when the text is not a positive size.
    public static func parseByteSize(_ text: String) -> Int? {
        let trimmed = text.trimmingSpaces()
        let digits = trimmed.prefix(while: { $0.isASCII && ($0.isNumber || $0 == ".") })
        let unit = trimmed.dropFirst(digits.count).trimmingSpaces().lowercased()
        guard !digits.isEmpty, digits.filter({ $0 == "." }).count <= 1, let value = Double(digits) else { return nil }
        let multiplier: Double
        switch unit {
        case "", "b": multiplier = 1
        case "k", "kb": multiplier = 1e3
        case "m", "mb": multiplier = 1e6
        case "g", "gb": multiplier = 1e9
        case "t", "tb": multiplier = 1e12
        case "ki", "kib": multiplier = 1024
        case "mi", "mib": multiplier = 1024 * 1024
        case "gi", "gib": multiplier = 1024 * 1024 * 1024
        case "ti", "tib": multiplier = 1024 * 1024 * 1024 * 1024
        default: return nil
        }
        let bytes = (value * multiplier).rounded(.down)
        guard bytes >= 1, bytes < 9.0e18 else { return nil }
        return Int(bytes)
    }
}

private extension StringProtocol {
    func trimmingSpaces() -> String {
        String(drop(while: { $0 == " " }).reversed().drop(while: { $0 == " " }).reversed())
    }
}
