import Testing
import Foundation
import BLAS
import Checkpoints
import LoRA
import SafeTensors
import TestSupport

@Suite struct ExtractTests {
    let dir = TemporaryDirectory()

    /// tuned = base + a known rank-3 ΔW on four modules (written by LoRAMerge).
    func tunedCheckpoint(base: String = MergeFixtures.sd35Diffusers) throws -> (path: String, adapter: LoRAAdapter) {
        var rng = SeededGenerator(seed: 99)
        let modules = [
            MergeFixtures.module("transformer_blocks.0.attn.to_q", out: 32, in: 32, rank: 3, alpha: 3, &rng),
            MergeFixtures.module("transformer_blocks.0.attn.to_k", out: 32, in: 32, rank: 3, alpha: 3, &rng),
            MergeFixtures.module("transformer_blocks.1.ff.net.2", out: 32, in: 128, rank: 3, alpha: 3, &rng),
            MergeFixtures.module("transformer_blocks.2.attn.add_q_proj", out: 32, in: 32, rank: 3, alpha: 3, &rng),
        ]
        let adapter = LoRAAdapter(modules: modules, layout: .diffusers, format: .diffusers, family: .sd3)
        let path = dir.file("tuned-\(UUID().uuidString).safetensors")
        try LoRAMerge.merge(base: try TensorCollection(path: base), adapter: adapter, output: path)
        return (path, adapter)
    }

    @Test func rank3DeltaIsRecovered() throws {
        let (tuned, truth) = try tunedCheckpoint()
        let (adapter, report) = try LoRAExtract.extract(base: try TensorCollection(path: MergeFixtures.sd35Diffusers),
                                                        tuned: try TensorCollection(path: tuned), rank: 3)
        #expect(adapter.layout == .diffusers && report.checkpointLayout == .diffusers)
        // Modules come in checkpoint order.
        #expect(adapter.modules.map(\.name).sorted() == truth.modules.map(\.name).sorted())
        #expect(report.otherChangedTensors.isEmpty)
        for want in truth.modules {
            let got = try #require(adapter.module(want.name))
            #expect(got.rank == 3 && got.alpha == 3 && got.scale(rsLoRA: false) == 1)
            let d = got.delta(rsLoRA: false).values, w = want.delta(rsLoRA: false).values
            let err = zip(d, w).reduce(0.0) { $0 + Double($1.0 - $1.1) * Double($1.0 - $1.1) }.squareRoot()
            let norm = w.reduce(0.0) { $0 + Double($1) * Double($1) }.squareRoot()
            #expect(err / norm <= 1e-4, "\(got.name)")
        }
        for module in report.modules {
            #expect(abs(module.capturedEnergy - 1) < 1e-6, "\(module.name)")
            #expect(module.relativeError < 1e-3)
        }
        #expect(abs(report.totalCapturedEnergy - 1) < 1e-6)
    }

    @Test func lowerRankCapturesLessAndSaysSo() throws {
        let (tuned, _) = try tunedCheckpoint()
        let (adapter, report) = try LoRAExtract.extract(base: try TensorCollection(path: MergeFixtures.sd35Diffusers),
                                                        tuned: try TensorCollection(path: tuned), rank: 1)
        #expect(adapter.modules.allSatisfy { $0.rank == 1 })
        for module in report.modules {
            #expect(module.capturedEnergy < 0.999 && module.capturedEnergy > 0.2, "\(module.name)")
            #expect(module.frobeniusError > 0)
            // energy + (relative error)² = 1 (Eckart–Young).
            #expect(abs(module.capturedEnergy + module.relativeError * module.relativeError - 1) < 1e-5)
        }
    }

    @Test func rankIsCappedAtTheMatrixSize() throws {
        let (tuned, _) = try tunedCheckpoint()
        let (adapter, _) = try LoRAExtract.extract(base: try TensorCollection(path: MergeFixtures.sd35Diffusers),
                                                   tuned: try TensorCollection(path: tuned), rank: 500)
        #expect(adapter.modules.map(\.rank) == [32, 32, 32, 32])
        #expect(throws: LoRAMergeError.badRank(0)) {
            try LoRAExtract.extract(base: try TensorCollection(path: MergeFixtures.sd35Diffusers),
                                    tuned: try TensorCollection(path: tuned), rank: 0)
        }
    }

    /// Extracting in original naming from diffusers checkpoints fuses to_q and to_k into one qkv
    /// module (rank ≤ 6); merged into the original base it reproduces the tuned checkpoint.
    @Test func extractInTheOtherNaming() throws {
        let (tuned, _) = try tunedCheckpoint()
        let (adapter, report) = try LoRAExtract.extract(base: try TensorCollection(path: MergeFixtures.sd35Diffusers),
                                                        tuned: try TensorCollection(path: tuned), rank: 6, naming: .original)
        #expect(adapter.layout == .original)
        #expect(adapter.modules.map(\.name) == ["joint_blocks.0.x_block.attn.qkv", "joint_blocks.1.x_block.mlp.fc2",
                                                "joint_blocks.2.context_block.attn.qkv"])
        #expect(report.modules.allSatisfy { abs($0.capturedEnergy - 1) < 1e-6 })
        let merged = dir.file("merged-original.safetensors"), converted = dir.file("tuned-original.safetensors")
        try LoRAMerge.merge(base: try TensorCollection(path: MergeFixtures.sd35Original), adapter: adapter, output: merged)
        try Converter(source: try TensorCollection(path: tuned), to: .original, prefix: .sai).write(to: converted)
        let a = try MergeFixtures.floats(merged), b = try MergeFixtures.floats(converted)
        for (name, values) in b { #expect(MergeFixtures.maxRelativeDifference(a[name]!, values) <= 1e-5, "\(name)") }
    }

    @Test func identicalCheckpointsGiveAnEmptyAdapter() throws {
        let (adapter, report) = try LoRAExtract.extract(base: try TensorCollection(path: MergeFixtures.sd35Original),
                                                        tuned: try TensorCollection(path: MergeFixtures.sd35Original), rank: 4)
        #expect(adapter.modules.isEmpty && report.modules.isEmpty && report.unchangedModules > 0)
    }

    @Test func checkpointsMustMatch() throws {
        #expect {
            try LoRAExtract.extract(base: try TensorCollection(path: MergeFixtures.sd35Diffusers),
                                    tuned: try TensorCollection(path: MergeFixtures.sd35Original), rank: 4)
        } throws: { error in
            guard case LoRAMergeError.checkpointsDiffer = error else { return false }
            return "\(error)".contains("layout")
        }
        #expect(throws: LoRAMergeError.self) {
            try LoRAExtract.extract(base: try TensorCollection(path: MergeFixtures.sd35Original),
                                    tuned: try TensorCollection(path: MergeFixtures.fluxOriginal), rank: 4)
        }
    }
}
