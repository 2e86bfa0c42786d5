extension LayoutTable {
    /// FLUX.1: Black Forest Labs' names ↔ diffusers' `FluxTransformer2DModel`.
    ///
    /// Facts (diffusers `convert_flux_transformer_checkpoint_to_diffusers`, BFL `flux/modules/layers.py`):
    /// fused `qkv` splits in three; single-block `linear1` splits rows [H, H, H, 4H] into q, k, v and
    /// the MLP input; q/k norms are RMSNorm `scale` ↔ `weight`; only `final_layer.adaLN_modulation.1`
    /// swaps its halves; the guidance embedder exists only in guidance-distilled models.
    public static let flux: LayoutTable = {
        let H = Extent.hidden()
        let linear = ParameterRule.linear
        let scale = [ParameterRule(original: "scale", diffusers: "weight", shape: [.headDim])]
        let qkv = RowTransform.split([H, H, H])
        let b = "double_blocks.{i}."
        let d = "transformer_blocks.{i}."
        let s = "single_blocks.{i}."
        let ds = "single_transformer_blocks.{i}."
        return LayoutTable(family: .flux, rules: [
            // Embeddings.
            LayoutRule(.global, "img_in", ["x_embedder"], linear(H, Extent(1, .inChannels))),
            LayoutRule(.global, "time_in.in_layer", ["time_text_embed.timestep_embedder.linear_1"], linear(H, .fixed(256))),
            LayoutRule(.global, "time_in.out_layer", ["time_text_embed.timestep_embedder.linear_2"], linear(H, H)),
            LayoutRule(.global, "vector_in.in_layer", ["time_text_embed.text_embedder.linear_1"],
                       linear(H, Extent(1, .pooledProjectionDim))),
            LayoutRule(.global, "vector_in.out_layer", ["time_text_embed.text_embedder.linear_2"], linear(H, H)),
            LayoutRule(.global, "guidance_in.in_layer", ["time_text_embed.guidance_embedder.linear_1"],
                       linear(H, .fixed(256)), when: .guidance),
            LayoutRule(.global, "guidance_in.out_layer", ["time_text_embed.guidance_embedder.linear_2"],
                       linear(H, H), when: .guidance),
            LayoutRule(.global, "txt_in", ["context_embedder"], linear(H, Extent(1, .jointAttentionDim))),

            // Double-stream blocks.
            LayoutRule(.joint, b + "img_mod.lin", [d + "norm1.linear"], linear(.hidden(6), H)),
            LayoutRule(.joint, b + "img_attn.qkv", [d + "attn.to_q", d + "attn.to_k", d + "attn.to_v"], qkv,
                       linear(.hidden(3), H)),
            LayoutRule(.joint, b + "img_attn.norm.query_norm", [d + "attn.norm_q"], scale),
            LayoutRule(.joint, b + "img_attn.norm.key_norm", [d + "attn.norm_k"], scale),
            LayoutRule(.joint, b + "img_attn.proj", [d + "attn.to_out.0"], linear(H, H)),
            LayoutRule(.joint, b + "img_mlp.0", [d + "ff.net.0.proj"], linear(.hidden(4), H)),
            LayoutRule(.joint, b + "img_mlp.2", [d + "ff.net.2"], linear(H, .hidden(4))),
            LayoutRule(.joint, b + "txt_mod.lin", [d + "norm1_context.linear"], linear(.hidden(6), H)),
            LayoutRule(.joint, b + "txt_attn.qkv", [d + "attn.add_q_proj", d + "attn.add_k_proj", d + "attn.add_v_proj"],
                       qkv, linear(.hidden(3), H)),
            LayoutRule(.joint, b + "txt_attn.norm.query_norm", [d + "attn.norm_added_q"], scale),
            LayoutRule(.joint, b + "txt_attn.norm.key_norm", [d + "attn.norm_added_k"], scale),
            LayoutRule(.joint, b + "txt_attn.proj", [d + "attn.to_add_out"], linear(H, H)),
            LayoutRule(.joint, b + "txt_mlp.0", [d + "ff_context.net.0.proj"], linear(.hidden(4), H)),
            LayoutRule(.joint, b + "txt_mlp.2", [d + "ff_context.net.2"], linear(H, .hidden(4))),

            // Single-stream blocks.
            LayoutRule(.single, s + "modulation.lin", [ds + "norm.linear"], linear(.hidden(3), H)),
            LayoutRule(.single, s + "linear1", [ds + "attn.to_q", ds + "attn.to_k", ds + "attn.to_v", ds + "proj_mlp"],
                       .split([H, H, H, .hidden(4)]), linear(.hidden(7), H)),
            LayoutRule(.single, s + "norm.query_norm", [ds + "attn.norm_q"], scale),
            LayoutRule(.single, s + "norm.key_norm", [ds + "attn.norm_k"], scale),
            LayoutRule(.single, s + "linear2", [ds + "proj_out"], linear(H, .hidden(5))),

            // Output.
            LayoutRule(.global, "final_layer.linear", ["proj_out"], linear(Extent(1, .outputFeatures), H)),
            LayoutRule(.global, "final_layer.adaLN_modulation.1", ["norm_out.linear"], .swapHalves, linear(.hidden(2), H)),
        ])
    }()
}
