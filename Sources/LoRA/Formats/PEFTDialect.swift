import Checkpoints
import Foundation
import JSON
import SafeTensors
import SystemSupport

/// PEFT folders and diffusers `pytorch_lora_weights.safetensors`: diffusers module names,
/// `lora_A`/`lora_B`, the configuration in `adapter_config.json` or `lora_adapter_metadata`.
enum PEFTDialect {
    static let peftPrefix = "base_model.model."
    static let diffusersPrefix = "transformer."

    /// Reads a PEFT or diffusers adapter.
    static func read(_ source: FactorSource, format: LoRAFormat, config: JSONValue?, configFile: String) throws -> LoRAAdapter {
        var assembler = ModuleAssembler()
        var unexplained: [String] = []
        let prefix = format == .peft ? peftPrefix : diffusersPrefix
        for key in source.keys {
            var body = key
            if body.hasPrefix(prefix) { body.removeFirst(prefix.count) } else if format == .peft || key.hasPrefix("text_encoder") {
                unexplained.append(key); continue
            }
            if let (module, role) = splitSuffix(body) { assembler.add(module: module, role: role, key: key) } else { unexplained.append(key) }
        }
        if !unexplained.isEmpty {
            throw LoRAError.unknownDialect(file: source.path, format: format, keys: Array(unexplained.prefix(5)), count: unexplained.count)
        }
        var cfg = config
        var cfgFile = configFile
        let metadata = source.metadata
        if cfg == nil, let text = metadata["lora_adapter_metadata"] {
            cfgFile = source.path + " (__metadata__ lora_adapter_metadata)"
            do { cfg = try JSONValue.parse(Array(text.utf8)) } catch {
                throw LoRAError.badConfig(file: cfgFile, field: "lora_adapter_metadata", reason: "not JSON (\(error))")
            }
            if let members = cfg?.objectMembers {
                cfg = .object(members.map { (key: $0.key.hasPrefix(diffusersPrefix) ? String($0.key.dropFirst(diffusersPrefix.count)) : $0.key, value: $0.value) })
            }
        }
        let parsed = try PEFTConfig(cfg, file: cfgFile)
        let modules = try assembler.assemble(source, downName: "lora_A", upName: "lora_B", alphaFor: { parsed?.alpha(for: $0) })
        if let parsed {
            for m in modules {
                let expected = parsed.rank(for: m.name)
                if expected != m.rank {
                    throw LoRAError.badConfig(file: cfgFile, field: parsed.rankPattern.isEmpty ? "r" : "rank_pattern",
                                              reason: "it gives rank \(expected) for \(m.name) but its lora_A has rank \(m.rank)")
                }
            }
        }
        var extra: [String: String] = [:]
        if let members = cfg?.objectMembers {
            for (k, v) in members where !["r", "lora_alpha", "rank_pattern", "alpha_pattern", "use_rslora", "target_modules"].contains(k) {
                extra["peft." + k] = v.stringValue ?? v.compactText
            }
        }
        for (k, v) in metadata where k != "lora_adapter_metadata" && k != "format" { extra[k] = v }
        return LoRAAdapter(modules: modules, layout: .diffusers, rsLoRA: parsed?.useRSLoRA ?? false, format: format,
                           family: familyFromModuleNames(modules.map(\.name)) ?? familyFromConfig(cfg), extraMetadata: extra)
    }

    /// The family whose diffusers class PEFT's `auto_mapping.base_model_class` names.
    static func familyFromConfig(_ cfg: JSONValue?, families: [ModelFamily] = ModelFamily.builtIn) -> ModelFamily? {
        guard let cls = cfg?["auto_mapping"]?["base_model_class"]?.stringValue else { return nil }
        return ModelFamily.claiming(diffusersClassName: cls, in: families)
    }

    static func splitSuffix(_ body: String) -> (String, FactorRole)? {
        for (suffix, role) in [(".lora_A.weight", FactorRole.down), (".lora_B.weight", .up), (".lora_B.bias", .upBias)] where body.hasSuffix(suffix) {
            return (String(body.dropLast(suffix.count)), role)
        }
        return nil
    }

    // MARK: writing

