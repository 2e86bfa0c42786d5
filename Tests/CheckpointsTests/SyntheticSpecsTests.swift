@testable import Checkpoints
import SafeTensors
import Testing

@Suite struct SyntheticSpecsTests {
    @Test(arguments: [
        (KnownVariant.sd35Medium, 665, 909),
        (.sd35Large, 923, 1227),
        (.sd3Medium, 491, 683),
        (.flux1Dev, 780, 1160),
        (.flux1Schnell, 776, 1156),
        (.flux1Fill, 780, 1160),
        (.flux1Depth, 780, 1160),
    ])
    func tensorCounts(variant: KnownVariant, original: Int, diffusers: Int) {
        let o = syntheticSpecs(variant: variant, layout: .original, dtype: .bf16)
        let d = syntheticSpecs(variant: variant, layout: .diffusers, dtype: .bf16)
        #expect(o.count == original)
        #expect(d.count == diffusers)
        #expect(Set(o.map(\.name)).count == o.count)
        #expect(Set(d.map(\.name)).count == d.count)
        #expect(o.allSatisfy { $0.dtype == .bf16 })
        // Both layouts hold the same values.
        #expect(o.compactMap(\.elementCount).reduce(0, +) == d.compactMap(\.elementCount).reduce(0, +))
    }

    @Test func sd35MediumNamesAndSize() {
        let specs = syntheticSpecs(variant: .sd35Medium, layout: .original, dtype: .f16)
        #expect(specs.allSatisfy { $0.name.hasPrefix("model.diffusion_model.") })
        let byName = Dictionary(uniqueKeysWithValues: specs.map { ($0.name, $0.shape) })
        #expect(byName["model.diffusion_model.pos_embed"] == [1, 147456, 1536])
        #expect(byName["model.diffusion_model.x_embedder.proj.weight"] == [1536, 16, 2, 2])
        #expect(byName["model.diffusion_model.joint_blocks.0.x_block.adaLN_modulation.1.weight"] == [13824, 1536])
        #expect(byName["model.diffusion_model.joint_blocks.13.x_block.adaLN_modulation.1.weight"] == [9216, 1536])
        #expect(byName["model.diffusion_model.joint_blocks.12.x_block.attn2.qkv.weight"] == [4608, 1536])
        #expect(byName["model.diffusion_model.joint_blocks.13.x_block.attn2.qkv.weight"] == nil)
        #expect(byName["model.diffusion_model.joint_blocks.23.context_block.adaLN_modulation.1.weight"] == [3072, 1536])
        #expect(byName["model.diffusion_model.joint_blocks.23.context_block.attn.proj.weight"] == nil)
        #expect(byName["model.diffusion_model.joint_blocks.23.context_block.attn.ln_q.weight"] == [64])
        #expect(byName["model.diffusion_model.final_layer.linear.weight"] == [64, 1536])
        let count = Architecture(.sd35Medium).parameterCount
        #expect((2_465_000_000...2_475_000_000).contains(count), "SD3.5 Medium has \(count) values")

        let diffusers = Dictionary(uniqueKeysWithValues:
            syntheticSpecs(variant: .sd35Medium, layout: .diffusers, dtype: .f16).map { ($0.name, $0.shape) })
        #expect(diffusers["pos_embed.pos_embed"] == [1, 147456, 1536])
        #expect(diffusers["transformer_blocks.12.attn2.to_q.weight"] == [1536, 1536])
        #expect(diffusers["transformer_blocks.23.norm1_context.linear.weight"] == [3072, 1536])
        #expect(diffusers["transformer_blocks.23.ff_context.net.0.proj.weight"] == nil)
        #expect(diffusers["transformer_blocks.23.attn.norm_added_k.weight"] == [64])
    }

    @Test func fluxDevNamesAndSize() {
        let specs = syntheticSpecs(variant: .flux1Dev, layout: .original, dtype: .bf16)
        let byName = Dictionary(uniqueKeysWithValues: specs.map { ($0.name, $0.shape) })
        #expect(byName["img_in.weight"] == [3072, 64])
        #expect(byName["single_blocks.37.linear1.weight"] == [21504, 3072])
        #expect(byName["single_blocks.37.linear2.weight"] == [3072, 15360])
        #expect(byName["double_blocks.18.txt_attn.norm.key_norm.scale"] == [128])
        #expect(byName["guidance_in.out_layer.bias"] == [3072])
        let count = Architecture(.flux1Dev).parameterCount
        #expect((11_895_000_000...11_905_000_000).contains(count), "FLUX.1-dev has \(count) values")

        let d = Dictionary(uniqueKeysWithValues:
            syntheticSpecs(variant: .flux1Dev, layout: .diffusers, dtype: .bf16).map { ($0.name, $0.shape) })
        #expect(d["single_transformer_blocks.0.proj_mlp.weight"] == [12288, 3072])
        #expect(d["single_transformer_blocks.0.attn.to_v.bias"] == [3072])
        #expect(d["transformer_blocks.0.attn.norm_added_q.weight"] == [128])
        #expect(d["time_text_embed.guidance_embedder.linear_1.weight"] == [3072, 256])
        #expect(syntheticSpecs(variant: .flux1Schnell, layout: .diffusers, dtype: .bf16)
            .allSatisfy { !$0.name.contains("guidance") })
        #expect(syntheticSpecs(variant: .flux1Fill, layout: .original, dtype: .bf16).first { $0.name == "img_in.weight" }?.shape
                == [3072, 384])
    }

    @Test func prefixes() {
        let comfy = syntheticSpecs(variant: .flux1Schnell, layout: .original, dtype: .f32, prefix: .comfy)
        #expect(comfy.allSatisfy { $0.name.hasPrefix("diffusion_model.") && !$0.name.hasPrefix("diffusion_model.diffusion") })
        let bare = syntheticSpecs(variant: .sd3Medium, layout: .original, dtype: .f32, prefix: KeyPrefix.none)
        #expect(bare.contains { $0.name == "joint_blocks.0.x_block.attn.qkv.weight" })
        let diffusers = syntheticSpecs(variant: .sd3Medium, layout: .diffusers, dtype: .f32, prefix: .sai)
        #expect(diffusers.allSatisfy { !$0.name.hasPrefix("model.") })
    }

    /// Every split's parts add up to the rows of every parameter it applies to, and swaps act on
    /// an even number of rows, for both tables and several sizes.
    @Test func tablesAreConsistent() {
        let architectures = KnownVariant.allCases.map(Architecture.init) + [Tiny.sd3, Tiny.flux]
        for a in architectures {
            let dims = LayoutDimensions(a.config)
            for rule in a.table.rules {
                for p in rule.parameters {
                    let rows = dims.value(p.shape[0])
                    switch rule.transform {
                    case .identity: #expect(rule.diffusers.count == 1)
                    case .split(let parts):
                        #expect(parts.count == rule.diffusers.count)
                        #expect(parts.map(dims.value).reduce(0, +) == rows, "\(rule.original).\(p.original)")
                    case .swapHalves:
                        #expect(rule.diffusers.count == 1)
                        #expect(rows % 2 == 0)
                    }
                }
            }
        }
    }
}
