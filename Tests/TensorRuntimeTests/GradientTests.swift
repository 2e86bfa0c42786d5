import Foundation
import Testing
import TensorRuntime
import TestSupport

/// Every operation's backward pass against central finite differences of loss = Σ op(x)·w.
@Suite(.serialized) struct GradientTests {
    func expectPasses(_ check: GradientCheck, _ name: String, sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(check.passes, "\(name): worst \(String(describing: check.worst)), stray \(check.strayGradients)",
                sourceLocation: sourceLocation)
    }

    /// The checker itself must fail on a wrong gradient, or the other tests prove nothing.
    @Test func checkerCatchesWrongGradients() {
        var rng = SeededGenerator(seed: 1)
        let x = randomTensor([2, 3, 5], &rng)
        let build: (Graph, [Variable]) -> Variable = { g, v in g.gelu(v[0]) }
        #expect(GradientCheck([x], build).passes)
        let scaled = GradientCheck([x], tamper: { grads in
            grads[0]!.scalars = grads[0]!.scalars.map { $0 * 1.05 }
        }, build)
        #expect(!scaled.passes)
        let oneOff = GradientCheck([x], tamper: { grads in grads[0]!.scalars[7] += 0.01 }, build)
        #expect(!oneOff.passes)
        let missing = GradientCheck([x], tamper: { grads in grads[0] = nil }, build)
        #expect(!missing.passes)
    }

    @Test func linearWithBiasAndLoRA() {
        var rng = SeededGenerator(seed: 2)
        let w = WeightMatrix(randomTensor([6, 5], &rng))
        let bias = randomTensor([6], &rng)
        let inputs = [randomTensor([2, 3, 5], &rng), randomTensor([2, 5], &rng), randomTensor([6, 2], &rng),
                      randomTensor([3, 5], &rng), randomTensor([6, 3], &rng)]
        expectPasses(GradientCheck(inputs) { g, v in
            g.linear(v[0], weight: w, bias: bias,
                     lora: [LoRABranch(down: v[1], up: v[2], scale: 0.7), LoRABranch(down: v[3], up: v[4], scale: -1.3)])
        }, "linear")
        // Only the LoRA factors train (the usual case): x receives nothing.
        expectPasses(GradientCheck(inputs, requires: [false, true, true, false, true]) { g, v in
            g.linear(v[0], weight: w, bias: nil,
                     lora: [LoRABranch(down: v[1], up: v[2], scale: 0.7), LoRABranch(down: v[3], up: v[4], scale: -1.3)])
        }, "linear (LoRA only)")
    }

    @Test func linearHalfPrecisionWeights() {
        var rng = SeededGenerator(seed: 3)
        let w32 = randomTensor([7, 4], &rng)
        for element in [WeightMatrix.Element.bfloat16, .float16] {
            let w = TestWeights.matrix(w32, element: element, offset: 1)
            expectPasses(GradientCheck([randomTensor([2, 3, 4], &rng)]) { g, v in
                g.linear(v[0], weight: w.matrix, bias: nil)
            }, "linear \(element)")
        }
    }

    /// A LoRA-wrapped linear whose frozen base is Q4_0 blocks decoded per use: gradients to x and
    /// to both factors agree with finite differences.
    @Test func linearLoRAOnEncodedBase() {
        var rng = SeededGenerator(seed: 9)
        let w = TestWeights.q4Matrix(randomTensor([6, 64], &rng), rows: 6, columns: 64, offset: 3)
        let bias = randomTensor([6], &rng)
        let inputs = [randomTensor([2, 3, 64], &rng), randomTensor([2, 64], &rng), randomTensor([6, 2], &rng)]
        expectPasses(GradientCheck(inputs) { g, v in
            g.linear(v[0], weight: w.matrix, bias: bias, lora: [LoRABranch(down: v[1], up: v[2], scale: 0.7)])
        }, "linear Q4_0 + LoRA")
        expectPasses(GradientCheck(inputs, requires: [false, true, true]) { g, v in
            g.linear(v[0], weight: w.matrix, bias: nil, lora: [LoRABranch(down: v[1], up: v[2], scale: -1.1)])
        }, "linear Q4_0 + LoRA (factors only)")
    }

