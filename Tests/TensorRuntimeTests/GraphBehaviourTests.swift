import Testing
import TensorRuntime
import TestSupport

/// Recording, gradient routing and thread-count independence.
@Suite(.serialized) struct GraphBehaviourTests {
    /// A small block using most operations; returns the output and the leaves.
    func block(_ g: Graph, _ x: Variable, _ lora: [Variable], weights: [WeightMatrix], heads: Int) -> Variable {
        let n = g.layerNorm(x, epsilon: 1e-6)
        let q = g.linear(n, weight: weights[0], bias: nil, lora: [LoRABranch(down: lora[0], up: lora[1], scale: 0.5)])
        let k = g.rmsNorm(g.linear(n, weight: weights[1], bias: nil), weight: nil, epsilon: 1e-6)
        let a = g.attention(query: q, key: k, value: n, heads: heads)
        let h = g.gelu(g.linear(a, weight: weights[2], bias: nil))
        return g.add(x, g.silu(g.linear(h, weight: weights[3], bias: nil)))
    }

    @Test func gradientsOnlyWhereRequired() {
        var rng = SeededGenerator(seed: 30)
        let d = 8
        let weights = (0..<4).map { _ in WeightMatrix(randomTensor([d, d], &rng)) }
        let g = Graph(threads: 2)
        let x = g.constant(randomTensor([2, 5, d], &rng))
        let down = g.parameter(randomTensor([2, d], &rng))
        let up = Variable(constant: randomTensor([d, 2], &rng))
        let y = block(g, x, [down, up], weights: weights, heads: 2)
        #expect(y.requiresGradient)
        g.backward(from: g.sum(y))
        #expect(x.gradient == nil && up.gradient == nil)
        #expect(down.gradient != nil && down.gradient!.shape == [2, d])
        // Nothing requires a gradient: nothing flows, the output does not require one.
        let h = Graph(threads: 1)
        let z = h.gelu(h.constant(randomTensor([3], &rng)))
        #expect(!z.requiresGradient)
    }

    @Test func gradientsAccumulateAcrossBackwardCalls() {
        var rng = SeededGenerator(seed: 31)
        let p = Variable(parameter: randomTensor([2, 3], &rng))
        for _ in 0..<2 {
            let g = Graph(threads: 1)
            g.backward(from: g.sum(g.scale(p, by: 2)))
        }
        #expect(p.gradient!.scalars == [Float](repeating: 4, count: 6))
    }

    /// A graph that does not record keeps no reference to intermediates.
    @Test func notRecordingReleasesIntermediates() {
        var rng = SeededGenerator(seed: 32)
        let g = Graph(threads: 1, recordsGradients: false)
        let x = g.parameter(randomTensor([2, 3, 4], &rng))
        weak var intermediate: Variable?
        var out: Variable?
        do {
            let h = g.gelu(x)
            intermediate = h
            out = g.layerNorm(h, epsilon: 1e-6)
        }
        #expect(intermediate == nil)
        #expect(out.map { !$0.requiresGradient } == true)
        // A recording graph keeps it until backward releases the tape.
        let r = Graph(threads: 1)
        let y = r.parameter(randomTensor([2, 3, 4], &rng))
        weak var kept: Variable?
        var loss: Variable?
        do {
            let h = r.gelu(y)
            kept = h
            loss = r.sum(h)
        }
        #expect(kept != nil)
        r.backward(from: loss!)
        loss = nil
        #expect(kept == nil)
        #expect(y.gradient != nil)
        _ = out
    }

    @Test func oneAndTwoThreadsAgree() {
        var rng = SeededGenerator(seed: 33)
        let d = 48
        let weights = (0..<4).map { _ in WeightMatrix(randomTensor([d, d], &rng, in: -0.3...0.3)) }
        let xValue = randomTensor([2, 37, d], &rng)
        let loraValues = [randomTensor([4, d], &rng), randomTensor([d, 4], &rng)]
        var results: [[Float]] = []
        for threads in [1, 2] {
            let g = Graph(threads: threads)
            let x = g.parameter(xValue)
            let lora = loraValues.map { g.parameter($0) }
            let y = block(g, x, lora, weights: weights, heads: 4)
            let out = y.value.scalars
            g.backward(from: y, seed: Tensor(repeating: 0.01, shape: y.shape))
            results.append(out + x.gradient!.scalars + lora[0].gradient!.scalars + lora[1].gradient!.scalars)
        }
        #expect(maxRelativeError(results[1], results[0].map(Double.init), floor: 1e-3) < 1e-5)
    }
}
