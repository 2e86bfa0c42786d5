/// The two naming schemes a transformer checkpoint can use.
///
/// `original` is the authors' scheme (SAI `joint_blocks.N.x_block.attn.qkv`, BFL
/// `double_blocks.N.img_attn.qkv`), usually with fused q/k/v projections; `diffusers` is the scheme of
/// diffusers' `SD3Transformer2DModel` / `FluxTransformer2DModel` state dicts, with split projections.
public enum KeyLayout: String, Sendable, Hashable, CaseIterable, Codable {
    /// The authors' names (SAI sd3.5, BFL flux, ComfyUI), possibly under a `KeyPrefix`.
    case original
    /// diffusers' parameter names, without any prefix.
    case diffusers
}

/// The prefix in front of original-layout keys. Stability AI's single files use
/// `model.diffusion_model.`, ComfyUI's use `diffusion_model.`, BFL's FLUX files use none.
public enum KeyPrefix: String, Sendable, Hashable, CaseIterable, Codable {
    /// `model.diffusion_model.` — Stability AI single-file checkpoints.
    case sai = "model.diffusion_model."
    /// `diffusion_model.` — ComfyUI.
    case comfy = "diffusion_model."
    /// No prefix — BFL FLUX files and all diffusers files.
    case none = ""

    /// The prefix written when converting to the original layout and none was asked for (the
    /// family's `defaultOriginalPrefix`): `model.diffusion_model.` for SD3 (as Stability AI ships
    /// it), none for FLUX (as BFL ships it).
    public static func defaultOriginal(for family: ModelFamily) -> KeyPrefix {
        family.defaultOriginalPrefix
    }

    /// The known prefix `key` starts with (the longest one), or `.none`.
    public static func of(_ key: String) -> KeyPrefix {
        if key.hasPrefix(KeyPrefix.sai.rawValue) { return .sai }
        if key.hasPrefix(KeyPrefix.comfy.rawValue) { return .comfy }
        return .none
    }
}
