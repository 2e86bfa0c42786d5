import Checkpoints
import Foundation
import SafeTensors

/// kohya sd-scripts (`lora_unet_<module with dots→_>`) and ComfyUI (`diffusion_model.<module>`)
/// adapters: original (SAI/BFL) module names, `lora_down`/`lora_up`, an optional 0-d `.alpha`.
enum OriginalDialect {
    static let kohyaPrefix = "lora_unet_"
    static let comfyPrefix = KeyPrefix.comfy.rawValue

    static func splitSuffix(_ body: String) -> (String, FactorRole)? {
        for (suffix, role) in [(".lora_down.weight", FactorRole.down), (".lora_up.weight", .up), (".alpha", .alpha)] where body.hasSuffix(suffix) {
            return (String(body.dropLast(suffix.count)), role)
        }
        return nil
    }

    /// Reads a kohya or ComfyUI adapter.
    static func read(_ source: FactorSource, format: LoRAFormat, architecture: Architecture?) throws -> LoRAAdapter {
        let prefix = format == .kohya ? kohyaPrefix : comfyPrefix
        var raw: [(module: String, role: FactorRole, key: String)] = []
        var unexplained: [String] = []
        for key in source.keys {
            guard key.hasPrefix(prefix), let (module, role) = splitSuffix(String(key.dropFirst(prefix.count))) else {
                unexplained.append(key); continue
            }
            raw.append((module, role, key))
        }
        var resolve: (String) -> String? = { $0 }
        var family: ModelFamily? = architecture?.family ?? familyFromModuleNames(raw.map(\.module))
        if format == .kohya {
            let names = architecture?.moduleNames(in: .original) ?? genericModuleNames(underscored: raw.map(\.module))
            var table: [String: String] = [:]
            for n in names { table[n.replacingOccurrences(of: ".", with: "_")] = n }
            resolve = { table[$0] }
            if family == nil { family = familyFromModuleNames(names) }
        }
        var assembler = ModuleAssembler()
        for r in raw {
            if let module = resolve(r.module) { assembler.add(module: module, role: r.role, key: r.key) } else { unexplained.append(r.key) }
        }
        if !unexplained.isEmpty {
            throw LoRAError.unknownDialect(file: source.path, format: format, keys: Array(unexplained.prefix(5)), count: unexplained.count)
        }
        let modules = try assembler.assemble(source, downName: "lora_down", upName: "lora_up", zeroAlphaIsRank: format == .kohya)
        var extra: [String: String] = [:]
        for (k, v) in source.metadata where k != "format" { extra[k] = v }
        return LoRAAdapter(modules: modules, layout: .original, rsLoRA: false, format: format,
                           family: family ?? familyFromModuleNames(modules.map(\.name)), extraMetadata: extra)
    }

    /// Original module names of a generic architecture big enough for every block index in
    /// kohya's underscored names (`joint_blocks_12_…`, `double_blocks_3_…`, `single_blocks_37_…`):
    /// those of every family whose block names appear, or of every family when none do.
    static func genericModuleNames(underscored: [String], families: [ModelFamily] = ModelFamily.builtIn) -> [String] {
        // Indices at or above maximumInferredBlocks size no architecture: their keys stay
        // unresolved (unknownDialect) instead of building (or overflowing) a huge module list.
        func maxIndex(_ head: String) -> Int? {
            underscored.compactMap { name -> Int? in
                guard name.hasPrefix(head) else { return nil }
                return Int(name.dropFirst(head.count).prefix { $0.isNumber })
            }.filter { $0 < maximumInferredBlocks }.max()
        }
        let highest: [[BlockScope: Int]] = families.map { family in
            var seen: [BlockScope: Int] = [:]
            for (scope, heads) in family.table.blockPrefixes(in: .original) {
                if let top = heads.compactMap({ maxIndex($0.replacingOccurrences(of: ".", with: "_")) }).max() { seen[scope] = top }
            }
            return seen
        }
        let noneSeen = highest.allSatisfy(\.isEmpty)
        var names: [String] = []
        for (family, seen) in zip(families, highest) where noneSeen || !seen.isEmpty {
            if let config = family.descriptor.moduleNamingConfig(highestBlocks: seen), let a = try? Architecture(config: config) {
                names += a.moduleNames(in: .original)
            }
        }
        return names
    }

    /// Writes a kohya or ComfyUI file; `adapter` must use original naming. rsLoRA scales are folded
    /// into α (α' = α·√r) since these formats know only α/r. `fused` names the modules whose B is
    /// block-diagonal because split LoRAs were fused into them (recorded in the metadata as
    /// `flowguard.fused_block_diagonal`); factors are written in `dtype`, α in float32.
    static func write(_ adapter: LoRAAdapter, format: LoRAFormat, to path: String, dtype: DType = .f32,
                      fused: [FusedModule] = []) throws {
        var tensors: [(String, Matrix)] = []
        for m in adapter.modules {
            let base = format == .kohya ? kohyaPrefix + m.name.replacingOccurrences(of: ".", with: "_") : comfyPrefix + m.name
            tensors.append((base + ".lora_down.weight", m.down))
            tensors.append((base + ".lora_up.weight", m.up))
            if m.upBias != nil {
                throw LoRAError.unsupportedFormat(format: format, reason: "module \(m.name) has a bias on B (lora_bias), which \(format.displayName) files cannot hold")
            }
            let alpha = effectiveAlpha(m, rsLoRA: adapter.rsLoRA)
            tensors.append((base + ".alpha", Matrix(shape: [], values: [alpha])))
        }
        var metadata: [String: String] = [:]
        for (k, v) in adapter.extraMetadata where k.hasPrefix("ss_") || k.hasPrefix("modelspec.") { metadata[k] = v }
        if format == .kohya {
            let ranks = adapter.modules.map(\.rank)
            let alphas = adapter.modules.map { effectiveAlpha($0, rsLoRA: adapter.rsLoRA) }
            // kohya's loaders read these as the rank and α of every module: written only when
            // every module agrees (a fused q/k/v of rank 3r beside rank-r modules does not).
            metadata["ss_network_dim"] = nil
            metadata["ss_network_alpha"] = nil
            if let rank = ranks.first, ranks.allSatisfy({ $0 == rank }), let alpha = alphas.first, alphas.allSatisfy({ $0 == alpha }) {
                metadata["ss_network_dim"] = String(rank)
                metadata["ss_network_alpha"] = pythonFloatText(alpha)
            }
            // An adapter of unknown family is written with FLUX's module name, as it always was.
            metadata["ss_network_module"] = (adapter.family ?? .flux).kohyaNetworkModule
        }
        if !fused.isEmpty { metadata[FusedModule.metadataKey] = FusedModule.metadataJSON(fused) }
        metadata["format"] = "pt"
        try writeF32Tensors(tensors, metadata: metadata, to: path, dtype: dtype)
    }

    /// α such that α/r equals the module's scale.
    static func effectiveAlpha(_ m: LoRAModule, rsLoRA: Bool) -> Float {
        m.scale(rsLoRA: rsLoRA) * Float(m.rank)
    }
}

/// A float as Python prints it for whole numbers ("8.0") or shortest otherwise.
func pythonFloatText(_ v: Float) -> String {
    v == v.rounded() && abs(v) < 1e9 ? String(Int(v)) + ".0" : "\(v)"
}
