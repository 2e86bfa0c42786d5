import Checkpoints

/// fal's Kontext trainer: BFL module names under PEFT's `base_model.model.` prefix, `lora_A`/`lora_B`,
/// no α (scale 1).
enum FalKontextDialect: LoRADialect {
    static let format = LoRAFormat.falKontext
    static let spec = DialectSpec(format: .falKontext, prefixes: [PEFTDialect.peftPrefix], underscored: false, layouts: [.original],
                                  lowRank: KeySuffixes.aB, textEncoders: .none, zeroAlphaIsRank: false)

    static func claims(_ keys: [String], isFolder: Bool) -> Bool {
        !isFolder && keys.contains { k in
            k.hasPrefix(PEFTDialect.peftPrefix) && bflModuleHeads.contains { k.dropFirst(PEFTDialect.peftPrefix.count).hasPrefix($0) }
        }
    }

    static func read(_ source: FactorSource, context: DialectContext) throws -> LoRAAdapter {
        var adapter = try spec.read(source, context: context)
        adapter.family = .flux
        return adapter
    }
}
