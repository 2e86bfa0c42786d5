@testable import Checkpoints
import SafeTensors
import Testing

@Suite struct ConversionPlanTests {
    @Test(arguments: KnownVariant.allCases)
    func fullSizeRoundTrip(variant: KnownVariant) throws {
        let a = Architecture(variant)
        try checkRoundTrip(a.expectedTensors(layout: .original))
        try checkRoundTrip(a.expectedTensors(layout: .diffusers))
    }

    @Test func tinyRoundTrips() throws {
        for a in [Tiny.sd3, Tiny.flux] {
            for prefix in KeyPrefix.allCases {
                try checkRoundTrip(a.expectedTensors(layout: .original, prefix: prefix))
            }
            try checkRoundTrip(a.expectedTensors(layout: .diffusers))
        }
    }

    @Test func targetsAreTheExpectedTensors() throws {
        for a in [Tiny.sd3, Tiny.flux, Architecture(.sd35Medium)] {
            let plan = try ConversionPlan(tensors: a.expectedTensors(layout: .original), to: .diffusers)
            #expect(plan.outputs.map { TensorShapeEntry(name: $0.name, shape: $0.shape) }
                    == a.expectedTensors(layout: .diffusers))
            let back = try ConversionPlan(tensors: a.expectedTensors(layout: .diffusers), to: .original)
            #expect(back.outputs.map { TensorShapeEntry(name: $0.name, shape: $0.shape) }
                    == a.expectedTensors(layout: .original))
            #expect(back.targetPrefix == .defaultOriginal(for: a.family))
        }
    }

    @Test func sd3Pieces() throws {
        let plan = try ConversionPlan(tensors: Tiny.sd3.expectedTensors(layout: .original), to: .diffusers)
        let out = Dictionary(uniqueKeysWithValues: plan.outputs.map { ($0.name, $0) })
        let p = "model.diffusion_model."
        #expect(out["transformer_blocks.1.attn.to_k.weight"]?.pieces
                == [RowSlice(source: p + "joint_blocks.1.x_block.attn.qkv.weight", rows: 32..<64)])
        #expect(out["transformer_blocks.0.attn2.to_v.bias"]?.pieces
                == [RowSlice(source: p + "joint_blocks.0.x_block.attn2.qkv.bias", rows: 64..<96)])
        #expect(out["transformer_blocks.2.attn.add_q_proj.weight"]?.pieces
                == [RowSlice(source: p + "joint_blocks.2.context_block.attn.qkv.weight", rows: 0..<32)])
        #expect(out["norm_out.linear.weight"]?.pieces
                == [RowSlice(source: p + "final_layer.adaLN_modulation.1.weight", rows: 32..<64),
                    RowSlice(source: p + "final_layer.adaLN_modulation.1.weight", rows: 0..<32)])
        // Last block: pre-only context modulation swapped; earlier blocks copied.
        #expect(out["transformer_blocks.2.norm1_context.linear.bias"]?.pieces
                == [RowSlice(source: p + "joint_blocks.2.context_block.adaLN_modulation.1.bias", rows: 32..<64),
                    RowSlice(source: p + "joint_blocks.2.context_block.adaLN_modulation.1.bias", rows: 0..<32)])
        #expect(out["transformer_blocks.1.norm1_context.linear.bias"]?.pieces
                == [RowSlice(source: p + "joint_blocks.1.context_block.adaLN_modulation.1.bias", rows: 0..<192)])
        #expect(out["transformer_blocks.0.norm1.linear.weight"]?.shape == [288, 32])
        #expect(out["transformer_blocks.2.norm1.linear.weight"]?.shape == [192, 32])
        #expect(out["transformer_blocks.2.attn.to_add_out.weight"] == nil)
        #expect(out["pos_embed.pos_embed"]?.pieces == [RowSlice(source: p + "pos_embed", rows: 0..<1)])
        #expect(out["pos_embed.proj.weight"]?.shape == [32, 4, 2, 2])
    }

    @Test func fluxPieces() throws {
        let specs = Tiny.flux.expectedTensors(layout: .diffusers)
        let plan = try ConversionPlan(tensors: specs, to: .original)
        #expect(plan.targetPrefix == KeyPrefix.none)
        let out = Dictionary(uniqueKeysWithValues: plan.outputs.map { ($0.name, $0) })
        let b = "single_transformer_blocks.2."
        #expect(out["single_blocks.2.linear1.weight"]?.pieces == [
            RowSlice(source: b + "attn.to_q.weight", rows: 0..<32), RowSlice(source: b + "attn.to_k.weight", rows: 0..<32),
            RowSlice(source: b + "attn.to_v.weight", rows: 0..<32), RowSlice(source: b + "proj_mlp.weight", rows: 0..<128),
        ])
        #expect(out["single_blocks.2.linear1.weight"]?.shape == [224, 32])
        #expect(out["double_blocks.1.img_attn.norm.query_norm.scale"]?.pieces
                == [RowSlice(source: "transformer_blocks.1.attn.norm_q.weight", rows: 0..<8)])
        #expect(out["final_layer.adaLN_modulation.1.bias"]?.pieces
                == [RowSlice(source: "norm_out.linear.bias", rows: 32..<64), RowSlice(source: "norm_out.linear.bias", rows: 0..<32)])
        #expect(out["double_blocks.0.txt_mod.lin.weight"]?.pieces
                == [RowSlice(source: "transformer_blocks.0.norm1_context.linear.weight", rows: 0..<192)])

        let withPrefix = try ConversionPlan(tensors: specs, to: .original, prefix: .sai)
        #expect(withPrefix.outputs.allSatisfy { $0.name.hasPrefix("model.diffusion_model.") })
    }

    @Test func sameLayoutIsIdentity() throws {
        for specs in [Tiny.sd3.expectedTensors(layout: .original, prefix: .comfy), Tiny.flux.expectedTensors(layout: .diffusers),
                      Architecture(.flux1Dev).expectedTensors(layout: .original)] {
            let detected = try Architecture.detect(specs)
            let plan = try ConversionPlan(tensors: specs, to: detected.layout)
            #expect(plan.isIdentity)
            #expect(plan.outputs.count == specs.count)
            #expect(Set(plan.sourceNames) == Set(specs.map(\.name)))
            checkBijective(plan, sources: specs)
        }
        // Re-prefixing keeps the rows and changes the names.
        let specs = Tiny.sd3.expectedTensors(layout: .original, prefix: .sai)
        let plan = try ConversionPlan(tensors: specs, to: .original, prefix: .comfy)
        #expect(!plan.isIdentity)
        #expect(plan.outputs.allSatisfy { $0.name.hasPrefix("diffusion_model.") && $0.pieces.count == 1 })
        checkBijective(plan, sources: specs)
    }
}
