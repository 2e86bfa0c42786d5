import Foundation
import Testing
import TensorRuntime
import TestSupport

/// Forward values against naive Double references.
@Suite(.serialized) struct ForwardTests {
    /// Naive attention in Double: q [B, Nq, H·Dh], k/v [B, Nk, H·Dh].
    func referenceAttention(_ q: Tensor, _ k: Tensor, _ v: Tensor, heads: Int) -> [Double] {
        let (b, nq, nk, width) = (q.shape[0], q.shape[1], k.shape[1], q.count / (q.shape[0] * q.shape[1]))
        let dh = width / heads
        var out = [Double](repeating: 0, count: q.count)
        for bi in 0..<b {
            for h in 0..<heads {
                for i in 0..<nq {
                    var scores = [Double](repeating: 0, count: nk)
                    for j in 0..<nk {
                        for d in 0..<dh {
                            scores[j] += Double(q.scalars[(bi * nq + i) * width + h * dh + d]) * Double(k.scalars[(bi * nk + j) * width + h * dh + d])
                        }
                        scores[j] /= Double(dh).squareRoot()
                    }
                    let m = scores.max()!
                    let e = scores.map { Foundation.exp($0 - m) }
                    let s = e.reduce(0, +)
                    for d in 0..<dh {
                        var acc = 0.0
                        for j in 0..<nk { acc += e[j] / s * Double(v.scalars[(bi * nk + j) * width + h * dh + d]) }
                        out[(bi * nq + i) * width + h * dh + d] = acc
                    }
                }
            }
        }
        return out
    }

    @Test func attentionMatchesTripleLoop() {
        var rng = SeededGenerator(seed: 20)
        let (b, nq, nk, h, dh) = (2, 9, 21, 3, 8)
        let q = randomTensor([b, nq, h * dh], &rng, in: -2...2)
        let k = randomTensor([b, nk, h * dh], &rng, in: -2...2)
        let v = randomTensor([b, nk, h * dh], &rng)
        let expected = referenceAttention(q, k, v, heads: h)
        for records in [false, true] {
            let g = Graph(threads: 2, recordsGradients: records)
            let y = g.attention(query: g.constant(q), key: g.constant(k), value: g.constant(v), heads: h)
            #expect(y.shape == [b, nq, h * dh])
            #expect(maxRelativeError(y.value.scalars, expected, floor: 1e-2) < 1e-5)
        }
    }

