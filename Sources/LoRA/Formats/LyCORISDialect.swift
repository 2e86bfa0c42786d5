import Checkpoints

/// LyCORIS `LycorisNetwork.save_weights`: `lycoris_<module, dots→_>` followed by LoKr
/// (`lokr_w1`/`_a`/`_b`, `lokr_w2`/`_a`/`_b`), LoHa (`hada_w1_a` …), LoCon (`lora_down`/`lora_up`)
/// tensors, `.alpha` and DoRA's `.dora_scale`; the module names are those of the wrapped model
/// (diffusers names when it wrapped a diffusers transformer, original names otherwise).
enum LyCORISDialect: LoRADialect {
    static let format = LoRAFormat.lycoris
    static let spec = DialectSpec(format: .lycoris, prefixes: ["lycoris_"], underscored: true, layouts: [.diffusers, .original],
                                  lowRank: KeySuffixes.downUp, textEncoders: .none)

    static func claims(_ keys: [String], isFolder: Bool) -> Bool {
        keys.contains { $0.hasPrefix("lycoris_") }
    }

    static func read(_ source: FactorSource, context: DialectContext) throws -> LoRAAdapter {
        try spec.read(source, context: context)
    }
}