    @Test func addAndMultiplyWithBroadcast() {
        var rng = SeededGenerator(seed: 4)
        let a = randomTensor([2, 3, 4], &rng)
        for bShape in [[2, 3, 4], [3, 4], [4], [1, 4]] {
            let b = randomTensor(bShape, &rng)
            expectPasses(GradientCheck([a, b]) { g, v in g.add(v[0], v[1]) }, "add \(bShape)")
            expectPasses(GradientCheck([a, b]) { g, v in g.multiply(v[0], v[1]) }, "multiply \(bShape)")
        }
        // The same variable on both sides accumulates both contributions.
        expectPasses(GradientCheck([a]) { g, v in g.multiply(v[0], v[0]) }, "multiply x·x")
    }

    @Test func scaleModulateGatedAdd() {
        var rng = SeededGenerator(seed: 5)
        let x = randomTensor([2, 3, 5], &rng)
        expectPasses(GradientCheck([x]) { g, v in g.scale(v[0], by: -2.5) }, "scale")
        expectPasses(GradientCheck([x, randomTensor([2, 5], &rng), randomTensor([2, 5], &rng)]) { g, v in
            g.modulate(v[0], shift: v[1], scale: v[2])
        }, "modulate")
        expectPasses(GradientCheck([x, randomTensor([2, 5], &rng), randomTensor([2, 3, 5], &rng)]) { g, v in
            g.gatedAdd(v[0], gate: v[1], v[2])
        }, "gatedAdd")
    }

    @Test func normalizations() {
        var rng = SeededGenerator(seed: 6)
        let x = randomTensor([2, 3, 7], &rng, in: -2...2)
        expectPasses(GradientCheck([x]) { g, v in g.layerNorm(v[0], epsilon: 1e-6) }, "layerNorm")
        let weight = randomTensor([7], &rng)
        expectPasses(GradientCheck([x]) { g, v in g.rmsNorm(v[0], weight: weight, epsilon: 1e-6) }, "rmsNorm")
        expectPasses(GradientCheck([x]) { g, v in g.rmsNorm(v[0], weight: nil, epsilon: 1e-6) }, "rmsNorm (no weight)")
    }

    @Test func activations() {
        var rng = SeededGenerator(seed: 7)
        let x = randomTensor([2, 3, 19], &rng, in: -4...4)
        expectPasses(GradientCheck([x], maxProbes: 40) { g, v in g.gelu(v[0]) }, "gelu")
        expectPasses(GradientCheck([x], maxProbes: 40) { g, v in g.silu(v[0]) }, "silu")
    }

    @Test func attention() {
        var rng = SeededGenerator(seed: 8)
        let (b, nq, nk, h, dh) = (2, 5, 7, 2, 4)
        let q = randomTensor([b, nq, h * dh], &rng, in: -2...2)
        let k = randomTensor([b, nk, h * dh], &rng, in: -2...2)
        let v = randomTensor([b, nk, h * dh], &rng)
        expectPasses(GradientCheck([q, k, v]) { g, x in g.attention(query: x[0], key: x[1], value: x[2], heads: h) },
                     "attention")
        expectPasses(GradientCheck([q, k, v], requires: [false, true, false]) { g, x in
            g.attention(query: x[0], key: x[1], value: x[2], heads: h)
        }, "attention (k only)")
        // The [B, N, H, Dh] layout.
        expectPasses(GradientCheck([q.reshaped([b, nq, h, dh]), k.reshaped([b, nk, h, dh]), v.reshaped([b, nk, h, dh])]) { g, x in
            g.attention(query: x[0], key: x[1], value: x[2], heads: h)
        }, "attention [B, N, H, Dh]")
    }

