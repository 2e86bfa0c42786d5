import Checkpoints
import Foundation
import LoRA
import Testing
import TestSupport

/// Exact fused ↔ split conversion and modulation half-swaps.
@Suite struct LayoutConversionTests {
    func random(_ shape: [Int], seed: UInt64) -> Matrix {
        var rng = SeededGenerator(seed: seed)
        return Matrix(shape: shape, values: (0..<shape.reduce(1, *)).map { _ in Float.random(in: -1...1, using: &rng) })
    }

    @Test func fusedQKVSplitsSharingA() throws {
        let arch = try LoRAFixture.sd35.architecture()
        let h = arch.config.hiddenSize
        let qkv = LoRAModule(name: "joint_blocks.1.x_block.attn.qkv", down: random([3, h], seed: 1), up: random([3 * h, 3], seed: 2), alpha: 6)
        let adapter = LoRAAdapter(modules: [qkv], layout: .original, format: .comfy, family: .sd3)
        let split = try adapter.converted(to: .diffusers, architecture: arch)
        #expect(split.modules.map(\.name) == ["transformer_blocks.1.attn.to_q", "transformer_blocks.1.attn.to_k", "transformer_blocks.1.attn.to_v"])
        for (i, m) in split.modules.enumerated() {
            #expect(m.down == qkv.down)
            #expect(m.up == qkv.up.rows((i * h)..<((i + 1) * h)))
            #expect(m.alpha == 6)
        }
        let back = try split.converted(to: .original, architecture: arch)
        #expect(back.modules.count == 1 && back.modules[0].rank == 9)
        #expect(maxRelativeDifference(try adapter.deltaWeights(architecture: arch), try back.deltaWeights(architecture: arch)) <= 1e-6)
    }

    @Test func splitFusesBlockDiagonallyWithZeroRowsForUncovered() throws {
        let arch = try LoRAFixture.flux.architecture()
        let h = arch.config.hiddenSize
        let q = LoRAModule(name: "single_transformer_blocks.0.attn.to_q", down: random([2, h], seed: 3), up: random([h, 2], seed: 4), alpha: 4)
        let v = LoRAModule(name: "single_transformer_blocks.0.attn.to_v", down: random([3, h], seed: 5), up: random([h, 3], seed: 6), alpha: 3)
        let adapter = LoRAAdapter(modules: [q, v], layout: .diffusers, format: .peft, family: .flux)
        let fused = try adapter.converted(to: .original, architecture: arch)
        let m = try #require(fused.module("single_blocks.0.linear1"))
        #expect(m.rank == 5 && m.alpha == nil && m.outFeatures == 7 * h)
        #expect(m.down.values == q.down.values + v.down.values)
        // k rows and mlp rows are zero; q block is scaled by s_q = 2, off-diagonal zero
        for row in 0..<(7 * h) {
            let r = Array(m.up.values[(row * 5)..<(row * 5 + 5)])
            if row < h { #expect(r == q.up.values[(row * 2)..<(row * 2 + 2)].map { $0 * 2 } + [0, 0, 0]) }
            else if row >= 2 * h && row < 3 * h { #expect(r == [0, 0] + v.up.values[((row - 2 * h) * 3)..<((row - 2 * h) * 3 + 3)]) }
            else { #expect(r.allSatisfy { $0 == 0 }) }
        }
        #expect(maxRelativeDifference(try adapter.deltaWeights(architecture: arch), try fused.deltaWeights(architecture: arch)) <= 1e-6)
    }

    @Test(arguments: LoRAFixture.allCases)
    func modulationHalfSwapMovesBRowsOnly(fixture: LoRAFixture) throws {
        let arch = try fixture.architecture()
        let h = arch.config.hiddenSize
        var names = ["final_layer.adaLN_modulation.1"]
        if let c = arch.config.typed(SD3Config.self) { names.append("joint_blocks.\(c.numLayers - 1).context_block.adaLN_modulation.1") }
        for name in names {
            let mapping = try arch.mapModule(name, from: .original)
            #expect(mapping.swapsHalves)
            let m = LoRAModule(name: name, down: random([2, h], seed: 8), up: random([2 * h, 2], seed: 9), alpha: 2,
                               upBias: random([2 * h], seed: 10))
            let adapter = LoRAAdapter(modules: [m], layout: .original, format: .kohya, family: arch.family)
            let swapped = try adapter.converted(to: .diffusers, architecture: arch)
            let s = try #require(swapped.modules.first)
            #expect(swapped.modules.count == 1 && s.name == mapping.targets[0])
            #expect(s.down == m.down)
            #expect(Array(s.up.values[0..<(2 * h)]) == Array(m.up.values[(2 * h)..<(4 * h)]))
            #expect(Array(s.up.values[(2 * h)...]) == Array(m.up.values[0..<(2 * h)]))
            #expect(Array(s.upBias!.values[0..<h]) == Array(m.upBias!.values[h...]))
            let back = try swapped.converted(to: .original, architecture: arch)
            #expect(back.modules[0].up == m.up && back.modules[0].down == m.down && back.modules[0].upBias == m.upBias)
        }
    }

    @Test(arguments: LoRAFixture.allCases)
    func fixtureAdapterRoundTripsThroughOriginal(fixture: LoRAFixture) throws {
        let arch = try fixture.architecture()
        let adapter = try LoRAReader.read(path: fixture.diffusersFile)
        let original = try adapter.converted(to: .original, architecture: arch)
        #expect(original.layout == .original)
        #expect(original.modules.count < adapter.modules.count)
        let again = try original.converted(to: .diffusers, architecture: arch)
        #expect(maxRelativeDifference(try adapter.deltaWeights(architecture: arch), try again.deltaWeights(architecture: arch)) <= 1e-6)
    }

    @Test(arguments: LoRAFixture.allCases)
    func architectureIsInferredFromTheAdapter(fixture: LoRAFixture) throws {
        let arch = try fixture.architecture()
        let adapter = try LoRAReader.read(path: fixture.diffusersFile)
        let (inferred, notes) = try adapter.inferredArchitecture()
        #expect(inferred.family == arch.family && inferred.config.hiddenSize == arch.config.hiddenSize)
        #expect(!notes.isEmpty)
        let a = try adapter.converted(to: .original, architecture: inferred)
        let b = try adapter.converted(to: .original, architecture: arch)
        #expect(a.modules == b.modules)
    }
}