    /// The PEFT configuration of an adapter in diffusers naming, as ordered JSON members.
    static func config(of adapter: LoRAAdapter, peftFolder: Bool) -> [(key: String, value: JSONValue)] {
        let ranks = adapter.modules.map(\.rank)
        let alphas = adapter.modules.map { $0.alpha ?? Float($0.rank) }
        let r = dialectMostCommon(ranks) ?? 0
        let alpha = dialectMostCommon(alphas) ?? Float(r)
        var rankPattern: [(key: String, value: JSONValue)] = []
        var alphaPattern: [(key: String, value: JSONValue)] = []
        for (m, a) in zip(adapter.modules, alphas) {
            if m.rank != r { rankPattern.append((m.name, .int(Int64(m.rank)))) }
            if a != alpha { alphaPattern.append((m.name, jsonNumber(a))) }
        }
        var members: [(key: String, value: JSONValue)] = [
            ("alpha_pattern", .object(alphaPattern)),
            ("base_model_name_or_path", .null),
            ("bias", .string("none")),
            ("fan_in_fan_out", .bool(false)),
            ("inference_mode", .bool(true)),
            ("init_lora_weights", .bool(true)),
            ("lora_alpha", jsonNumber(alpha)),
            ("lora_bias", .bool(adapter.modules.contains { $0.upBias != nil })),
            ("lora_dropout", .double(0)),
            ("peft_type", .string("LORA")),
            ("r", .int(Int64(r))),
            ("rank_pattern", .object(rankPattern)),
            ("target_modules", .array(adapter.modules.map { .string($0.name) })),
            ("task_type", .null),
            ("use_dora", .bool(false)),
            ("use_rslora", .bool(adapter.rsLoRA)),
        ]
        if peftFolder, let family = adapter.family {
            members.append(("auto_mapping", .object([("base_model_class", .string(family.diffusersClassName)),
                                                     ("parent_library", .string(family.diffusersParentLibrary))])))
        }
        members.sort { $0.key.unicodeScalars.lexicographicallyPrecedes($1.key.unicodeScalars) }
        return members
    }

    /// Writes a PEFT folder or a diffusers file; `adapter` must use diffusers naming.
    static func write(_ adapter: LoRAAdapter, format: LoRAFormat, to path: String, dtype: DType = .f32) throws {
        let prefix = format == .peft ? peftPrefix : diffusersPrefix
        var tensors: [(String, Matrix)] = []
        for m in adapter.modules {
            tensors.append((prefix + m.name + ".lora_A.weight", m.down))
            tensors.append((prefix + m.name + ".lora_B.weight", m.up))
            if let b = m.upBias { tensors.append((prefix + m.name + ".lora_B.bias", b)) }
        }
        let members = config(of: adapter, peftFolder: format == .peft)
        if format == .peft {
            // The folder is staged beside `path` and replaces whatever was there whole (no stale
            // adapter_model.bin or other file of an earlier adapter stays beside the new one).
            let parent = FileSystem.parentFolder(of: FileSystem.trimmingTrailingSlashes(path))
            if !FileSystem.exists(parent) { try FileManager.default.createDirectory(atPath: parent, withIntermediateDirectories: true) }
            let folder: AtomicFolder
            do { folder = try AtomicFolder(destination: path, placement: .replace()) } catch { throw SafeTensorsError.system(error) }
            try writeF32Tensors(tensors, metadata: ["format": "pt"], to: folder.stagingPath + "/adapter_model.safetensors", dtype: dtype)
            try writeTextFileAtomically(indentedJSON(.object(members)) + "\n", to: folder.stagingPath + "/adapter_config.json")
            do { try folder.commit(order: ["adapter_model.safetensors", "adapter_config.json"]) } catch { throw SafeTensorsError.system(error) }
        } else {
            let prefixed = JSONValue.object(members.map { (key: diffusersPrefix + $0.key, value: $0.value) })
            try writeF32Tensors(tensors, metadata: ["format": "pt", "lora_adapter_metadata": indentedJSON(prefixed)], to: path, dtype: dtype)
        }
    }
}

/// The LoRA members of a PEFT `LoraConfig`.
struct PEFTConfig {
    var r: Int
    var loraAlpha: Float
    var rankPattern: [(String, Int)]
    var alphaPattern: [(String, Float)]
    var useRSLoRA: Bool

