extension LayoutTable {
    /// SD3 / SD3.5 (MMDiT, MMDiT-X): Stability AI's names ↔ diffusers' `SD3Transformer2DModel`.
    ///
    /// Facts (diffusers `convert_sd3_transformer_checkpoint_to_diffusers`, `JointTransformerBlock`):
    /// fused `qkv` splits in three; blocks with `attn2` have a 9×hidden `x_block` modulation
    /// (`SD35AdaLayerNormZeroX`), others 6×hidden; the last block's context stream is pre-only:
    /// no attention output projection, no MLP, and a 2×hidden `AdaLayerNormContinuous` modulation
    /// whose halves are swapped, as are those of `final_layer.adaLN_modulation.1`.
    public static let sd3: LayoutTable = {
        let H = Extent.hidden()
        let linear = ParameterRule.linear
        let norm = [ParameterRule(original: "weight", diffusers: "weight", shape: [.headDim])]
        let qkv = RowTransform.split([H, H, H])
        let b = "joint_blocks.{i}."
        let d = "transformer_blocks.{i}."
        return LayoutTable(family: .sd3, rules: [
            // Embeddings.
            LayoutRule(.global, "pos_embed", ["pos_embed"],
                       [ParameterRule(original: "", diffusers: "pos_embed", shape: [.fixed(1), Extent(1, .posEmbedLength), H])]),
            LayoutRule(.global, "x_embedder.proj", ["pos_embed.proj"],
                       [ParameterRule(original: "weight", diffusers: "weight",
                                      shape: [H, Extent(1, .inChannels), Extent(1, .patchSize), Extent(1, .patchSize)]),
                        ParameterRule(original: "bias", diffusers: "bias", shape: [H])]),
            LayoutRule(.global, "t_embedder.mlp.0", ["time_text_embed.timestep_embedder.linear_1"], linear(H, .fixed(256))),
            LayoutRule(.global, "t_embedder.mlp.2", ["time_text_embed.timestep_embedder.linear_2"], linear(H, H)),
            LayoutRule(.global, "y_embedder.mlp.0", ["time_text_embed.text_embedder.linear_1"],
                       linear(H, Extent(1, .pooledProjectionDim))),
            LayoutRule(.global, "y_embedder.mlp.2", ["time_text_embed.text_embedder.linear_2"], linear(H, H)),
            LayoutRule(.global, "context_embedder", ["context_embedder"], linear(H, Extent(1, .jointAttentionDim))),

            // Joint blocks, image stream.
            LayoutRule(.joint, b + "x_block.attn.qkv", [d + "attn.to_q", d + "attn.to_k", d + "attn.to_v"], qkv,
                       linear(.hidden(3), H)),
            LayoutRule(.joint, b + "x_block.attn.ln_q", [d + "attn.norm_q"], norm, when: .qkNorm),
            LayoutRule(.joint, b + "x_block.attn.ln_k", [d + "attn.norm_k"], norm, when: .qkNorm),
            LayoutRule(.joint, b + "x_block.attn.proj", [d + "attn.to_out.0"], linear(H, H)),
            LayoutRule(.joint, b + "x_block.attn2.qkv", [d + "attn2.to_q", d + "attn2.to_k", d + "attn2.to_v"], qkv,
                       linear(.hidden(3), H), when: .dualAttention),
            LayoutRule(.joint, b + "x_block.attn2.ln_q", [d + "attn2.norm_q"], norm, when: [.dualAttention, .qkNorm]),
            LayoutRule(.joint, b + "x_block.attn2.ln_k", [d + "attn2.norm_k"], norm, when: [.dualAttention, .qkNorm]),
            LayoutRule(.joint, b + "x_block.attn2.proj", [d + "attn2.to_out.0"], linear(H, H), when: .dualAttention),
            LayoutRule(.joint, b + "x_block.adaLN_modulation.1", [d + "norm1.linear"], linear(.hidden(9), H),
                       when: .dualAttention),
            LayoutRule(.joint, b + "x_block.adaLN_modulation.1", [d + "norm1.linear"], linear(.hidden(6), H),
                       when: .singleAttention),
            LayoutRule(.joint, b + "x_block.mlp.fc1", [d + "ff.net.0.proj"], linear(.hidden(4), H)),
            LayoutRule(.joint, b + "x_block.mlp.fc2", [d + "ff.net.2"], linear(H, .hidden(4))),

            // Joint blocks, context stream (pre-only in the last block).
            LayoutRule(.joint, b + "context_block.attn.qkv",
                       [d + "attn.add_q_proj", d + "attn.add_k_proj", d + "attn.add_v_proj"], qkv, linear(.hidden(3), H)),
            LayoutRule(.joint, b + "context_block.attn.ln_q", [d + "attn.norm_added_q"], norm, when: .qkNorm),
            LayoutRule(.joint, b + "context_block.attn.ln_k", [d + "attn.norm_added_k"], norm, when: .qkNorm),
            LayoutRule(.joint, b + "context_block.attn.proj", [d + "attn.to_add_out"], linear(H, H), when: .notLastBlock),
            LayoutRule(.joint, b + "context_block.adaLN_modulation.1", [d + "norm1_context.linear"],
                       linear(.hidden(6), H), when: .notLastBlock),
            LayoutRule(.joint, b + "context_block.adaLN_modulation.1", [d + "norm1_context.linear"], .swapHalves,
                       linear(.hidden(2), H), when: .lastBlock),
            LayoutRule(.joint, b + "context_block.mlp.fc1", [d + "ff_context.net.0.proj"], linear(.hidden(4), H),
                       when: .notLastBlock),
            LayoutRule(.joint, b + "context_block.mlp.fc2", [d + "ff_context.net.2"], linear(H, .hidden(4)),
                       when: .notLastBlock),

            // Output.
            LayoutRule(.global, "final_layer.linear", ["proj_out"], linear(Extent(1, .outputFeatures), H)),
            LayoutRule(.global, "final_layer.adaLN_modulation.1", ["norm_out.linear"], .swapHalves, linear(.hidden(2), H)),
        ])
    }()
}
