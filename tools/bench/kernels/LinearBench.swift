import Foundation
import BLAS
import TensorRuntime

/// A weight of `rows`×`columns` random values stored as `element`.
func makeWeight(rows: Int, columns: Int, element: WeightMatrix.Element, rng: inout Random, amplitude: Float = 0.03) -> WeightMatrix {
    let values = rng.values(rows * columns, amplitude: amplitude)
    switch element {
    case .float32:
        return WeightMatrix(Tensor(shape: [rows, columns], scalars: values))
    case .bfloat16, .float16:
        let bits: [UInt16] = values.map { x in
            if element == .float16 { return Float16(x).bitPattern }
            let b = x.bitPattern
            return UInt16(truncatingIfNeeded: (b &+ 0x7FFF &+ ((b >> 16) & 1)) >> 16)
        }
        return bits.withUnsafeBytes { WeightMatrix(rows: rows, columns: columns, element: element, copying: $0) }
    case .q8_0, .encoded:
        fatalError("the kernel benchmark does not make block-encoded weights")
    }
}

/// Graph.linear against BLAS.gemm on the same shapes (C preallocated for the anchor).
func linearBench(_ options: Options) -> [Measurement] {
    var rng = Random(state: 1)
    var out: [Measurement] = []
    let shapes = [(1024, 1536, 1536), (1178, 1536, 1536), (1024, 1536, 6144), (1178, 1536, 6144), (1178, 6144, 1536)]
    for (m, k, n) in shapes {
        progress("linear \(m)×\(k) → \(n)")
        let x = Tensor(shape: [1, m, k], scalars: rng.values(m * k, amplitude: 1))
        let w32 = rng.values(n * k, amplitude: 0.03)
        let bias = Tensor(shape: [n], scalars: rng.values(n, amplitude: 0.1))
        var c = [Float](repeating: 0, count: m * n)
        let graph = Graph(threads: options.threads, recordsGradients: false)
        let anchor = best(repeats: options.repeats) {
            x.scalars.withUnsafeBufferPointer { xp in
                w32.withUnsafeBufferPointer { wp in
                    c.withUnsafeMutableBufferPointer { cp in
                        BLAS.gemm(.none, .transposed, m: m, n: n, k: k, a: xp.baseAddress!, b: wp.baseAddress!, c: cp.baseAddress!)
                    }
                }
            }
        }
        let weight = options.element == .float32
            ? WeightMatrix(Tensor(shape: [n, k], scalars: w32))
            : makeWeight(rows: n, columns: k, element: options.element, rng: &rng)
        let input = graph.constant(x)
        let ours = best(repeats: options.repeats) { _ = graph.linear(input, weight: weight, bias: bias) }
        out.append(Measurement(name: "linear \(m)×\(k)→\(n) +bias (\(options.element))", seconds: ours,
                               anchorName: "sgemm f32", anchorSeconds: anchor, gflop: 2e-9 * Double(m * n * k)))
    }
    return out
}

/// Row kernels against a memory copy of the same number of bytes (read + write).
func kernelBench(_ options: Options) -> [Measurement] {
    var rng = Random(state: 2)
    var out: [Measurement] = []
    let graph = Graph(threads: options.threads, recordsGradients: false)
    func copyTime(_ count: Int) -> Double {
        let source = [Float](repeating: 1, count: count)
        var target = [Float](repeating: 0, count: count)
        return best(repeats: options.repeats) {
            source.withUnsafeBufferPointer { s in
                target.withUnsafeMutableBufferPointer { t in t.baseAddress!.update(from: s.baseAddress!, count: count) }
            }
        }
    }
    // Attention: 24 heads of 1178×1178 scores (softmax included) vs the sgemm work alone.
    progress("kernels")
    let (n, d) = (1178, 1536)
    let q = graph.constant(Tensor(shape: [1, n, d], scalars: rng.values(n * d, amplitude: 1)))
    let k = graph.constant(Tensor(shape: [1, n, d], scalars: rng.values(n * d, amplitude: 1)))
    let v = graph.constant(Tensor(shape: [1, n, d], scalars: rng.values(n * d, amplitude: 1)))
    let attention = best(repeats: options.repeats) { _ = graph.attention(query: q, key: k, value: v, heads: 24) }
    var scores = [Float](repeating: 0, count: n * n)
    var o = [Float](repeating: 0, count: n * d)
    let gemms = best(repeats: options.repeats) {
        q.value.scalars.withUnsafeBufferPointer { qp in k.value.scalars.withUnsafeBufferPointer { kp in
            v.value.scalars.withUnsafeBufferPointer { vp in scores.withUnsafeMutableBufferPointer { sp in
                o.withUnsafeMutableBufferPointer { op in
                    for h in 0..<24 {
                        BLAS.gemm(.none, .transposed, m: n, n: n, k: 64, a: qp.baseAddress! + h * 64, lda: d,
                                  b: kp.baseAddress! + h * 64, ldb: d, c: sp.baseAddress!, ldc: n)
                        BLAS.gemm(.none, .none, m: n, n: 64, k: n, a: sp.baseAddress!, lda: n,
                                  b: vp.baseAddress! + h * 64, ldb: d, c: op.baseAddress! + h * 64, ldc: d)
                    }
                }
            } }
        } }
    }
    out.append(Measurement(name: "attention 1178 tok, 24×64 (fwd)", seconds: attention,
                           anchorName: "its 48 sgemm calls", anchorSeconds: gemms, gflop: 4e-9 * Double(n * n * 64 * 24)))

    let wide = graph.constant(Tensor(shape: [1, n, 6144], scalars: rng.values(n * 6144, amplitude: 4)))
    let gelu = best(repeats: options.repeats) { _ = graph.gelu(wide) }
    out.append(Measurement(name: "gelu [1178, 6144]", seconds: gelu, anchorName: "memcpy same bytes",
                           anchorSeconds: copyTime(n * 6144), gflop: nil))
    let x = graph.constant(Tensor(shape: [1, n, d], scalars: rng.values(n * d, amplitude: 2)))
    let ln = best(repeats: options.repeats) { _ = graph.layerNorm(x, epsilon: 1e-6) }
    out.append(Measurement(name: "layerNorm [1178, 1536]", seconds: ln, anchorName: "memcpy same bytes",
                           anchorSeconds: copyTime(n * d), gflop: nil))
    let shift = graph.constant(Tensor(shape: [1, d], scalars: rng.values(d, amplitude: 1)))
    let mod = best(repeats: options.repeats) { _ = graph.modulate(x, shift: shift, scale: shift) }
    out.append(Measurement(name: "modulate [1178, 1536]", seconds: mod, anchorName: "memcpy same bytes",
                           anchorSeconds: copyTime(n * d), gflop: nil))
    let heads = graph.constant(Tensor(shape: [1, n, 24, 64], scalars: rng.values(n * d, amplitude: 2)))
    let w64 = Tensor(shape: [64], scalars: rng.values(64, amplitude: 1))
    let rms = best(repeats: options.repeats) { _ = graph.rmsNorm(heads, weight: w64, epsilon: 1e-6) }
    out.append(Measurement(name: "rmsNorm [1178, 24, 64]", seconds: rms, anchorName: "memcpy same bytes",
                           anchorSeconds: copyTime(n * d), gflop: nil))
    return out
}
