import TensorRuntime
import TestSupport

/// Random tensors for the tests (uniform in `range`).
func randomTensor(_ shape: [Int], _ rng: inout SeededGenerator, in range: ClosedRange<Float> = -1...1) -> Tensor {
    Tensor(shape: shape, scalars: (0..<shape.reduce(1, *)).map { _ in Float.random(in: range, using: &rng) })
}

/// One probed element: the analytic gradient and the central finite difference at that element.
struct GradientProbe {
    var input: Int
    var index: Int
    var analytic: Double
    var numeric: Double

    /// Whether the two agree to what Float32 forward passes with step 1e-2 can resolve.
    var agrees: Bool { abs(analytic - numeric) <= 1e-3 + 1e-2 * abs(numeric) }
}

/// The comparison of the analytic gradients of loss = Σ op(x)·w (random w) with central
/// finite differences, for every input that requires a gradient.
struct GradientCheck {
    var probes: [GradientProbe]
    /// Gradients left on inputs that do not require one (must be empty).
    var strayGradients: [Int]

    var passes: Bool { strayGradients.isEmpty && probes.allSatisfy(\.agrees) && !probes.isEmpty }
    var worst: GradientProbe? { probes.max { abs($0.analytic - $0.numeric) < abs($1.analytic - $1.numeric) } }

    /// Runs the check. `build` makes the operation from the input variables; `requires` tells
    /// which inputs are parameters (default: all). At most `maxProbes` elements per input are
    /// probed (all of them when the input is small). `tamper` may alter the analytic gradients
    /// before comparison (to prove the check can fail).
    init(_ inputs: [Tensor], requires: [Bool]? = nil, seed: UInt64 = 1, maxProbes: Int = 24, threads: Int = 1,
         tamper: ((inout [Tensor?]) -> Void)? = nil,
         _ build: (Graph, [Variable]) -> Variable) {
        var rng = SeededGenerator(seed: seed)
        let requires = requires ?? inputs.map { _ in true }
        let graph = Graph(threads: threads)
        let variables = zip(inputs, requires).map { $1 ? graph.parameter($0) : graph.constant($0) }
        let y = build(graph, variables)
        let weights = randomTensor(y.shape, &rng)
        graph.backward(from: graph.weightedSum(y, weights: weights))
        var gradients = variables.map(\.gradient)
        strayGradients = requires.indices.filter { !requires[$0] && gradients[$0] != nil }
        tamper?(&gradients)

        /// Σ op(x)·w in Double from a non-recording forward pass.
        func loss(_ values: [Tensor]) -> Double {
            let g = Graph(threads: threads, recordsGradients: false)
            let out = build(g, values.map { g.constant($0) })
            return zip(out.value.scalars, weights.scalars).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
        }

        probes = []
        for (i, input) in inputs.enumerated() where requires[i] {
            let indices = input.count <= maxProbes ? Array(0..<input.count)
                : (0..<maxProbes).map { _ in Int.random(in: 0..<input.count, using: &rng) }
            for index in indices {
                var plus = inputs, minus = inputs
                let x = input.scalars[index]
                let h = 1e-2 * max(1, abs(x))
                plus[i].scalars[index] = x + h
                minus[i].scalars[index] = x - h
                let step = Double(plus[i].scalars[index]) - Double(minus[i].scalars[index])
                let numeric = (loss(plus) - loss(minus)) / step
                let analytic = Double(gradients[i]?.scalars[index] ?? 0)
                probes.append(GradientProbe(input: i, index: index, analytic: analytic, numeric: numeric))
            }
        }
    }
}

/// Largest |a − b| / max(|b|, floor) over two value lists.
func maxRelativeError(_ a: [Float], _ b: [Double], floor: Double = 1e-6) -> Double {
    precondition(a.count == b.count)
    return zip(a, b).map { abs(Double($0) - $1) / max(abs($1), floor) }.max() ?? 0
}
