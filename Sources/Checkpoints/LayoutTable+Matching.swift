/// A concrete key or module recognised by a table: which rule and parameter, which diffusers part,
/// which block.
struct KeyMatch: Sendable, Hashable {
    var ruleIndex: Int
    var parameterIndex: Int
    var part: Int
    var block: Int?
}

/// Lookup tables from a pattern (with `{i}`) to the rule that produces it, one per layout, for
/// parameter keys and for module names.
struct PatternIndex: Sendable {
    var keys: [KeyLayout: [String: [KeyMatch]]] = [:]
    var modules: [KeyLayout: [String: [KeyMatch]]] = [:]

    init(_ rules: [LayoutRule]) {
        for layout in KeyLayout.allCases {
            var keyIndex: [String: [KeyMatch]] = [:]
            var moduleIndex: [String: [KeyMatch]] = [:]
            for (r, rule) in rules.enumerated() {
                for (k, module) in rule.modules(in: layout).enumerated() {
                    moduleIndex[module, default: []].append(KeyMatch(ruleIndex: r, parameterIndex: 0, part: k, block: nil))
                    for (p, param) in rule.parameters.enumerated() {
                        let name = join(module, layout == .original ? param.original : param.diffusers)
                        // Rules with complementary conditions may share names.
                        keyIndex[name, default: []].append(KeyMatch(ruleIndex: r, parameterIndex: p, part: k, block: nil))
                    }
                }
            }
            keys[layout] = keyIndex
            modules[layout] = moduleIndex
        }
    }

    /// The pattern forms of a concrete name: itself, then the name with each all-digit path
    /// component (no leading zero) replaced by `{i}`, with that index.
    static func forms(_ name: String) -> [(pattern: String, block: Int?)] {
        var out: [(String, Int?)] = [(name, nil)]
        let parts = name.split(separator: ".", omittingEmptySubsequences: false)
        for (n, part) in parts.enumerated() {
            guard !part.isEmpty, part.count < 10, part.allSatisfy({ $0.isASCII && $0.isNumber }),
                  part.count == 1 || part.first != "0", let i = Int(part) else { continue }
            var copy = parts
            copy[n] = "{i}"
            out.append((copy.joined(separator: "."), i))
        }
        return out
    }
}

extension LayoutTable {
    /// Recognises a bare key (no prefix) of `layout`, ignoring rule conditions and block counts:
    /// every rule that can produce it (rules with complementary conditions share names); empty
    /// when none can.
    func match(_ key: String, in layout: KeyLayout) -> [KeyMatch] {
        guard let index = patternIndex.keys[layout] else { return [] }
        for (pattern, block) in PatternIndex.forms(key) {
            if let ms = index[pattern], (rules[ms[0].ruleIndex].scope == .global) == (block == nil) {
                return ms.map { var m = $0; m.block = block; return m }
            }
        }
        return []
    }

    /// Recognises a bare module name of `layout`: every rule whose module pattern matches (rules
    /// with complementary conditions can share a name), with the block index and the part.
    func matchModule(_ module: String, in layout: KeyLayout) -> [KeyMatch] {
        guard let index = patternIndex.modules[layout] else { return [] }
        for (pattern, block) in PatternIndex.forms(module) {
            if let ms = index[pattern], (rules[ms[0].ruleIndex].scope == .global) == (block == nil) {
                return ms.map { var m = $0; m.block = block; return m }
            }
        }
        return []
    }

    /// The key in `layout` of parameter `parameter` of the rule whose original module pattern is
    /// `originalModule`, for block `block` and diffusers part `part`.
    func key(originalModule: String, parameter: String, layout: KeyLayout, block: Int? = nil, part: Int = 0) -> String? {
        guard let rule = rules.first(where: { $0.original == originalModule }),
              let param = rule.parameters.first(where: { $0.original == parameter }) else { return nil }
        let module = layout == .original ? rule.original : rule.diffusers[part]
        return instantiate(join(module, layout == .original ? param.original : param.diffusers), block)
    }
}
