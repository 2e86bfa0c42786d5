import BLAS
import TensorRuntime

/// Part (a): `Graph.linear` (no gradients recorded, Float32 and BFloat16 weights, with bias) vs
/// raw `cblas_sgemm` computing the same x·Wᵀ, on the block's linear shapes.
/// Also the raw sgemm rate on the block's dominant shape, the anchor of part (d).
/// Each timing has at least one warm-up and three runs (cheap), even in quick mode.
func linearBench(threads: Int, warmup: Int, reps: Int) -> [String: Any] {
    let warmup = max(1, warmup), reps = max(3, reps)
    let graph = Graph(threads: threads, recordsGradients: false)   // sets OpenBLAS's thread count
    // (tokens M, out N, in K): q/k/v/out projections, MLP up and down, text-stream projections.
    let shapes: [(m: Int, n: Int, k: Int, what: String)] = [
        (1024, 1536, 1536, "image q/k/v/out"), (1024, 6144, 1536, "image MLP up"),
        (1024, 1536, 6144, "image MLP down"), (154, 1536, 1536, "text q/k/v/out"),
    ]
    var rows: [[String: Any]] = []
    for (index, s) in shapes.enumerated() {
        let x = randomValues(s.m * s.k, seed: UInt64(3 * index))
        let w = randomValues(s.n * s.k, seed: UInt64(3 * index + 1)).map { $0 * 0.03 }
        let bias = Tensor(shape: [s.n], scalars: randomValues(s.n, seed: UInt64(3 * index + 2)))
        var c = [Float](repeating: 0, count: s.m * s.n)
        let flops = 2.0 * Double(s.m) * Double(s.n) * Double(s.k)
        let label = "\(s.m)x\(s.n)x\(s.k)"
        let raw = timings("sgemm \(label)", warmup: warmup, reps: reps) {
            x.withUnsafeBufferPointer { px in
                w.withUnsafeBufferPointer { pw in
                    c.withUnsafeMutableBufferPointer { pc in
                        BLAS.gemm(.none, .transposed, m: s.m, n: s.n, k: s.k, a: px.baseAddress!, b: pw.baseAddress!,
                                  c: pc.baseAddress!)
                    }
                }
            }
        }
        let input = graph.constant(Tensor(shape: [1, s.m, s.k], scalars: x))
        let f32 = WeightMatrix(Tensor(shape: [s.n, s.k], scalars: w))
        let bf16Bits = w.map { UInt16(truncatingIfNeeded: $0.bitPattern >> 16) }   // exact: compared to itself
        let bf16 = bf16Bits.withUnsafeBytes { WeightMatrix(rows: s.n, columns: s.k, element: .bfloat16, copying: $0) }
        var check = 0.0
        let ours32 = timings("linear f32 \(label)", warmup: warmup, reps: reps) {
            let y = graph.linear(input, weight: f32, bias: bias)
            check = Double(y.value.scalars[0])
        }
        let ours16 = timings("linear bf16 \(label)", warmup: warmup, reps: reps) {
            _ = graph.linear(input, weight: bf16, bias: bias)
        }
        // Sanity: the linear layer computes the same product (plus bias) as the raw call.
        let expected = Double(c[0] + bias.scalars[0])
        rows.append([
            "shape": label, "what": s.what, "flops": flops, "sgemm": raw, "linear_f32": ours32, "linear_bf16": ours16,
            "sgemm_gflops": flops / (raw["median_s"] as! Double) / 1e9,
            "first_value_abs_error": abs(check - expected),
        ])
    }
    return ["job": "linear", "threads": threads, "shapes": rows]
}

/// The raw sgemm rate (GFLOP/s, median of `reps`) on an M×N×K product, C = A·Bᵀ as a linear layer.
/// At least one warm-up and three runs, even in quick mode.
func sgemmRate(m: Int, n: Int, k: Int, warmup: Int, reps: Int) -> [String: Any] {
    let warmup = max(1, warmup), reps = max(3, reps)
    let a = randomValues(m * k, seed: 11), b = randomValues(n * k, seed: 12)
    var c = [Float](repeating: 0, count: m * n)
    let t = timings("sgemm \(m)x\(n)x\(k)", warmup: warmup, reps: reps) {
        a.withUnsafeBufferPointer { pa in
            b.withUnsafeBufferPointer { pb in
                c.withUnsafeMutableBufferPointer { pc in
                    BLAS.gemm(.none, .transposed, m: m, n: n, k: k, a: pa.baseAddress!, b: pb.baseAddress!, c: pc.baseAddress!)
                }
            }
        }
    }
    let flops = 2.0 * Double(m) * Double(n) * Double(k)
    return ["shape": "\(m)x\(n)x\(k)", "timing": t, "gflops": flops / (t["median_s"] as! Double) / 1e9,
            "gflops_best": flops / (t["min_s"] as! Double) / 1e9]
}
