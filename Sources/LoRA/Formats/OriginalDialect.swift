import Checkpoints
import Foundation
import SafeTensors

/// kohya sd-scripts: `lora_unet_<original module, dots→_>` (LoRA, LoKr, LoHa, DoRA `.dora_scale`,
/// 0-d `.alpha`: α/r, missing or 0 → r) beside `lora_te1_`/`lora_te2_`/`lora_te3_` text encoders.
enum KohyaDialect: LoRADialect {
    static let format = LoRAFormat.kohya
    static let spec = DialectSpec(format: .kohya, prefixes: ["lora_unet_"], underscored: true, layouts: [.original],
                                  lowRank: KeySuffixes.downUp, textEncoders: .kohya)

    /// `lora_unet_` keys, or only kohya text-encoder keys.
    static func claims(_ keys: [String], isFolder: Bool) -> Bool {
        keys.contains { $0.hasPrefix("lora_unet_") }
            || (!keys.isEmpty && keys.allSatisfy { TextEncoderNames.kohyaComponent($0) != nil })
    }

    static func read(_ source: FactorSource, context: DialectContext) throws -> LoRAAdapter {
        try spec.read(source, context: context)
    }
}

/// ComfyUI: `diffusion_model.<original module>` with `lora_down`/`lora_up` (+ `.alpha`, else
/// scale 1), full deltas `.diff` (a weight, or a norm scale keyed by its full name) and `.diff_b`
/// (a bias), LyCORIS tensors; text encoders in kohya's naming.
enum ComfyDialect: LoRADialect {
    static let format = LoRAFormat.comfy
    static let spec = DialectSpec(format: .comfy, prefixes: [KeyPrefix.comfy.rawValue], underscored: false, layouts: [.original],
                                  lowRank: KeySuffixes.downUp, textEncoders: .kohya, zeroAlphaIsRank: false)

    /// `diffusion_model.` keys with a role suffix ComfyUI writes or reads.
    static func claims(_ keys: [String], isFolder: Bool) -> Bool {
        keys.contains { $0.hasPrefix(KeyPrefix.comfy.rawValue) && KeySuffixes.split($0, lowRank: KeySuffixes.downUp) != nil }
    }

    static func read(_ source: FactorSource, context: DialectContext) throws -> LoRAAdapter {
        try spec.read(source, context: context)
    }
}

/// Writing kohya and ComfyUI files (original module names), and the generic module list that
/// resolves underscored names.
enum OriginalDialect {
    static let kohyaPrefix = "lora_unet_"
    static let comfyPrefix = KeyPrefix.comfy.rawValue

    /// Original module names of a generic architecture big enough for every block index in
    /// kohya's underscored names (`joint_blocks_12_…`, `double_blocks_3_…`, `single_blocks_37_…`):
    /// those of every family whose block names appear, or of every family when none do.
    static func genericModuleNames(underscored: [String], layout: KeyLayout = .original,
                                   families: [ModelFamily] = ModelFamily.builtIn) -> [String] {
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
            for (scope, heads) in family.table.blockPrefixes(in: layout) {
                if let top = heads.compactMap({ maxIndex($0.replacingOccurrences(of: ".", with: "_")) }).max() { seen[scope] = top }
            }
            return seen
        }
        let noneSeen = highest.allSatisfy(\.isEmpty)
        var names: [String] = []
        for (family, seen) in zip(families, highest) where noneSeen || !seen.isEmpty {
            if let config = family.descriptor.moduleNamingConfig(highestBlocks: seen), let a = try? Architecture(config: config) {
                names += a.moduleNames(in: layout)
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
        tensors += try textEncoderTensors(adapter, format: format)
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

    /// Text-encoder modules in kohya's naming (`lora_te1_text_model_encoder_layers_0_self_attn_q_proj`),
    /// which kohya and ComfyUI both read.
    static func textEncoderTensors(_ adapter: LoRAAdapter, format: LoRAFormat) throws -> [(String, Matrix)] {
        var tensors: [(String, Matrix)] = []
        for m in adapter.textEncoderModules {
            let component = textEncoderComponent(of: m.name)
            let module = String(m.name.dropFirst(component.count + 1))
            let base = TextEncoderNames.kohyaPrefix(of: component) + module.replacingOccurrences(of: ".", with: "_")
            if m.upBias != nil {
                throw LoRAError.unsupportedFormat(format: format, reason: "text-encoder module \(m.name) has a bias on B (lora_bias), which \(format.displayName) files cannot hold")
            }
            tensors.append((base + ".lora_down.weight", m.down))
            tensors.append((base + ".lora_up.weight", m.up))
            tensors.append((base + ".alpha", Matrix(shape: [], values: [effectiveAlpha(m, rsLoRA: adapter.rsLoRA)])))
        }
        return tensors
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
