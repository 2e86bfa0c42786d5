import BLAS

extension Graph {
    /// Multi-head scaled-dot-product attention without mask: q `[B, Nq, H·Dh]`, k and v
    /// `[B, Nk, H·Dh]` (a `[B, N, H, Dh]` shape is accepted too) → `[B, Nq, H·Dh]`, scale 1/√Dh,
    /// softmax computed stably.
    ///
    /// Each (batch, head) pair is two strided sgemm calls on the stored layout (row stride H·Dh),
    /// with a row-parallel softmax between them. When recording, the softmax P of every pair is
    /// kept (B·H·Nq·Nk values) for the backward pass.
    public func attention(query q: Variable, key k: Variable, value v: Variable, heads: Int) -> Variable {
        precondition(q.shape.count >= 3 && k.shape.count >= 3 && v.shape.count >= 3 && heads > 0,
                     "attention: q \(q.shape), k \(k.shape), v \(v.shape) are not [B, N, H·Dh] (heads \(heads))")
        let batch = q.shape[0], nq = q.shape[1], nk = k.shape[1]
        let width = q.shape.dropFirst(2).reduce(1, *)
        precondition(k.shape[0] == batch && v.shape[0] == batch && v.shape[1] == nk
                     && k.shape.dropFirst(2).reduce(1, *) == width && v.shape.dropFirst(2).reduce(1, *) == width
                     && width % heads == 0,
                     "attention: q \(q.shape), k \(k.shape), v \(v.shape) do not agree for \(heads) heads")
        if q.shape.count == 4 {
            precondition(q.shape[2] == heads, "attention: q \(q.shape) has \(q.shape[2]) heads, not \(heads)")
        }
        let dh = width / heads
        let scale = 1 / Float(dh).squareRoot()
        let record = needsRecord(q, k, v)
        let threads = self.threads
        let pairs = batch * heads
        let block = nq * nk

        // P for every (batch, head) pair when recording; one reusable score matrix otherwise.
        var probabilities = Tensor(shape: [0], scalars: [])
        if record {
            probabilities = Tensor.uninitialized([pairs, nq, nk]) { _ in }
        }
        let scratch = record ? nil : workspace.buffer(.scores, count: block)
        let y = Tensor.uninitialized(q.shape) { yp in
            q.value.withPointer { qp in
                k.value.withPointer { kp in
                    v.value.withPointer { vp in
                        probabilities.withMutablePointer { pp in
                            for pair in 0..<pairs {
                                let (b, h) = (pair / heads, pair % heads)
                                let s = scratch ?? pp + pair * block
                                let qo = b * nq * width + h * dh, ko = b * nk * width + h * dh
                                BLAS.gemm(.none, .transposed, m: nq, n: nk, k: dh, alpha: scale,
                                          a: qp + qo, lda: width, b: kp + ko, ldb: width, c: s, ldc: nk)
                                Kernels.softmaxRows(s, rows: nq, columns: nk, threads: threads)
                                BLAS.gemm(.none, .none, m: nq, n: dh, k: nk, a: s, lda: nk, b: vp + ko, ldb: width,
                                          c: yp + qo, ldc: width)
                            }
                        }
                    }
                }
            }
        }
        guard record else { return output(y, record: false) { _ in } }
        let needQK = q.requiresGradient || k.requiresGradient
        let savedQ: Tensor? = k.requiresGradient ? q.value : nil
        let savedK: Tensor? = q.requiresGradient ? k.value : nil
        let savedV: Tensor? = needQK ? v.value : nil
        let workspace = self.workspace
        return output(y, record: true) { [unowned self] g in
            var dq = q.requiresGradient ? Tensor.uninitialized(q.shape) { _ in } : Tensor(shape: [0], scalars: [])
            var dk = k.requiresGradient ? Tensor.uninitialized(k.shape) { _ in } : Tensor(shape: [0], scalars: [])
            var dv = v.requiresGradient ? Tensor.uninitialized(v.shape) { _ in } : Tensor(shape: [0], scalars: [])
            let dp = needQK ? workspace.buffer(.scoreGradient, count: block) : nil
            g.withPointer { gp in
                probabilities.withPointer { pp in
                    dq.withMutablePointer { dqp in
                        dk.withMutablePointer { dkp in
                            dv.withMutablePointer { dvp in
                                for pair in 0..<pairs {
                                    let (b, h) = (pair / heads, pair % heads)
                                    let p = pp + pair * block
                                    let qo = b * nq * width + h * dh, ko = b * nk * width + h * dh
                                    if v.requiresGradient {
                                        // dV = Pᵀ·dO
                                        BLAS.gemm(.transposed, .none, m: nk, n: dh, k: nq, a: p, lda: nk,
                                                  b: gp + qo, ldb: width, c: dvp + ko, ldc: width)
                                    }
                                    guard let dp, let savedV else { continue }
                                    // dP = dO·Vᵀ, then dS = P ⊙ (dP − rowsum(dP ⊙ P)).
                                    savedV.withPointer { vp in
                                        BLAS.gemm(.none, .transposed, m: nq, n: nk, k: dh, a: gp + qo, lda: width,
                                                  b: vp + ko, ldb: width, c: dp, ldc: nk)
                                    }
                                    Kernels.softmaxBackwardRows(p, dp, rows: nq, columns: nk, threads: threads)
                                    if let savedK {
                                        // dQ = scale·dS·K
                                        savedK.withPointer { kp in
                                            BLAS.gemm(.none, .none, m: nq, n: dh, k: nk, alpha: scale, a: dp, lda: nk,
                                                      b: kp + ko, ldb: width, c: dqp + qo, ldc: width)
                                        }
                                    }
                                    if let savedQ {
                                        // dK = scale·dSᵀ·Q
                                        savedQ.withPointer { qp in
                                            BLAS.gemm(.transposed, .none, m: nk, n: dh, k: nq, alpha: scale, a: dp, lda: nk,
                                                      b: qp + qo, ldb: width, c: dkp + ko, ldc: width)
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            if q.requiresGradient { self.accumulate(q, dq) }
            if k.requiresGradient { self.accumulate(k, dk) }
            if v.requiresGradient { self.accumulate(v, dv) }
        }
    }

    /// Rotary embedding on adjacent pairs, for x `[B, N, H, Dh]` (or `[B, N, H·Dh]` with `heads`):
    /// (x₂ᵢ, x₂ᵢ₊₁) → (x₂ᵢ·cosᵢ − x₂ᵢ₊₁·sinᵢ, x₂ᵢ₊₁·cosᵢ + x₂ᵢ·sinᵢ); cos and sin are `[N, Dh/2]`.
    public func rope(_ x: Variable, heads: Int, cos: Tensor, sin: Tensor) -> Variable {
        precondition(x.shape.count >= 3 && heads > 0, "rope: x of shape \(x.shape) is not [B, N, H, Dh]")
        let batch = x.shape[0], tokens = x.shape[1]
        let width = x.shape.dropFirst(2).reduce(1, *)
        precondition(width % heads == 0 && (width / heads) % 2 == 0,
                     "rope: x \(x.shape) does not split into \(heads) heads of even size")
        let half = width / heads / 2
        precondition(cos.count == tokens * half && sin.count == tokens * half,
                     "rope: cos \(cos.shape) / sin \(sin.shape) are not [\(tokens), \(half)] for x \(x.shape)")
        let threads = self.threads
        let y = Tensor.uninitialized(x.shape) { yp in
            x.value.withPointer { xp in
                cos.withPointer { cp in
                    sin.withPointer { sp in
                        Kernels.rotatePairs(xp, yp, cos: cp, sin: sp, rows: batch * tokens, tokens: tokens,
                                            heads: heads, half: half, sign: 1, threads: threads)
                    }
                }
            }
        }
        return output(y, record: needsRecord(x)) { [unowned self] g in
            // The transpose of a rotation is the rotation by −θ.
            let dx = Tensor.uninitialized(x.shape) { dp in
                g.withPointer { gp in
                    cos.withPointer { cp in
                        sin.withPointer { sp in
                            Kernels.rotatePairs(gp, dp, cos: cp, sin: sp, rows: batch * tokens, tokens: tokens,
                                                heads: heads, half: half, sign: -1, threads: threads)
                        }
                    }
                }
            }
            self.accumulate(x, dx)
        }
    }
}

extension Kernels {
    /// Rotates adjacent pairs of every head of every token row by the token's angles
    /// (`sign` −1 rotates backwards).
    static func rotatePairs(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>,
                            cos: UnsafePointer<Float>, sin: UnsafePointer<Float>, rows: Int, tokens: Int,
                            heads: Int, half: Int, sign: Float, threads: Int) {
        let width = heads * half * 2
        let xs = Unchecked(x), ys = Unchecked(y), cs = Unchecked(cos), ss = Unchecked(sin)
        parallelFor(rows, threads: threads, grain: grain(rowLength: width)) { range in
            for row in range {
                let n = row % tokens
                let c = cs.value + n * half, s = ss.value + n * half
                for h in 0..<heads {
                    let x = xs.value + row * width + h * half * 2, y = ys.value + row * width + h * half * 2
                    for i in 0..<half {
                        let a = x[2 * i], b = x[2 * i + 1], si = sign * s[i]
                        y[2 * i] = a * c[i] - b * si
                        y[2 * i + 1] = b * c[i] + a * si
                    }
                }
            }
        }
    }
}
