import Foundation
import BLAS
import TensorRuntime

/// A frozen linear layer, optionally with a trainable rank-32 LoRA branch.
struct BenchLinear {
    var weight: WeightMatrix
    var bias: Tensor
    var lora: [LoRABranch]
}

/// FLOPs of the matrix products of one pass, counted as the graph is built.
struct FlopCount {
    var forward = 0.0
    var backward = 0.0
}

/// One SD3.5-Medium joint transformer block with dual attention (hidden 1536, 24 heads of 64):
/// adaLN-zero modulation, joint attention over image + text tokens, a second image-only
/// attention, GELU-tanh MLPs for both streams. Built from `Graph` operations only.
struct JointBlock {
    let hidden = 1536, heads = 24, headDim = 64
    var linears: [String: BenchLinear] = [:]
    var qkNorm: Tensor

    init(element: WeightMatrix.Element, rank: Int, rng: inout Random) {
        let d = hidden
        qkNorm = Tensor(shape: [headDim], scalars: rng.values(headDim, amplitude: 0.2).map { 1 + $0 })
        var shapes: [(String, Int, Int, Bool)] = [("adaX", 9 * d, d, false), ("adaC", 6 * d, d, false)]
        for stream in ["x", "c", "x2"] {
            for p in ["q", "k", "v", "o"] { shapes.append(("\(stream).\(p)", d, d, true)) }
        }
        shapes += [("x.ff1", 4 * d, d, false), ("x.ff2", d, 4 * d, false), ("c.ff1", 4 * d, d, false), ("c.ff2", d, 4 * d, false)]
        for (name, rows, columns, lora) in shapes {
            progress("weights \(name) \(rows)×\(columns)")
            let weight = makeWeight(rows: rows, columns: columns, element: element, rng: &rng)
            let bias = Tensor(shape: [rows], scalars: rng.values(rows, amplitude: 0.02))
            let branches = lora ? [LoRABranch(
                down: Variable(parameter: Tensor(shape: [rank, columns], scalars: rng.values(rank * columns, amplitude: 0.02))),
                up: Variable(parameter: Tensor(shape: [rows, rank], scalars: rng.values(rows * rank, amplitude: 0.02))),
                scale: 1)] : []
            linears[name] = BenchLinear(weight: weight, bias: bias, lora: branches)
        }
    }

    /// The LoRA parameters (whose gradients the backward pass computes).
    var parameters: [Variable] { linears.values.flatMap { $0.lora.flatMap { [$0.down, $0.up] } } }

    /// x `[1, Nx, D]`, c `[1, Nc, D]`, temb `[1, D]` → concatenated outputs `[1, Nx + Nc, D]`.
    func forward(_ g: Graph, x: Variable, c: Variable, temb: Variable, flops: inout FlopCount) -> Variable {
        let (tx, tc, d) = (x.shape[1], c.shape[1], hidden)
        func linear(_ name: String, _ input: Variable) -> Variable {
            let l = linears[name]!
            let m = Double(input.value.count / l.weight.columns)
            let (n, k) = (Double(l.weight.rows), Double(l.weight.columns))
            flops.forward += 2 * m * n * k
            let lora = g.recordsGradients ? l.lora : []
            for b in lora {
                let r = Double(b.down.shape[0])
                flops.forward += 2 * m * r * (k + n)
                flops.backward += 2 * n * r * m + 2 * m * n * r + 2 * r * k * m  // dB, u, dA
                if input.requiresGradient { flops.backward += 2 * m * k * r }
            }
            if input.requiresGradient && g.recordsGradients { flops.backward += 2 * m * n * k }
            return g.linear(input, weight: l.weight, bias: l.bias, lora: lora)
        }
        func attention(_ q: Variable, _ k: Variable, _ v: Variable) -> Variable {
            let (nq, nk) = (Double(q.shape[1]), Double(k.shape[1]))
            let perHead = 2 * nq * nk * Double(headDim)
            flops.forward += 2 * perHead * Double(heads)
            if g.recordsGradients && (q.requiresGradient || k.requiresGradient || v.requiresGradient) {
                flops.backward += 4 * perHead * Double(heads)
            }
            return g.reshape(g.attention(query: q, key: k, value: v, heads: heads), [1, q.shape[1], d])
        }
        func headsNorm(_ t: Variable) -> Variable {
            g.rmsNorm(g.reshape(t, [1, t.shape[1], heads, headDim]), weight: qkNorm, epsilon: 1e-6)
        }
        let emb = g.silu(temb)
        let mx = g.split(linear("adaX", emb), axis: 1, sizes: Array(repeating: d, count: 9))
        let mc = g.split(linear("adaC", emb), axis: 1, sizes: Array(repeating: d, count: 6))
        let lx = g.layerNorm(x, epsilon: 1e-6), lc = g.layerNorm(c, epsilon: 1e-6)
        let nx = g.modulate(lx, shift: mx[0], scale: mx[1])
        let nx2 = g.modulate(lx, shift: mx[6], scale: mx[7])
        let ncx = g.modulate(lc, shift: mc[0], scale: mc[1])

        // Joint attention over [image; text].
        let q = g.concat([headsNorm(linear("x.q", nx)), headsNorm(linear("c.q", ncx))], axis: 1)
        let k = g.concat([headsNorm(linear("x.k", nx)), headsNorm(linear("c.k", ncx))], axis: 1)
        let v = g.concat([g.reshape(linear("x.v", nx), [1, tx, heads, headDim]),
                          g.reshape(linear("c.v", ncx), [1, tc, heads, headDim])], axis: 1)
        let joint = g.split(attention(q, k, v), axis: 1, sizes: [tx, tc])
        let ax = linear("x.o", joint[0]), ac = linear("c.o", joint[1])
        // Second, image-only attention.
        let a2 = linear("x2.o", attention(headsNorm(linear("x2.q", nx2)), headsNorm(linear("x2.k", nx2)),
                                          g.reshape(linear("x2.v", nx2), [1, tx, heads, headDim])))
        var hx = g.gatedAdd(x, gate: mx[2], ax)
        hx = g.gatedAdd(hx, gate: mx[8], a2)
        let fx = linear("x.ff2", g.gelu(linear("x.ff1", g.modulate(g.layerNorm(hx, epsilon: 1e-6), shift: mx[3], scale: mx[4]))))
        hx = g.gatedAdd(hx, gate: mx[5], fx)
        var hc = g.gatedAdd(c, gate: mc[2], ac)
        let fc = linear("c.ff2", g.gelu(linear("c.ff1", g.modulate(g.layerNorm(hc, epsilon: 1e-6), shift: mc[3], scale: mc[4]))))
        hc = g.gatedAdd(hc, gate: mc[5], fc)
        return g.concat([hx, hc], axis: 1)
    }
}

