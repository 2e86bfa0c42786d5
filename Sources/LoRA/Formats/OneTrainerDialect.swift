import Checkpoints

/// OneTrainer: `lora_transformer_<diffusers module, dots→_>.lora_down/lora_up.weight` + 0-d
/// `.alpha` (kohya's α/r rule), text encoders as `lora_te1_` (CLIP-L) and `lora_te2_` (FLUX's T5).
enum OneTrainerDialect: LoRADialect {
    static let format = LoRAFormat.onetrainer
    static let spec = DialectSpec(format: .onetrainer, prefixes: ["lora_transformer_"], underscored: true, layouts: [.diffusers],
                                  lowRank: KeySuffixes.downUp, textEncoders: .kohya)

    static func claims(_ keys: [String], isFolder: Bool) -> Bool {
        keys.contains { $0.hasPrefix("lora_transformer_") }
    }

    static func read(_ source: FactorSource, context: DialectContext) throws -> LoRAAdapter {
        try spec.read(source, context: context)
    }
}
