extension Architecture {
    /// The diffusers `config.json` of the transformer (`SD3Transformer2DModel` or
    /// `FluxTransformer2DModel`), derived from the sizes.
    ///
    /// Keys are sorted and indented by two spaces, as diffusers writes them; values the weights do
    /// not determine (see `underivedConfigKeys`) are `null`. Ends with a newline.
    public func diffusersConfigJSON() -> String {
        var entries: [(String, ConfigValue)] = [("_class_name", .string(family.diffusersClassName))]
        switch config {
        case .sd3(let c):
            entries += [
                ("sample_size", .int(c.sampleSize)),
                ("patch_size", .int(c.patchSize)),
                ("in_channels", .int(c.inChannels)),
                ("num_layers", .int(c.numLayers)),
                ("attention_head_dim", c.attentionHeadDim.map(ConfigValue.int) ?? .null),
                ("num_attention_heads", c.numAttentionHeads.map(ConfigValue.int) ?? .null),
                ("joint_attention_dim", .int(c.jointAttentionDim)),
                ("caption_projection_dim", .int(c.captionProjectionDim)),
                ("pooled_projection_dim", .int(c.pooledProjectionDim)),
                ("out_channels", .int(c.outChannels)),
                ("pos_embed_max_size", .int(c.posEmbedMaxSize)),
                ("dual_attention_layers", .ints(c.dualAttentionLayers)),
                ("qk_norm", c.qkNorm ? .string("rms_norm") : .null),
            ]
        case .flux(let c):
            entries += [
                ("patch_size", .int(c.patchSize)),
                ("in_channels", .int(c.inChannels)),
                ("out_channels", .int(c.outChannels)),
                ("num_layers", .int(c.numLayers)),
                ("num_single_layers", .int(c.numSingleLayers)),
                ("attention_head_dim", .int(c.attentionHeadDim)),
                ("num_attention_heads", .int(c.numAttentionHeads)),
                ("joint_attention_dim", .int(c.jointAttentionDim)),
                ("pooled_projection_dim", .int(c.pooledProjectionDim)),
                ("guidance_embeds", .bool(c.guidanceEmbeds)),
                ("axes_dims_rope", c.axesDimsRope.map(ConfigValue.ints) ?? .null),
            ]
        }
        entries.sort { $0.0.unicodeScalars.lexicographicallyPrecedes($1.0.unicodeScalars) }
        let body = entries.map { "  \"\($0.0)\": \($0.1.json)" }.joined(separator: ",\n")
        return "{\n" + body + "\n}\n"
    }
}

/// The few JSON values a diffusers transformer configuration holds.
enum ConfigValue {
    case int(Int)
    case bool(Bool)
    case string(String)
    case ints([Int])
    case null

    /// The value as JSON, arrays one element per line at the depth of a top-level value.
    var json: String {
        switch self {
        case .int(let v): return String(v)
        case .bool(let v): return v ? "true" : "false"
        case .string(let v): return "\"" + v + "\""
        case .null: return "null"
        case .ints(let v):
            return v.isEmpty ? "[]" : "[\n" + v.map { "    \($0)" }.joined(separator: ",\n") + "\n  ]"
        }
    }
}