    /// Parses the members FlowGuard uses; nil when there is no configuration.
    init?(_ json: JSONValue?, file: String) throws {
        guard let json else { return nil }
        guard json.objectMembers != nil else { throw LoRAError.badConfig(file: file, field: "(document)", reason: "not a JSON object") }
        guard let r = json["r"]?.nonNegativeInt, r > 0 else {
            throw LoRAError.badConfig(file: file, field: "r", reason: "must be a positive integer, found \(json["r"]?.compactText ?? "nothing")")
        }
        self.r = r
        if let a = json["lora_alpha"], a != .null {
            guard let v = a.doubleValue else { throw LoRAError.badConfig(file: file, field: "lora_alpha", reason: "must be a number, found \(a.compactText)") }
            loraAlpha = Float(v)
        } else {
            loraAlpha = Float(r)
        }
        rankPattern = []
        if let p = json["rank_pattern"], p != .null {
            guard let members = p.objectMembers else { throw LoRAError.badConfig(file: file, field: "rank_pattern", reason: "must be an object") }
            for (k, v) in members {
                guard let n = v.nonNegativeInt, n > 0 else { throw LoRAError.badConfig(file: file, field: "rank_pattern", reason: "\"\(k)\" must map to a positive integer") }
                rankPattern.append((k, n))
            }
        }
        alphaPattern = []
        if let p = json["alpha_pattern"], p != .null {
            guard let members = p.objectMembers else { throw LoRAError.badConfig(file: file, field: "alpha_pattern", reason: "must be an object") }
            for (k, v) in members {
                guard let n = v.doubleValue else { throw LoRAError.badConfig(file: file, field: "alpha_pattern", reason: "\"\(k)\" must map to a number") }
                alphaPattern.append((k, Float(n)))
            }
        }
        switch json["use_rslora"] {
        case nil, .null?: useRSLoRA = false
        case .bool(let b)?: useRSLoRA = b
        case let other?: throw LoRAError.badConfig(file: file, field: "use_rslora", reason: "must be true or false, found \(other.compactText)")
        }
        if let t = json["target_modules"], t != .null, t.stringValue == nil, t.arrayValue?.allSatisfy({ $0.stringValue != nil }) != true {
            throw LoRAError.badConfig(file: file, field: "target_modules", reason: "must be a string or a list of strings")
        }
    }

    /// PEFT's pattern rule: the key matches `(.*\.)?(pattern)$`.
    static func matches(_ pattern: String, _ module: String) -> Bool {
        if pattern == module || module.hasSuffix("." + pattern) { return true }
        guard let regex = try? Regex("(.*\\.)?(" + pattern + ")") else { return false }
        return (try? regex.wholeMatch(in: module)) != nil
    }

    func rank(for module: String) -> Int { rankPattern.first { Self.matches($0.0, module) }?.1 ?? r }
    func alpha(for module: String) -> Float { alphaPattern.first { Self.matches($0.0, module) }?.1 ?? loraAlpha }
}

/// The most frequent value (the first of equally frequent ones).
func dialectMostCommon<T: Hashable>(_ values: [T]) -> T? {
    var counts: [T: Int] = [:]
    for v in values { counts[v, default: 0] += 1 }
    var best: T?
    var bestCount = 0
    for v in values where counts[v]! > bestCount { best = v; bestCount = counts[v]! }
    return best
}

/// A JSON number: an integer when the value is whole.
func jsonNumber(_ v: Float) -> JSONValue {
    v == v.rounded() && abs(v) < 1e15 ? .int(Int64(v)) : .double(Double(v))
}

/// JSON indented by two spaces, as Python's `json.dumps(indent=2)` writes it.
func indentedJSON(_ value: JSONValue, depth: Int = 0) -> String {
    let pad = String(repeating: "  ", count: depth + 1)
    let closePad = String(repeating: "  ", count: depth)
    switch value {
    case .array(let items) where !items.isEmpty:
        return "[\n" + items.map { pad + indentedJSON($0, depth: depth + 1) }.joined(separator: ",\n") + "\n" + closePad + "]"
    case .object(let members) where !members.isEmpty:
        return "{\n" + members.map { m -> String in
            var key = ""
            JSONValue.writeString(m.key, to: &key)
            return pad + key + ": " + indentedJSON(m.value, depth: depth + 1)
        }.joined(separator: ",\n") + "\n" + closePad + "}"
    case .double(let d) where d.isFinite:
        return d == d.rounded() && abs(d) < 1e15 ? String(Int64(d)) + ".0" : "\(d)"
    default:
        return value.compactText
    }
}

/// Writes F32 tensors atomically through `SafeTensorsWriter`.
func writeF32Tensors(_ tensors: [(String, Matrix)], metadata: [String: String], to path: String, dtype: DType = .f32) throws {
    var byName: [String: Matrix] = [:]
    for (k, m) in tensors { byName[k] = m }
    // α tensors stay float32 whatever `dtype` is: the scale α/r must be exact.
    let specs = tensors.map { TensorSpec(name: $0.0, dtype: $0.0.hasSuffix(".alpha") ? .f32 : dtype, shape: $0.1.shape) }
    try SafeTensorsWriter.write(to: path, specs: specs, metadata: metadata) { sink in
        _ = try sink.write(floats: byName[sink.info.name]!.values)
    }
}

/// Writes a text file atomically.
func writeTextFileAtomically(_ text: String, to path: String) throws(SafeTensorsError) {
    do {
        let file = try AtomicFile(destination: path)
        try file.write(Array(text.utf8))
        try file.commit()
    } catch { throw .system(error) }
}