/// The in-process sgemm rate (GFLOP/s) on a block-sized product.
func sgemmRate(repeats: Int) -> Double {
    var rng = Random(state: 9)
    let (m, k, n) = (1178, 1536, 6144)
    let a = rng.values(m * k, amplitude: 1), b = rng.values(n * k, amplitude: 1)
    var c = [Float](repeating: 0, count: m * n)
    let t = best(repeats: repeats) {
        a.withUnsafeBufferPointer { ap in b.withUnsafeBufferPointer { bp in c.withUnsafeMutableBufferPointer { cp in
            BLAS.gemm(.none, .transposed, m: m, n: n, k: k, a: ap.baseAddress!, b: bp.baseAddress!, c: cp.baseAddress!)
        } } }
    }
    return 2e-9 * Double(m * n * k) / t
}

/// Block forward and forward+backward times, as shares of the sgemm rate.
func blockBench(_ options: Options) -> ([Measurement], [String: Any]) {
    var rng = Random(state: 3)
    let block = JointBlock(element: options.element, rank: 32, rng: &rng)
    let d = block.hidden
    let xValue = Tensor(shape: [1, 1024, d], scalars: rng.values(1024 * d, amplitude: 1))
    let cValue = Tensor(shape: [1, 154, d], scalars: rng.values(154 * d, amplitude: 1))
    let tValue = Tensor(shape: [1, d], scalars: rng.values(d, amplitude: 1))
    _ = Graph(threads: options.threads)  // sets OpenBLAS's thread count for the anchor
    let rate = sgemmRate(repeats: options.repeats)
    progress(String(format: "sgemm rate %.1f GFLOP/s", rate))

    var forwardFlops = FlopCount()
    let forward = best(repeats: options.repeats) {
        progress("block forward")
        let g = Graph(threads: options.threads, recordsGradients: false)
        var flops = FlopCount()
        _ = g.forward(block, x: xValue, c: cValue, temb: tValue, flops: &flops)
        forwardFlops = flops
    }
    var trainFlops = FlopCount()
    let seed = Tensor(shape: [1, 1178, d], scalars: rng.values(1178 * d, amplitude: 1e-3))
    let train = best(repeats: options.repeats) {
        progress("block forward+backward")
        let g = Graph(threads: options.threads)
        var flops = FlopCount()
        let y = g.forward(block, x: xValue, c: cValue, temb: tValue, flops: &flops)
        g.backward(from: y, seed: seed)
        trainFlops = flops
    }
    let missing = block.parameters.filter { $0.gradient == nil }.count
    let fwdGF = forwardFlops.forward * 1e-9, trainGF = (trainFlops.forward + trainFlops.backward) * 1e-9
    let measurements = [
        Measurement(name: "joint block forward (\(options.element))", seconds: forward, anchorName: "sgemm at same FLOPs",
                    anchorSeconds: fwdGF / rate, gflop: fwdGF),
        Measurement(name: "joint block fwd+bwd, LoRA grads (\(options.element))", seconds: train,
                    anchorName: "sgemm at same FLOPs", anchorSeconds: trainGF / rate, gflop: trainGF),
    ]
    let summary: [String: Any] = [
        "sgemm_gflops": rate, "forward_gflop": fwdGF, "train_gflop": trainGF,
        "forward_ms": forward * 1e3, "train_ms": train * 1e3,
        "forward_share_of_sgemm": fwdGF / forward / rate, "train_share_of_sgemm": trainGF / train / rate,
        "lora_parameters_without_gradient": missing,
    ]
    return (measurements, summary)
}

extension Graph {
    /// Runs the block on constants.
    func forward(_ block: JointBlock, x: Tensor, c: Tensor, temb: Tensor, flops: inout FlopCount) -> Variable {
        block.forward(self, x: constant(x), c: constant(c), temb: constant(temb), flops: &flops)
    }
}