    @Test func rope() {
        var rng = SeededGenerator(seed: 9)
        let (b, n, h, dh) = (2, 3, 2, 6)
        let angles = randomTensor([n, dh / 2], &rng, in: -3...3)
        let cos = Tensor(shape: angles.shape, scalars: angles.scalars.map { Float(Foundation.cos(Double($0))) })
        let sin = Tensor(shape: angles.shape, scalars: angles.scalars.map { Float(Foundation.sin(Double($0))) })
        expectPasses(GradientCheck([randomTensor([b, n, h, dh], &rng)]) { g, v in
            g.rope(v[0], heads: h, cos: cos, sin: sin)
        }, "rope")
        expectPasses(GradientCheck([randomTensor([b, n, h * dh], &rng)]) { g, v in
            g.rope(v[0], heads: h, cos: cos, sin: sin)
        }, "rope [B, N, H·Dh]")
    }

    @Test func shapes() {
        var rng = SeededGenerator(seed: 10)
        let a = randomTensor([2, 3, 4], &rng), b = randomTensor([2, 2, 4], &rng)
        expectPasses(GradientCheck([a, b]) { g, v in g.concat([v[0], v[1]], axis: 1) }, "concat axis 1")
        expectPasses(GradientCheck([a, randomTensor([2, 3, 1], &rng)]) { g, v in g.concat([v[0], v[1]], axis: -1) },
                     "concat axis -1")
        // Pieces used out of order, one unused.
        expectPasses(GradientCheck([a]) { g, v in
            let pieces = g.split(v[0], axis: 2, sizes: [1, 2, 1])
            return g.concat([pieces[2], pieces[0]], axis: 2)
        }, "split")
        expectPasses(GradientCheck([a]) { g, v in g.gelu(g.reshape(v[0], [6, 4])) }, "reshape")
        expectPasses(GradientCheck([randomTensor([2, 3, 4, 6], &rng)]) { g, v in g.patchify(v[0], patch: 2) }, "patchify")
        expectPasses(GradientCheck([randomTensor([2, 6, 12], &rng)]) { g, v in
            g.unpatchify(v[0], height: 2, width: 3, patch: 2, channels: 3)
        }, "unpatchify")
    }

    @Test func reductions() {
        var rng = SeededGenerator(seed: 11)
        let x = randomTensor([2, 3, 4], &rng)
        expectPasses(GradientCheck([x]) { g, v in g.sum(g.gelu(v[0])) }, "sum")
        expectPasses(GradientCheck([x]) { g, v in g.mean(g.gelu(v[0])) }, "mean")
        let w = randomTensor([2, 3, 4], &rng)
        expectPasses(GradientCheck([x]) { g, v in g.weightedSum(g.gelu(v[0]), weights: w) }, "weightedSum")
    }

    /// A small transformer-like block: gradients through the composition, with 2 threads.
    @Test func composedBlockTwoThreads() {
        var rng = SeededGenerator(seed: 12)
        let (b, n, d, h) = (2, 5, 8, 2)
        let wq = WeightMatrix(randomTensor([d, d], &rng)), wo = WeightMatrix(randomTensor([d, d], &rng))
        let inputs = [randomTensor([b, n, d], &rng), randomTensor([b, d], &rng), randomTensor([b, d], &rng),
                      randomTensor([3, d], &rng), randomTensor([d, 3], &rng)]
        expectPasses(GradientCheck(inputs, threads: 2) { g, v in
            let x = g.modulate(g.layerNorm(v[0], epsilon: 1e-6), shift: v[1], scale: v[2])
            let q = g.linear(x, weight: wq, bias: nil, lora: [LoRABranch(down: v[3], up: v[4], scale: 0.5)])
            let a = g.attention(query: q, key: x, value: x, heads: h)
            return g.gatedAdd(v[0], gate: v[2], g.linear(g.gelu(a), weight: wo, bias: nil))
        }, "block")
    }
}