    /// Scores of ±1e4: no NaN or infinity, and each row picks the value of its largest score.
    @Test func softmaxIsStableAtHugeLogits() {
        let (nk, dh) = (5, 4)
        // q·k/√4 = 0.5·Σ 100·(±50) = ±1e4.
        let q = Tensor(shape: [1, 2, dh], scalars: [Float](repeating: 100, count: dh) + [Float](repeating: -100, count: dh))
        var kValues = [Float]()
        for j in 0..<nk { kValues += [Float](repeating: j == 3 ? 50 : -50, count: dh) }
        let k = Tensor(shape: [1, nk, dh], scalars: kValues)
        let v = Tensor(shape: [1, nk, dh], scalars: (0..<(nk * dh)).map { Float($0) })
        let g = Graph(threads: 1)
        let qv = g.parameter(q), kv = g.parameter(k), vv = g.parameter(v)
        let y = g.attention(query: qv, key: kv, value: vv, heads: 1)
        #expect(y.value.scalars.allSatisfy { $0.isFinite })
        #expect(Array(y.value.scalars[0..<dh]) == Array(v.scalars[(3 * dh)..<(4 * dh)]))
        g.backward(from: g.sum(y))
        for variable in [qv, kv, vv] { #expect(variable.gradient!.scalars.allSatisfy { $0.isFinite }) }
    }

    @Test func layerNormAndRMSNorm() {
        var rng = SeededGenerator(seed: 21)
        let x = randomTensor([2, 3, 37], &rng, in: -3...5)
        let weight = randomTensor([37], &rng)
        let g = Graph(threads: 2, recordsGradients: false)
        let ln = g.layerNorm(g.constant(x), epsilon: 1e-6).value.scalars
        let rms = g.rmsNorm(g.constant(x), weight: weight, epsilon: 1e-6).value.scalars
        var lnRef = [Double](), rmsRef = [Double]()
        for row in 0..<6 {
            let values = x.scalars[(row * 37)..<((row + 1) * 37)].map(Double.init)
            let mean = values.reduce(0, +) / 37
            let variance = values.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / 37
            lnRef += values.map { ($0 - mean) / (variance + 1e-6).squareRoot() }
            let ms = values.map { $0 * $0 }.reduce(0, +) / 37
            rmsRef += values.enumerated().map { $1 / (ms + 1e-6).squareRoot() * Double(weight.scalars[$0]) }
        }
        #expect(maxRelativeError(ln, lnRef, floor: 1e-2) < 1e-5)
        #expect(maxRelativeError(rms, rmsRef, floor: 1e-2) < 1e-5)
    }

    @Test func geluMatchesTanhFormulaAndSiluMatchesDefinition() {
        var values: [Float] = stride(from: -12, through: 12, by: 0.01).map { Float($0) }
        values += [0, 1e-3, -1e-3, 1e-6, -1e-6, 30, -30]
        let x = Tensor(shape: [values.count], scalars: values)
        let g = Graph(threads: 2, recordsGradients: false)
        let gelu = g.gelu(g.constant(x)).value.scalars
        let silu = g.silu(g.constant(x)).value.scalars
        for (i, v) in values.enumerated() {
            let d = Double(v)
            let u = (2 / Double.pi).squareRoot() * (d + 0.044715 * d * d * d)
            let tanhForm = 0.5 * d * (1 + Foundation.tanh(u))
            // The same value without the cancellation in 1 + tanh(u) for very negative u.
            let geluRef = d / (1 + Foundation.exp(-2 * u))
            let siluRef = d / (1 + Foundation.exp(-d))
            #expect(abs(tanhForm - geluRef) <= 1e-15 * max(1, abs(d)))
            #expect(abs(Double(gelu[i]) - tanhForm) <= 2.5e-7 * max(1, abs(d)), "gelu(\(v)) = \(gelu[i]), expected \(tanhForm)")
            // Relative accuracy 2e-6, times exp's condition number |2u| (the Float32 argument's rounding).
            #expect(abs(Double(gelu[i]) - geluRef) <= 2e-6 * abs(geluRef) * max(1, abs(2 * u)) + 1e-35, "gelu(\(v)) = \(gelu[i]), expected \(geluRef)")
            #expect(abs(Double(silu[i]) - siluRef) <= 2e-6 * abs(siluRef) * max(1, abs(d)) + 1e-35, "silu(\(v)) = \(silu[i]), expected \(siluRef)")
        }
    }

    @Test func ropeRotatesAdjacentPairs() {
        var rng = SeededGenerator(seed: 22)
        let (b, n, h, dh) = (2, 4, 3, 8)
        let x = randomTensor([b, n, h * dh], &rng)
        let angles = randomTensor([n, dh / 2], &rng, in: -3...3)
        let cos = Tensor(shape: angles.shape, scalars: angles.scalars.map { Foundation.cos($0) })
        let sin = Tensor(shape: angles.shape, scalars: angles.scalars.map { Foundation.sin($0) })
        let g = Graph(threads: 2, recordsGradients: false)
        let y = g.rope(g.constant(x), heads: h, cos: cos, sin: sin).value.scalars
        let y4 = g.rope(g.constant(x.reshaped([b, n, h, dh])), heads: h, cos: cos, sin: sin)
        #expect(y4.shape == [b, n, h, dh] && y4.value.scalars == y)
        var expected = [Double](repeating: 0, count: x.count)
        for bi in 0..<b { for t in 0..<n { for hi in 0..<h { for i in 0..<(dh / 2) {
            let base = ((bi * n + t) * h + hi) * dh + 2 * i
            let (x0, x1) = (Double(x.scalars[base]), Double(x.scalars[base + 1]))
            let (c, s) = (Double(cos.scalars[t * dh / 2 + i]), Double(sin.scalars[t * dh / 2 + i]))
            expected[base] = x0 * c - x1 * s
            expected[base + 1] = x1 * c + x0 * s
        } } } }
        #expect(maxRelativeError(y, expected, floor: 1) < 1e-6)
    }

    @Test func patchifyAndUnpatchifyIndexOrder() {
        let (b, c, hh, ww, p) = (2, 3, 4, 6, 2)
        let x = Tensor(shape: [b, c, hh, ww], scalars: (0..<(b * c * hh * ww)).map(Float.init))
        let g = Graph(threads: 1, recordsGradients: false)
        let tokens = g.patchify(g.constant(x), patch: p)
        let (gh, gw) = (hh / p, ww / p)
        #expect(tokens.shape == [b, gh * gw, c * p * p])
        for bi in 0..<b { for ch in 0..<c { for y in 0..<hh { for xx in 0..<ww {
            let token = (y / p) * gw + xx / p, feature = (ch * p + y % p) * p + xx % p
            #expect(tokens.value.scalars[(bi * gh * gw + token) * c * p * p + feature] == x.scalars[((bi * c + ch) * hh + y) * ww + xx])
        } } } }
        // Unpatchify reads features in (i, j, c) order.
        let t = Tensor(shape: [b, gh * gw, p * p * c], scalars: (0..<(b * gh * gw * p * p * c)).map(Float.init))
        let image = g.unpatchify(g.constant(t), height: gh, width: gw, patch: p, channels: c)
        #expect(image.shape == [b, c, gh * p, gw * p])
        for bi in 0..<b { for ch in 0..<c { for y in 0..<hh { for xx in 0..<ww {
            let token = (y / p) * gw + xx / p, feature = ((y % p) * p + xx % p) * c + ch
            #expect(image.value.scalars[((bi * c + ch) * hh + y) * ww + xx] == t.scalars[(bi * gh * gw + token) * p * p * c + feature])
        } } } }
        // With one channel the two feature orders coincide: a round trip is the identity.
        let one = Tensor(shape: [b, 1, hh, ww], scalars: (0..<(b * hh * ww)).map(Float.init))
        let back = g.unpatchify(g.patchify(g.constant(one), patch: p), height: gh, width: gw, patch: p, channels: 1)
        #expect(back.value == one)
    }

    /// Naive y = x·Wᵀ + b + Σ s·(x·Aᵀ)·Bᵀ in Double.
    func referenceLinear(_ x: Tensor, _ w: Tensor, _ bias: Tensor?, _ lora: [(Tensor, Tensor, Float)]) -> [Double] {
        let (outF, inF) = (w.shape[0], w.shape[1])
        let m = x.count / inF
        var y = [Double](repeating: 0, count: m * outF)
        for i in 0..<m {
            let row = (0..<inF).map { Double(x.scalars[i * inF + $0]) }
            for o in 0..<outF {
                var acc = Double(bias?.scalars[o] ?? 0)
                for j in 0..<inF { acc += row[j] * Double(w.scalars[o * inF + j]) }
                y[i * outF + o] = acc
            }
            for (a, b, s) in lora {
                let rank = a.shape[0]
                let t = (0..<rank).map { r in (0..<inF).reduce(0.0) { $0 + row[$1] * Double(a.scalars[r * inF + $1]) } }
                for o in 0..<outF {
                    y[i * outF + o] += Double(s) * (0..<rank).reduce(0.0) { $0 + t[$1] * Double(b.scalars[o * rank + $1]) }
                }
            }
        }
        return y
    }

    @Test func linearWithLoRABranches() {
        var rng = SeededGenerator(seed: 23)
        let x = randomTensor([2, 5, 11], &rng)
        let w = randomTensor([9, 11], &rng), bias = randomTensor([9], &rng)
        let a1 = randomTensor([3, 11], &rng), b1 = randomTensor([9, 3], &rng)
        let a2 = randomTensor([2, 11], &rng), b2 = randomTensor([9, 2], &rng)
        let g = Graph(threads: 2, recordsGradients: false)
        let y = g.linear(g.constant(x), weight: WeightMatrix(w), bias: bias,
                         lora: [LoRABranch(down: g.constant(a1), up: g.constant(b1), scale: 0.5),
                                LoRABranch(down: g.constant(a2), up: g.constant(b2), scale: -2)])
        #expect(y.shape == [2, 5, 9])
        #expect(maxRelativeError(y.value.scalars, referenceLinear(x, w, bias, [(a1, b1, 0.5), (a2, b2, -2)]), floor: 1e-2) < 1e-5)
    }

    /// bf16, f16 and f32 weights at an odd address, including a weight big enough to be widened
    /// in several panels: forward and dX match the widened Float32 reference.
    @Test func linearWithStoredElementTypes() {
        var rng = SeededGenerator(seed: 24)
        for (rows, columns) in [(13, 7), (2200, 1000)] {
            let w32 = randomTensor([rows, columns], &rng)
            let x = randomTensor([3, columns], &rng)
            let bias = randomTensor([rows], &rng)
            let seed = randomTensor([3, rows], &rng)
            for element in [WeightMatrix.Element.float32, .bfloat16, .float16] {
                let stored = TestWeights.matrix(w32, element: element, offset: 1)
                let g = Graph(threads: 2)
                let xv = g.parameter(x)
                let y = g.linear(xv, weight: stored.matrix, bias: bias)
                g.backward(from: y, seed: seed)
                let ref = Graph(threads: 2)
                let xr = ref.parameter(x)
                let yr = ref.linear(xr, weight: WeightMatrix(stored.widened), bias: bias)
                ref.backward(from: yr, seed: seed)
                let yRef = referenceLinear(x, stored.widened, bias, [])
                // Sums of `columns` terms of size ~1: compare relative to the typical magnitude.
                let floor = Double(columns).squareRoot()
                #expect(maxRelativeError(y.value.scalars, yRef, floor: floor) < 2e-6, "\(element) \(rows)×\(columns)")
                #expect(maxRelativeError(y.value.scalars, yr.value.scalars.map(Double.init), floor: floor) < 2e-6)
                #expect(maxRelativeError(xv.gradient!.scalars, xr.gradient!.scalars.map(Double.init), floor: floor) < 2e-6)
            }
        }
    }

    /// Q8_0 weights (GGUF blocks used from the mapping) at an odd address, one panel and several:
    /// forward and dX equal the product with the dequantized Float32 weight (to float rounding).
    @Test func linearWithQ8_0Weights() {
        var rng = SeededGenerator(seed: 25)
        for (rows, columns) in [(13, 64), (2200, 1024)] {
            let w32 = randomTensor([rows, columns], &rng)
            let x = randomTensor([3, columns], &rng)
            let bias = randomTensor([rows], &rng)
            let seed = randomTensor([3, rows], &rng)
            let stored = TestWeights.matrix(w32, element: .q8_0, offset: 1)
            #expect(stored.matrix.byteCount == rows * columns / 32 * 34)
            let g = Graph(threads: 2)
            let xv = g.parameter(x)
            let y = g.linear(xv, weight: stored.matrix, bias: bias)
            g.backward(from: y, seed: seed)
            let ref = Graph(threads: 2)
            let xr = ref.parameter(x)
            let yr = ref.linear(xr, weight: WeightMatrix(stored.widened), bias: bias)
            ref.backward(from: yr, seed: seed)
            // Equal up to the order OpenBLAS sums in, which depends on its thread count: that is
            // process-wide, and tests running alongside may change it between the two graphs.
            let floor = Double(columns).squareRoot()
            #expect(maxRelativeError(y.value.scalars, referenceLinear(x, stored.widened, bias, []), floor: floor) < 2e-6)
            #expect(maxRelativeError(y.value.scalars, yr.value.scalars.map(Double.init), floor: floor) < 2e-6, "\(rows)×\(columns)")
            #expect(maxRelativeError(xv.gradient!.scalars, xr.gradient!.scalars.map(Double.init), floor: floor) < 2e-6)
        }
    }

    /// Blocks decoded by their module's own `WeightEncoding` (Q4_0 here) at an odd address, one
    /// panel and several: forward and dX equal the product with the decoded Float32 weight (to
    /// float rounding), and
    /// the matrix holds only the stored bytes.
    @Test func linearWithEncodedWeights() {
        var rng = SeededGenerator(seed: 26)
        for (rows, columns) in [(13, 64), (2200, 1024)] {
            let w32 = randomTensor([rows, columns], &rng)
            let x = randomTensor([3, columns], &rng)
            let bias = randomTensor([rows], &rng)
            let seed = randomTensor([3, rows], &rng)
            let stored = TestWeights.q4Matrix(w32, rows: rows, columns: columns, offset: 1)
            #expect(stored.matrix.byteCount == rows * columns / 32 * 18)
            #expect(stored.matrix.element.name == "Q4_0" && stored.matrix.element != .q8_0)
            let g = Graph(threads: 2)
            let xv = g.parameter(x)
            let y = g.linear(xv, weight: stored.matrix, bias: bias)
            g.backward(from: y, seed: seed)
            let ref = Graph(threads: 2)
            let xr = ref.parameter(x)
            let yr = ref.linear(xr, weight: WeightMatrix(stored.widened), bias: bias)
            ref.backward(from: yr, seed: seed)
            // Equal up to the order OpenBLAS sums in, which depends on its thread count: that is
            // process-wide, and tests running alongside may change it between the two graphs.
            let floor = Double(columns).squareRoot()
            #expect(maxRelativeError(y.value.scalars, referenceLinear(x, stored.widened, bias, []), floor: floor) < 2e-6)
            #expect(maxRelativeError(y.value.scalars, yr.value.scalars.map(Double.init), floor: floor) < 2e-6, "\(rows)×\(columns)")
            #expect(maxRelativeError(xv.gradient!.scalars, xr.gradient!.scalars.map(Double.init), floor: floor) < 2e-6)
        }
    }

    @Test func broadcastingAddAndMultiply() {
        var rng = SeededGenerator(seed: 25)
        let a = randomTensor([2, 3, 4], &rng)
        let g = Graph(threads: 2, recordsGradients: false)
        for bShape in [[2, 3, 4], [3, 4], [4], [1, 1, 4]] {
            let b = randomTensor(bShape, &rng)
            let sum = g.add(g.constant(a), g.constant(b)).value.scalars
            let product = g.multiply(g.constant(a), g.constant(b)).value.scalars
            for i in 0..<a.count {
                #expect(sum[i] == a.scalars[i] + b.scalars[i % b.count])
                #expect(product[i] == a.scalars[i] * b.scalars[i % b.count])
            }
        }
        let s = g.scale(g.constant(a), by: 3).value.scalars
        #expect(s == a.scalars.map { $0 * 3 })
    }

    @Test func modulateGatedAddAndReductions() {
        var rng = SeededGenerator(seed: 26)
        let x = randomTensor([2, 3, 4], &rng), shift = randomTensor([2, 4], &rng), scale = randomTensor([2, 4], &rng)
        let g = Graph(threads: 2, recordsGradients: false)
        let m = g.modulate(g.constant(x), shift: g.constant(shift), scale: g.constant(scale)).value.scalars
        let ga = g.gatedAdd(g.constant(x), gate: g.constant(scale), g.constant(x)).value.scalars
        for i in 0..<x.count {
            let (b, d) = (i / 12, i % 4)
            #expect(abs(m[i] - (x.scalars[i] * (1 + scale.scalars[b * 4 + d]) + shift.scalars[b * 4 + d])) < 1e-6)
            #expect(abs(ga[i] - (x.scalars[i] + scale.scalars[b * 4 + d] * x.scalars[i])) < 1e-6)
        }
        let total = x.scalars.map(Double.init).reduce(0, +)
        #expect(abs(Double(g.sum(g.constant(x)).value.scalars[0]) - total) < 1e-5)
        #expect(abs(Double(g.mean(g.constant(x)).value.scalars[0]) - total / 24) < 1e-6)
        #expect(g.sum(g.constant(x)).shape == [])
    }
}
