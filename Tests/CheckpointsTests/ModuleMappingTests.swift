@testable import Checkpoints
import Testing

@Suite struct ModuleMappingTests {
    @Test func sd3FusedQKV() throws {
        let m = try Architecture(.sd35Medium).mapModule("joint_blocks.3.x_block.attn.qkv", from: .original)
        #expect(m.sourceRowCount == 4608)
        #expect(m.pieces == [
            ModulePiece(target: "transformer_blocks.3.attn.to_q", sourceRows: 0..<1536, targetRows: 0..<1536, targetRowCount: 1536),
            ModulePiece(target: "transformer_blocks.3.attn.to_k", sourceRows: 1536..<3072, targetRows: 0..<1536, targetRowCount: 1536),
            ModulePiece(target: "transformer_blocks.3.attn.to_v", sourceRows: 3072..<4608, targetRows: 0..<1536, targetRowCount: 1536),
        ])
        #expect(m.targets.count == 3 && !m.isRename && !m.swapsHalves)

        let back = try Architecture(.sd35Medium).mapModule("transformer_blocks.3.attn.to_k", from: .diffusers)
        #expect(back.pieces == [ModulePiece(target: "joint_blocks.3.x_block.attn.qkv", sourceRows: 0..<1536,
                                            targetRows: 1536..<3072, targetRowCount: 4608)])
        let context = try Architecture(.sd35Medium).mapModule("model.diffusion_model.joint_blocks.23.context_block.attn.qkv",
                                                               from: .original)
        #expect(context.targets == ["transformer_blocks.23.attn.add_q_proj", "transformer_blocks.23.attn.add_k_proj",
                                    "transformer_blocks.23.attn.add_v_proj"])
    }

    @Test func fluxLinear1() throws {
        let flux = Architecture(.flux1Dev)
        let m = try flux.mapModule("single_blocks.2.linear1", from: .original)
        #expect(m.targets == ["single_transformer_blocks.2.attn.to_q", "single_transformer_blocks.2.attn.to_k",
                              "single_transformer_blocks.2.attn.to_v", "single_transformer_blocks.2.proj_mlp"])
        #expect(m.pieces.last == ModulePiece(target: "single_transformer_blocks.2.proj_mlp", sourceRows: 9216..<21504,
                                             targetRows: 0..<12288, targetRowCount: 12288))
        let mlp = try flux.mapModule("single_transformer_blocks.2.proj_mlp", from: .diffusers)
        #expect(mlp.pieces == [ModulePiece(target: "single_blocks.2.linear1", sourceRows: 0..<12288,
                                           targetRows: 9216..<21504, targetRowCount: 21504)])
        let qkv = try flux.mapModule("diffusion_model.double_blocks.0.img_attn.qkv", from: .original)
        #expect(qkv.targets == ["transformer_blocks.0.attn.to_q", "transformer_blocks.0.attn.to_k", "transformer_blocks.0.attn.to_v"])
        let rename = try flux.mapModule("double_blocks.0.txt_attn.proj", from: .original)
        #expect(rename.isRename && rename.targets == ["transformer_blocks.0.attn.to_add_out"])
    }

    @Test func adaLNSwaps() throws {
        let flux = Architecture(.flux1Dev)
        let m = try flux.mapModule("final_layer.adaLN_modulation.1", from: .original)
        #expect(m.swapsHalves)
        #expect(m.pieces == [
            ModulePiece(target: "norm_out.linear", sourceRows: 0..<3072, targetRows: 3072..<6144, targetRowCount: 6144),
            ModulePiece(target: "norm_out.linear", sourceRows: 3072..<6144, targetRows: 0..<3072, targetRowCount: 6144),
        ])
        let back = try flux.mapModule("norm_out.linear", from: .diffusers)
        #expect(back.pieces.map(\.targetRows) == [3072..<6144, 0..<3072])

        let sd3 = Tiny.sd3
        let last = try sd3.mapModule("joint_blocks.2.context_block.adaLN_modulation.1", from: .original)
        #expect(last.swapsHalves && last.sourceRowCount == 64)
        let earlier = try sd3.mapModule("joint_blocks.1.context_block.adaLN_modulation.1", from: .original)
        #expect(earlier.isRename && earlier.sourceRowCount == 192)
        let dual = try sd3.mapModule("transformer_blocks.0.norm1.linear", from: .diffusers)
        #expect(dual.isRename && dual.sourceRowCount == 288)
        let plain = try sd3.mapModule("transformer_blocks.2.norm1.linear", from: .diffusers)
        #expect(plain.sourceRowCount == 192)
    }

    @Test func unknownModules() {
        let sd3 = Tiny.sd3
        #expect(throws: CheckpointError.unknownModule(name: "joint_blocks.2.x_block.attn2.qkv", layout: .original,
                                                      architecture: "SD3-style")) {
            try sd3.mapModule("joint_blocks.2.x_block.attn2.qkv", from: .original)
        }
        #expect(throws: CheckpointError.self) { try sd3.mapModule("transformer_blocks.2.attn.to_add_out", from: .diffusers) }
        #expect(throws: CheckpointError.self) { try sd3.mapModule("transformer_blocks.3.attn.to_q", from: .diffusers) }
        #expect(throws: CheckpointError.self) { try sd3.mapModule("joint_blocks.03.x_block.attn.qkv", from: .original) }
        #expect(throws: CheckpointError.self) { try Tiny.flux.mapModule("double_blocks.0.img_attn.qkv", from: .diffusers) }
    }

    @Test func moduleNamesCoverEveryTensor() {
        for a in [Tiny.sd3, Tiny.flux, Architecture(.sd35Medium)] {
            for layout in KeyLayout.allCases {
                let modules = Set(a.moduleNames(in: layout))
                for t in a.expectedTensors(layout: layout, prefix: KeyPrefix.none) {
                    let module = t.name.split(separator: ".").dropLast().joined(separator: ".")
                    #expect(modules.contains(module) || modules.contains(t.name), "\(t.name)")
                }
                for name in modules {
                    #expect((try? a.mapModule(name, from: layout)) != nil, "\(name)")
                }
            }
        }
        #expect(Architecture(.sd35Medium).moduleNames(in: .original).contains("joint_blocks.12.x_block.attn2.qkv"))
    }

    /// Mapping a module there and back returns every row to where it started.
    @Test func mappingsRoundTrip() throws {
        for a in [Tiny.sd3, Tiny.flux, Architecture(.sd35Medium), Architecture(.flux1Schnell)] {
            for name in a.moduleNames(in: .original) {
                let there = try a.mapModule(name, from: .original)
                #expect(there.pieces.map(\.sourceRows.count).reduce(0, +) == there.sourceRowCount)
                for piece in there.pieces {
                    let back = try a.mapModule(piece.target, from: .diffusers)
                    let rows = back.pieces.filter { $0.sourceRows == piece.targetRows }
                    #expect(rows.count == 1 && rows.first?.target == name && rows.first?.targetRows == piece.sourceRows,
                            "\(name) → \(piece.target)")
                }
            }
        }
    }
}
