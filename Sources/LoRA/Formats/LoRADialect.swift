import Checkpoints
import JSON

/// What a dialect reader may use besides the tensors.
struct DialectContext {
    /// The base architecture, when known (resolves underscored names exactly).
    var architecture: Architecture?
    /// A PEFT folder's `adapter_config.json`, parsed.
    var peftConfig: JSONValue?
    /// Where that configuration came from.
    var configFile: String
}

/// One LoRA dialect: the rule that recognises its keys and the reader that understands them.
/// A new dialect is one file in `Formats/` with a type conforming to this protocol, listed in
/// `LoRADialects.all`.
protocol LoRADialect {
    /// The format it reads.
    static var format: LoRAFormat { get }
    /// True when `keys` (of a file; `isFolder` for a PEFT folder) are this dialect's.
    static func claims(_ keys: [String], isFolder: Bool) -> Bool
    /// Reads the adapter.
    static func read(_ source: FactorSource, context: DialectContext) throws -> LoRAAdapter
}

/// Every dialect FlowGuard reads, in the order their rules are tried (the more specific first:
/// fal Kontext's BFL names under PEFT's prefix before PEFT, OneTrainer's and LyCORIS's prefixes
/// before kohya's text-encoder-only rule, BFL Control's bare names before diffusers').
enum LoRADialects {
    static let all: [any LoRADialect.Type] = [
        FalKontextDialect.self, PEFTFolderDialect.self, OneTrainerDialect.self, LyCORISDialect.self,
        KohyaDialect.self, XLabsDialect.self, ComfyDialect.self, BFLControlDialect.self, DiffusersDialect.self,
    ]

    /// The dialect whose rule claims `keys`, or nil.
    static func claiming(_ keys: [String], isFolder: Bool) -> (any LoRADialect.Type)? {
        all.first { $0.claims(keys, isFolder: isFolder) }
    }
}

/// How a dialect names text-encoder modules.
enum TextEncoderNaming {
    /// None: any text-encoder key is unexplained.
    case none
    /// kohya: `lora_te1_` (CLIP-L), `lora_te2_` (CLIP-G, or FLUX T5 in OneTrainer), `lora_te3_` (T5), `lora_te_`,
    /// then the transformers module with dots → `_`.
    case kohya
    /// diffusers: `text_encoder.`, `text_encoder_2.`, `text_encoder_3.` then the dotted module.
    case diffusers
}

/// A dialect described by its prefixes and naming; `read(spec:…)` does the work.
struct DialectSpec: Sendable {
    var format: LoRAFormat
    /// Key prefixes of transformer modules (the first that matches is removed).
    var prefixes: [String]
    /// Prefixes that may be absent (diffusers' bare module names): an unprefixed key is read too.
    var prefixOptional = false
    /// Module names have dots replaced by `_`.
    var underscored: Bool
    /// Layouts the module names may be in, tried in order.
    var layouts: [KeyLayout]
    /// The low-rank factor suffixes.
    var lowRank: [(String, FactorRole)]
    /// Text-encoder naming.
    var textEncoders: TextEncoderNaming
    /// kohya's rule: α = 0 means α = r.
    var zeroAlphaIsRank = true
    /// Keys without a role suffix that are whole replacement tensors (BFL Control norm scales).
    var replacement: @Sendable (String) -> Bool = { _ in false }
}

extension DialectSpec {
    /// Reads `source` by this description.
    func read(_ source: FactorSource, context: DialectContext, alphaFor: (String) -> Float? = { _ in nil }) throws -> LoRAAdapter {
        var unexplained: [String] = []
        var transformer: [(module: String, role: FactorRole, key: String)] = []
        var encoders = ModuleAssembler()
        for key in source.keys {
            if let te = textEncoderKey(key) {
                if let te { encoders.add(module: te.module, role: te.role, key: key) } else { unexplained.append(key) }
                continue
            }
            var body: String?
            for p in prefixes where key.hasPrefix(p) { body = String(key.dropFirst(p.count)); break }
            if body == nil, prefixOptional { body = key }
            guard let body else { unexplained.append(key); continue }
            if let (module, role) = KeySuffixes.split(body, lowRank: lowRank) {
                transformer.append((module, role, key))
            } else if replacement(body) {
                transformer.append((body, .replacement, key))
            } else {
                unexplained.append(key)
            }
        }
        // Resolve the module names in the first layout that explains them all (or most).
        var layout = layouts[0]
        var resolved: [String: String] = [:]
        if underscored {
            var best: (KeyLayout, [String: String])?
            for candidate in layouts {
                let names = context.architecture?.moduleNames(in: candidate)
                    ?? OriginalDialect.genericModuleNames(underscored: transformer.map(\.module), layout: candidate)
                var table: [String: String] = [:]
                for n in names { table[n.replacingOccurrences(of: ".", with: "_")] = n }
                var map: [String: String] = [:]
                for t in transformer { if let n = table[t.module] { map[t.module] = n } }
                if best == nil || map.count > best!.1.count { best = (candidate, map) }
                if map.count == Set(transformer.map(\.module)).count { break }
            }
            if let best { layout = best.0; resolved = best.1 }
        }
        var assembler = ModuleAssembler()
        for t in transformer {
            if !underscored { assembler.add(module: t.module, role: t.role, key: t.key); continue }
            if let name = resolved[t.module] { assembler.add(module: name, role: t.role, key: t.key) } else { unexplained.append(t.key) }
        }
        if !unexplained.isEmpty {
            throw LoRAError.unknownDialect(file: source.path, format: format, keys: Array(unexplained.prefix(5)), count: unexplained.count)
        }
        let parts = try assembler.assembleAll(source, alphaFor: alphaFor, zeroAlphaIsRank: zeroAlphaIsRank)
        let te = try encoders.assembleAll(source, zeroAlphaIsRank: zeroAlphaIsRank)
        if let d = te.deltas.first {
            throw LoRAError.badTensor(file: source.path, key: d.keys.first ?? d.name, byteOffset: d.keys.first.flatMap(source.offset),
                                      reason: "\(d.kindName) deltas of text encoders are not supported (only low-rank ones)")
        }
        let names = parts.modules.map(\.name) + parts.deltas.map(\.name)
        var extra: [String: String] = [:]
        for (k, v) in source.metadata where k != "format" { extra[k] = v }
        var adapter = LoRAAdapter(modules: parts.modules, layout: layout, rsLoRA: false, format: format,
                                  family: context.architecture?.family ?? familyFromModuleNames(names), extraMetadata: extra)
        adapter.deltas = parts.deltas
        adapter.magnitudes = parts.magnitudes
        adapter.textEncoderModules = te.modules
        return adapter
    }

