import BLAS
import SystemSupport

extension Graph {
    /// Multi-head scaled-dot-product attention without mask: q `[B, Nq, H·Dh]`, k and v
    /// `[B, Nk, H·Dh]` (a `[B, N, H, Dh]` shape is accepted too) → `[B, Nq, H·Dh]`, scale 1/√Dh,
    /// softmax computed stably.
    ///
    /// Each (batch, head) pair is two strided sgemm calls on the stored layout (row stride H·Dh)
    /// with the softmax between them; the pairs are spread over the graph's threads, each pair
    /// running single-threaded sgemm on its own score matrix (no synchronisation inside a pair).
    /// Without recording, the softmax is left unnormalised and each output row is divided by its
    /// sum after the second product (one pass over the scores fewer). When recording, the softmax
    /// P of every pair is kept (B·H·Nq·Nk values) for the backward pass.
    public func attention(query q: Variable, key k: Variable, value v: Variable, heads: Int) -> Variable {
        let shape = AttentionShape(query: q.shape, key: k.shape, value: v.shape, heads: heads)
        let record = needsRecord(q, k, v)
        let workers = max(1, min(threads, shape.pairs))
        // P for every (batch, head) pair when recording; one reusable score matrix (and row-sum
        // vector) per worker otherwise.
        let probabilities = ScoreStore(pairs: record ? shape.pairs : 0, count: shape.block)
        let y = attentionForward(q.value, k.value, v.value, shape, workers: workers, record: record, probabilities: probabilities)
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
            let dpAll = needQK ? Unchecked(workspace.buffer(.scoreGradient, count: workers * shape.block)) : nil
            Self.attentionBackward(g, savedQ: savedQ, savedK: savedK, savedV: savedV, dq: &dq, dk: &dk, dv: &dv,
                                   valueGradient: v.requiresGradient, shape, workers: workers,
                                   probabilities: probabilities, scoreGradients: dpAll)
            if q.requiresGradient { self.accumulate(q, dq) }
            if k.requiresGradient { self.accumulate(k, dk) }
            if v.requiresGradient { self.accumulate(v, dv) }
        }
    }

    /// The forward pass of `attention`: per (batch, head) pair S = scale·Q·Kᵀ, exponentials of S
    /// (normalised into P when `record`, kept in `probabilities`), then P·V — or, without
    /// recording, the unnormalised product with each output row divided by its sum afterwards.
    private func attentionForward(_ q: Tensor, _ k: Tensor, _ v: Tensor, _ shape: AttentionShape, workers: Int,
                                  record: Bool, probabilities: ScoreStore) -> Tensor {
        let (heads, nq, nk, width, dh, block, scale) = (shape.heads, shape.nq, shape.nk, shape.width, shape.dh, shape.block, shape.scale)
        let scratch = record ? nil : Unchecked(workspace.buffer(.scores, count: workers * block))
        let sums = Unchecked(workspace.buffer(.rowScale, count: workers * max(1, nq)))
        return Tensor.uninitialized(q.shape) { yp in
            q.withPointer { qp in
                k.withPointer { kp in
                    v.withPointer { vp in
                        let (qp, kp, vp, yp, pp) = (Unchecked(qp), Unchecked(kp), Unchecked(vp), Unchecked(yp), probabilities)
                        Kernels.eachPair(shape.pairs, workers: workers) { worker, pair in
                            let (b, h) = (pair / heads, pair % heads)
                            let s = scratch.map { $0.value + worker * block } ?? pp[pair]
                            let qo = b * nq * width + h * dh, ko = b * nk * width + h * dh
                            BLAS.gemm(.none, .transposed, m: nq, n: nk, k: dh, alpha: scale,
                                      a: qp.value + qo, lda: width, b: kp.value + ko, ldb: width, c: s, ldc: nk)
                            let inverse = sums.value + worker * nq
                            Kernels.expRows(s, rows: nq, columns: nk, inverseSums: inverse, normalize: record)
                            BLAS.gemm(.none, .none, m: nq, n: dh, k: nk, a: s, lda: nk, b: vp.value + ko, ldb: width,
                                      c: yp.value + qo, ldc: width)
                            if !record {
                                Kernels.scaleRows(yp.value + qo, rows: nq, columns: dh, stride: width, by: inverse)
                            }
                        }
                    }
                }
            }
        }
    }

    /// The backward pass of `attention` from the output gradient `g` and the kept P: dV = Pᵀ·dO
    /// (when `valueGradient`), and with `scoreGradients` (one nq×nk block per worker) dS = P ⊙
    /// (dO·Vᵀ − rowsum(·)), dQ = scale·dS·K when K was saved, dK = scale·dSᵀ·Q when Q was saved.
    /// `dq`, `dk`, `dv` are written, not accumulated (empty when not wanted).
    private static func attentionBackward(_ g: Tensor, savedQ: Tensor?, savedK: Tensor?, savedV: Tensor?,
                                          dq: inout Tensor, dk: inout Tensor, dv: inout Tensor, valueGradient: Bool,
                                          _ shape: AttentionShape, workers: Int, probabilities: ScoreStore,
                                          scoreGradients dpAll: Unchecked<UnsafeMutablePointer<Float>>?) {
        let (heads, nq, nk, width, dh, block, scale) = (shape.heads, shape.nq, shape.nk, shape.width, shape.dh, shape.block, shape.scale)
        let empty = Tensor(shape: [0], scalars: [])
        g.withPointer { gp in
            (savedV ?? empty).withPointer { vp in
                (savedK ?? empty).withPointer { kp in
                    (savedQ ?? empty).withPointer { qp in
                        dq.withMutablePointer { dqp in
                            dk.withMutablePointer { dkp in
                                dv.withMutablePointer { dvp in
                                    let (gp, pp, vp, kp, qp) = (Unchecked(gp), probabilities, Unchecked(vp), Unchecked(kp), Unchecked(qp))
                                    let (dqp, dkp, dvp) = (Unchecked(dqp), Unchecked(dkp), Unchecked(dvp))
                                    let (hasK, hasQ) = (savedK != nil, savedQ != nil)
                                    Kernels.eachPair(shape.pairs, workers: workers) { worker, pair in
                                        let (b, h) = (pair / heads, pair % heads)
                                        let p = UnsafePointer(pp[pair])
                                        let qo = b * nq * width + h * dh, ko = b * nk * width + h * dh
                                        if valueGradient {
                                            // dV = Pᵀ·dO
                                            BLAS.gemm(.transposed, .none, m: nk, n: dh, k: nq, a: p, lda: nk,
                                                      b: gp.value + qo, ldb: width, c: dvp.value + ko, ldc: width)
                                        }
                                        guard let dpAll else { return }
                                        let dp = dpAll.value + worker * block
                                        // dP = dO·Vᵀ, then dS = P ⊙ (dP − rowsum(dP ⊙ P)).
                                        BLAS.gemm(.none, .transposed, m: nq, n: nk, k: dh, a: gp.value + qo, lda: width,
                                                  b: vp.value + ko, ldb: width, c: dp, ldc: nk)
                                        Kernels.softmaxBackwardRows(p, dp, rows: nq, columns: nk)
                                        if hasK {
                                            // dQ = scale·dS·K
                                            BLAS.gemm(.none, .none, m: nq, n: dh, k: nk, alpha: scale, a: dp, lda: nk,
                                                      b: kp.value + ko, ldb: width, c: dqp.value + qo, ldc: width)
                                        }
                                        if hasQ {
                                            // dK = scale·dSᵀ·Q
                                            BLAS.gemm(.transposed, .none, m: nk, n: dh, k: nq, alpha: scale, a: dp, lda: nk,
                                                      b: qp.value + qo, ldb: width, c: dkp.value + ko, ldc: width)
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
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
        parallelForChunks(rows, threads: threads, grain: grain(rowLength: width)) { range in
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

/// The sizes of one attention call, checked: q `[B, Nq, H·Dh]`, k and v `[B, Nk, H·Dh]` (or
/// `[B, N, H, Dh]`), H heads of Dh values, scale 1/√Dh.
struct AttentionShape {
    let batch: Int, nq: Int, nk: Int
    /// H·Dh, the row stride of q, k, v and the output.
    let width: Int
    let heads: Int
    /// Dh.
    let dh: Int
    let scale: Float
    /// B·H (batch, head) pairs.
    var pairs: Int { batch * heads }
    /// Nq·Nk scores per pair.
    var block: Int { nq * nk }

    /// The sizes of q, k and v; traps (naming the shapes) when they do not agree for `heads` heads.
    init(query q: [Int], key k: [Int], value v: [Int], heads: Int) {
        precondition(q.count >= 3 && k.count >= 3 && v.count >= 3 && heads > 0,
                     "attention: q \(q), k \(k), v \(v) are not [B, N, H·Dh] (heads \(heads))")
        let batch = q[0], nq = q[1], nk = k[1]
        let width = q.dropFirst(2).reduce(1, *)
        precondition(k[0] == batch && v[0] == batch && v[1] == nk
                     && k.dropFirst(2).reduce(1, *) == width && v.dropFirst(2).reduce(1, *) == width
                     && width % heads == 0,
                     "attention: q \(q), k \(k), v \(v) do not agree for \(heads) heads")
        if q.count == 4 {
            precondition(q[2] == heads, "attention: q \(q) has \(q[2]) heads, not \(heads)")
        }
        self.batch = batch
        self.nq = nq
        self.nk = nk
        self.width = width
        self.heads = heads
        dh = width / heads
        scale = 1 / Float(dh).squareRoot()
    }
}

/// The softmax matrices P an attention call keeps for its backward pass, one heap buffer per
/// (batch, head) pair. Separate buffers of one pair's size (1178² floats = 5.5 MB at SD3.5
/// sizes) stay below the allocator's mapping threshold, so the memory freed after one backward
/// pass is reused by the next forward instead of being mapped and zeroed afresh (one buffer for
/// all pairs would be hundreds of MB).
final class ScoreStore: @unchecked Sendable {
    private let buffers: [UnsafeMutablePointer<Float>]

    /// `pairs` uninitialised buffers of `count` values.
    init(pairs: Int, count: Int) {
        buffers = (0..<pairs).map { _ in UnsafeMutablePointer<Float>.allocate(capacity: max(1, count)) }
    }

    /// Pair `i`'s buffer (valid while the store lives; pairs never share memory).
    subscript(i: Int) -> UnsafeMutablePointer<Float> { buffers[i] }

    deinit { for b in buffers { b.deallocate() } }
}

extension Kernels {
    /// Runs `body(worker, pair)` for every pair in `0..<pairs`, worker `w` taking pairs w, w +
    /// workers, … on its own thread. With more than one worker OpenBLAS is limited to one thread
    /// per call meanwhile, so each worker's sgemm calls run on that worker alone. Workers must
    /// write disjoint memory (their own scratch, their own heads' columns).
    static func eachPair(_ pairs: Int, workers: Int, _ body: (Int, Int) -> Void) {
        guard workers > 1 else {
            for pair in 0..<pairs { body(0, pair) }
            return
        }
        BLAS.singleThreaded { parallelForStatic(pairs, threads: workers, body) }
    }

    /// For each of `rows` rows of `columns` scores: e = exp(s − max(s)) in place and
    /// `inverseSums[row]` = 1/Σe; with `normalize` the row is also divided by its sum (a softmax).
    /// Each row is read from memory once and then stays in L1 for the later passes. Rows of at
    /// least 16 values are handled in whole vectors only: a row's last, partial vector is taken
    /// as the 16 values ending the row (overlapping the previous one), its overlap masked out of
    /// the sums.
    static func expRows(_ s: UnsafeMutablePointer<Float>, rows: Int, columns n: Int,
                        inverseSums: UnsafeMutablePointer<Float>, normalize: Bool) {
        let w = Vec.scalarCount
        guard n >= w else {
            expRowsScalar(s, rows: rows, columns: n, inverseSums: inverseSums, normalize: normalize)
            return
        }
        let whole = n / w * w, last = n - w
        // Lanes of the last vector not already covered by the whole vectors.
        let tailMask = laneIndices .>= SIMD16<Int32>(repeating: Int32(whole - last))
        for r in 0..<rows {
            let row = s + r * n
            var m = load(row + last)
            var i = 0
            while i < whole { m = maximum(m, load(row + i)); i += w }
            let mv = Vec(repeating: horizontalMax(m))
            // The last vector's exponentials, from the original scores (computed before the
            // loop below overwrites the overlapping part with the same values).
            var tail = exp(load(row + last) - mv)
            var acc = Vec(repeating: 0)
            i = 0
            while i < whole {
                let e = exp(load(row + i) - mv)
                acc += e
                store(e, row + i)
                i += w
            }
            store(tail, row + last)
            tail.replace(with: 0, where: .!tailMask)
            acc += tail
            let inv = 1 / horizontalSum(acc)
            inverseSums[r] = inv
            guard normalize else { continue }
            let iv = Vec(repeating: inv)
            i = 0
            while i < whole { store(load(row + i) * iv, row + i); i += w }
            while i < n { row[i] *= inv; i += 1 }
        }
    }

    /// `expRows` for rows shorter than one vector.
    static func expRowsScalar(_ s: UnsafeMutablePointer<Float>, rows: Int, columns n: Int,
                              inverseSums: UnsafeMutablePointer<Float>, normalize: Bool) {
        for r in 0..<rows {
            let row = s + r * n
            var mx = -Float.infinity
            for i in 0..<n { mx = Swift.max(mx, row[i]) }
            var total: Float = 0
            for i in 0..<n {
                let e = exp(Vec(repeating: row[i] - mx))[0]
                row[i] = e
                total += e
            }
            let inv = 1 / total
            inverseSums[r] = inv
            if normalize { for i in 0..<n { row[i] *= inv } }
        }
    }

    /// Multiplies row r of a `rows`×`columns` block (row stride `stride`) by factors[r].
    static func scaleRows(_ y: UnsafeMutablePointer<Float>, rows: Int, columns: Int, stride: Int,
                          by factors: UnsafePointer<Float>) {
        for r in 0..<rows {
            let row = y + r * stride, f = factors[r]
            let fv = Vec(repeating: f)
            var i = 0
            while i + Vec.scalarCount <= columns { store(load(row + i) * fv, row + i); i += Vec.scalarCount }
            while i < columns { row[i] *= f; i += 1 }
        }
    }

    /// Turns dP into dS = P ⊙ (dP − rowsum(dP ⊙ P)) in place, row by row (softmax backward), on
    /// the calling thread.
    static func softmaxBackwardRows(_ p: UnsafePointer<Float>, _ d: UnsafeMutablePointer<Float>, rows: Int, columns n: Int) {
        let w = Vec.scalarCount
        for r in 0..<rows {
            let pr = p + r * n, dr = d + r * n
            var acc = Vec(repeating: 0)
            var i = 0
            while i + w <= n { acc = fma(load(pr + i), load(dr + i), acc); i += w }
            var dot = horizontalSum(acc)
            while i < n { dot += pr[i] * dr[i]; i += 1 }
            let dv = Vec(repeating: dot)
            i = 0
            while i + w <= n { store(load(pr + i) * (load(dr + i) - dv), dr + i); i += w }
            while i < n { dr[i] = pr[i] * (dr[i] - dot); i += 1 }
        }
    }
}
