import Checkpoints

/// BFL Control LoRAs (FLUX.1 Canny/Depth-dev-lora): BFL module names without a prefix,
/// `lora_A`/`lora_B` (+ `lora_B.bias`), no α (scale 1); `img_in`'s A has more input features than
/// the base (the control image's channels): the base is widened with zero columns first, as
/// diffusers' parameter expansion does. Full `*.norm.*.scale` tensors replace the base's.
enum BFLControlDialect: LoRADialect {
    static let format = LoRAFormat.bflControl
    static let spec = DialectSpec(format: .bflControl, prefixes: [""], underscored: false, layouts: [.original],
                                  lowRank: KeySuffixes.aB, textEncoders: .none, zeroAlphaIsRank: false,
                                  replacement: { body in bflModuleHeads.contains { body.hasPrefix($0) } && body.contains(".norm.") && body.hasSuffix(".scale") })

    static func claims(_ keys: [String], isFolder: Bool) -> Bool {
        keys.contains { k in bflModuleHeads.contains { k.hasPrefix($0) } && (k.hasSuffix(".lora_A.weight") || k.hasSuffix(".lora_B.weight")) }
    }

    static func read(_ source: FactorSource, context: DialectContext) throws -> LoRAAdapter {
        var adapter = try spec.read(source, context: context)
        adapter.family = .flux
        return adapter
    }
}
