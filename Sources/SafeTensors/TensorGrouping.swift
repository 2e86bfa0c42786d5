/// Collapses layer numbers in tensor names so a 24-block model reads as one line per parameter:
/// `transformer_blocks.7.attn.to_q.weight` → `transformer_blocks.#.attn.to_q.weight`.
public enum TensorGrouping {
    /// The name with every purely numeric dot-separated component replaced by `#`.
    public static func pattern(of name: String) -> String {
        name.split(separator: ".", omittingEmptySubsequences: false)
            .map { $0.isEmpty || !$0.allSatisfy(\.isASCII) || !$0.allSatisfy(\.isNumber) ? String($0) : "#" }
            .joined(separator: ".")
    }

    /// One group of tensors sharing a pattern.
    public struct Group: Sendable, Hashable {
        /// The pattern with `#` for layer numbers.
        public var pattern: String
        /// The tensors' names, in input order.
        public var names: [String]
        /// The dtypes seen (in order of first appearance).
        public var dtypes: [DType]
        /// The shapes seen (in order of first appearance).
        public var shapes: [[Int]]
        /// Total elements.
        public var parameters: Int
        /// Total bytes.
        public var bytes: Int
    }

    /// Groups tensors by pattern, in order of each pattern's first appearance.
    public static func groups(_ tensors: [TensorInfo]) -> [Group] {
        var order: [String] = []
        var byPattern: [String: Group] = [:]
        for info in tensors {
            let key = pattern(of: info.name)
            if var group = byPattern[key] {
                group.names.append(info.name)
                if !group.dtypes.contains(info.dtype) { group.dtypes.append(info.dtype) }
                if !group.shapes.contains(info.shape) { group.shapes.append(info.shape) }
                group.parameters += info.elementCount
                group.bytes += info.byteCount
                byPattern[key] = group
            } else {
                order.append(key)
                byPattern[key] = Group(pattern: key, names: [info.name], dtypes: [info.dtype], shapes: [info.shape],
                                       parameters: info.elementCount, bytes: info.byteCount)
            }
        }
        return order.map { key in
            var group = byPattern[key]!
            group.pattern = restoreConstantNumbers(group.pattern, names: group.names)
            return group
        }
    }

    /// Puts back the numbers that are the same in every member (`adaLN_modulation.1` is a
    /// module index, not a layer number), so only varying positions show `#`.
    static func restoreConstantNumbers(_ pattern: String, names: [String]) -> String {
        var parts = pattern.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
        let split = names.map { $0.split(separator: ".", omittingEmptySubsequences: false) }
        for i in parts.indices where parts[i] == "#" {
            let values = Set(split.map { $0.count > i ? String($0[i]) : "" })
            if values.count == 1 { parts[i] = values.first! }
        }
        return parts.joined(separator: ".")
    }
}