    /// nil: not a text-encoder key; .some(nil): a text-encoder key this dialect cannot name;
    /// otherwise the component-qualified module and role.
    func textEncoderKey(_ key: String) -> (module: String, role: FactorRole)?? {
        switch textEncoders {
        case .none:
            return nil
        case .kohya:
            guard let (component, rest) = TextEncoderNames.kohyaComponent(key) else { return nil }
            guard let (underscoredModule, role) = KeySuffixes.split(rest, lowRank: KeySuffixes.downUp),
                  let module = TextEncoderNames.resolve(underscored: underscoredModule) else { return .some(nil) }
            return (component + "." + module, role)
        case .diffusers:
            guard let component = TextEncoderNames.diffusersComponent(key) else { return nil }
            guard let (module, role) = KeySuffixes.split(key, lowRank: KeySuffixes.aB), module.count > component.count + 1 else { return .some(nil) }
            return (module, role)
        }
    }
}

/// Text-encoder module names: kohya's underscored forms resolved to transformers' dotted names.
enum TextEncoderNames {
    /// kohya prefix → diffusers component.
    static let kohyaPrefixes: [(String, String)] = [
        ("lora_te1_", "text_encoder"), ("lora_te2_", "text_encoder_2"), ("lora_te3_", "text_encoder_3"), ("lora_te_", "text_encoder"),
    ]

    /// The component and the rest of a kohya text-encoder key.
    static func kohyaComponent(_ key: String) -> (String, String)? {
        for (p, c) in kohyaPrefixes where key.hasPrefix(p) { return (c, String(key.dropFirst(p.count))) }
        return nil
    }

    /// The kohya prefix of a component.
    static func kohyaPrefix(of component: String) -> String {
        kohyaPrefixes.first { $0.1 == component }?.0 ?? "lora_te1_"
    }

    /// The component of a diffusers text-encoder key (`text_encoder`, `text_encoder_2`, `text_encoder_3`).
    static func diffusersComponent(_ key: String) -> String? {
        for c in ["text_encoder_2", "text_encoder_3", "text_encoder"] where key.hasPrefix(c + ".") { return c }
        return nil
    }

    /// transformers' dotted module for a kohya underscored name of a CLIP or T5 encoder module.
    static func resolve(underscored name: String) -> String? {
        let clip = /text_model_encoder_layers_(\d+)_(self_attn_(q|k|v|out)_proj|mlp_(fc1|fc2))/
        if let m = name.wholeMatch(of: clip) {
            let tail = m.output.3.map { "self_attn.\($0)_proj" } ?? "mlp.\(m.output.4!)"
            return "text_model.encoder.layers.\(m.output.1).\(tail)"
        }
        if name == "text_projection" { return "text_projection" }
        let t5 = /encoder_block_(\d+)_layer_(\d+)_(SelfAttention_(q|k|v|o)|DenseReluDense_(wi_0|wi_1|wi|wo))/
        if let m = name.wholeMatch(of: t5) {
            let tail = m.output.4.map { "SelfAttention.\($0)" } ?? "DenseReluDense.\(m.output.5!)"
            return "encoder.block.\(m.output.1).layer.\(m.output.2).\(tail)"
        }
        return nil
    }
}

/// Original FLUX (BFL) module heads, for dialects that use them without a prefix.
let bflModuleHeads = ["double_blocks.", "single_blocks.", "img_in.", "txt_in.", "final_layer.", "time_in.", "vector_in.", "guidance_in."]
