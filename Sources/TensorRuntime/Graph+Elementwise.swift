import SystemSupport

extension Graph {
    /// Elementwise a + b, where b's shape equals a's or is a suffix of it (broadcast over the
    /// leading dimensions).
    public func add(_ a: Variable, _ b: Variable) -> Variable {
        let inner = broadcastCount(a, b, op: "add")
        let threads = self.threads
        let y = Tensor.uninitialized(a.shape) { yp in
            a.value.withPointer { ap in
                b.value.withPointer { bp in
                    Kernels.broadcast(ap, bp, yp, count: a.value.count, inner: inner, threads: threads) { $0 + $1 }
                }
            }
        }
        let record = needsRecord(a, b)
        return output(y, record: record) { [unowned self] g in
            self.accumulate(a, g)
            if b.requiresGradient {
                self.accumulate(b, Tensor(shape: b.shape, scalars: self.columnSums(g, other: nil, inner: inner)))
            }
        }
    }

    /// Elementwise a · b with the same broadcasting rule as `add`.
    public func multiply(_ a: Variable, _ b: Variable) -> Variable {
        let inner = broadcastCount(a, b, op: "multiply")
        let threads = self.threads
        let y = Tensor.uninitialized(a.shape) { yp in
            a.value.withPointer { ap in
                b.value.withPointer { bp in
                    Kernels.broadcast(ap, bp, yp, count: a.value.count, inner: inner, threads: threads) { $0 * $1 }
                }
            }
        }
        let record = needsRecord(a, b)
        let savedA: Tensor? = record && b.requiresGradient ? a.value : nil
        let savedB: Tensor? = record && a.requiresGradient ? b.value : nil
        return output(y, record: record) { [unowned self] g in
            if let savedB {
                let da = Tensor.uninitialized(a.shape) { dp in
                    g.withPointer { gp in
                        savedB.withPointer { bp in
                            Kernels.broadcast(gp, bp, dp, count: g.count, inner: inner, threads: threads) { $0 * $1 }
                        }
                    }
                }
                self.accumulate(a, da)
            }
            if let savedA {
                self.accumulate(b, Tensor(shape: b.shape, scalars: self.columnSums(g, other: savedA, inner: inner)))
            }
        }
    }

    /// x · factor.
    public func scale(_ x: Variable, by factor: Float) -> Variable {
        let y = scaled(x.value, by: factor)
        return output(y, record: needsRecord(x)) { [unowned self] g in
            self.accumulate(x, self.scaled(g, by: factor))
        }
    }

    /// adaLN modulation: x `[B, N, D]`, shift and scale `[B, D]` → x·(1 + scale) + shift.
    public func modulate(_ x: Variable, shift: Variable, scale: Variable) -> Variable {
        let (batch, tokens, features) = batchRows(x, op: "modulate")
        precondition(shift.value.count == batch * features && scale.value.count == batch * features,
                     "modulate: x \(x.shape) needs shift and scale of \(batch)×\(features) values, got \(shift.shape) and \(scale.shape)")
        let threads = self.threads
        let y = Tensor.uninitialized(x.shape) { yp in
            x.value.withPointer { xp in
                shift.value.withPointer { sh in
                    scale.value.withPointer { sc in
                        Kernels.rowwise(rows: batch * tokens, columns: features, threads: threads) { row, range in
                            let b = row / tokens
                            let x = xp + row * features, y = yp + row * features
                            let sh = sh + b * features, sc = sc + b * features
                            for j in range { y[j] = x[j] * (1 + sc[j]) + sh[j] }
                        }
                    }
                }
            }
        }
        let record = needsRecord(x, shift, scale)
        let savedX: Tensor? = record && scale.requiresGradient ? x.value : nil
        let savedScale: Tensor? = record && x.requiresGradient ? scale.value : nil
        return output(y, record: record) { [unowned self] g in
            if let savedScale {
                let dx = Tensor.uninitialized(x.shape) { dp in
                    g.withPointer { gp in
                        savedScale.withPointer { sc in
                            Kernels.rowwise(rows: batch * tokens, columns: features, threads: threads) { row, range in
                                let b = row / tokens
                                let g = gp + row * features, d = dp + row * features, sc = sc + b * features
                                for j in range { d[j] = g[j] * (1 + sc[j]) }
                            }
                        }
                    }
                }
                self.accumulate(x, dx)
            }
            if shift.requiresGradient {
                self.accumulate(shift, Tensor(shape: shift.shape,
                                              scalars: self.perBatchColumnSums(g, other: nil, batch: batch, inner: features)))
            }
            if let savedX {
                self.accumulate(scale, Tensor(shape: scale.shape,
                                              scalars: self.perBatchColumnSums(g, other: savedX, batch: batch, inner: features)))
            }
        }
    }

    /// Gated residual: residual `[B, N, D]`, gate `[B, D]`, y `[B, N, D]` → residual + gate·y.
    public func gatedAdd(_ residual: Variable, gate: Variable, _ y: Variable) -> Variable {
        let (batch, tokens, features) = batchRows(residual, op: "gatedAdd")
        precondition(y.value.count == residual.value.count && gate.value.count == batch * features,
                     "gatedAdd: residual \(residual.shape), gate \(gate.shape), y \(y.shape) do not agree")
        let threads = self.threads
        let out = Tensor.uninitialized(residual.shape) { op in
            residual.value.withPointer { rp in
                gate.value.withPointer { gp in
                    y.value.withPointer { yp in
                        Kernels.rowwise(rows: batch * tokens, columns: features, threads: threads) { row, range in
                            let b = row / tokens
                            let r = rp + row * features, yv = yp + row * features, o = op + row * features
                            let gt = gp + b * features
                            for j in range { o[j] = r[j] + gt[j] * yv[j] }
                        }
                    }
                }
            }
        }
        let record = needsRecord(residual, gate, y)
        let savedY: Tensor? = record && gate.requiresGradient ? y.value : nil
        let savedGate: Tensor? = record && y.requiresGradient ? gate.value : nil
        return output(out, record: record) { [unowned self] g in
            self.accumulate(residual, g)
            if let savedGate {
                let dy = Tensor.uninitialized(y.shape) { dp in
                    g.withPointer { gp in
                        savedGate.withPointer { gt in
                            Kernels.rowwise(rows: batch * tokens, columns: features, threads: threads) { row, range in
                                let b = row / tokens
                                let g = gp + row * features, d = dp + row * features, gt = gt + b * features
                                for j in range { d[j] = g[j] * gt[j] }
                            }
                        }
                    }
                }
                self.accumulate(y, dy)
            }
            if let savedY {
                self.accumulate(gate, Tensor(shape: gate.shape,
                                             scalars: self.perBatchColumnSums(g, other: savedY, batch: batch, inner: features)))
            }
        }
    }

    /// GELU with the tanh approximation.
    public func gelu(_ x: Variable) -> Variable {
        pointwise(x, forward: Kernels.gelu, backward: Kernels.geluBackward)
    }

    /// SiLU: x·sigmoid(x).
    public func silu(_ x: Variable) -> Variable {
        pointwise(x, forward: Kernels.silu, backward: Kernels.siluBackward)
    }

    /// A pointwise activation: `forward(x, y, count, threads)` writes y; `backward(x, g, dx,
    /// count, threads)` writes ∂loss/∂x from the saved input and the incoming gradient.
    private func pointwise(
        _ x: Variable,
        forward: (UnsafePointer<Float>, UnsafeMutablePointer<Float>, Int, Int) -> Void,
        backward: @escaping (UnsafePointer<Float>, UnsafePointer<Float>, UnsafeMutablePointer<Float>, Int, Int) -> Void
    ) -> Variable {
        let threads = self.threads
        let y = Tensor.uninitialized(x.shape) { yp in
            x.value.withPointer { forward($0, yp, x.value.count, threads) }
        }
        let record = needsRecord(x)
        let savedX: Tensor? = record ? x.value : nil
        return output(y, record: record) { [unowned self] g in
            let dx = Tensor.uninitialized(x.shape) { dp in
                savedX!.withPointer { xp in
                    g.withPointer { backward(xp, $0, dp, g.count, threads) }
                }
            }
            self.accumulate(x, dx)
        }
    }

    // MARK: helpers

    /// The element count of b after checking that b's shape (leading 1s ignored) is a suffix of a's.
    func broadcastCount(_ a: Variable, _ b: Variable, op: String) -> Int {
        let bShape = Array(b.shape.drop(while: { $0 == 1 }))
        precondition(bShape.count <= a.shape.count && Array(a.shape.suffix(bShape.count)) == bShape,
                     "\(op): shape \(b.shape) does not broadcast against \(a.shape)")
        return b.value.count
    }

    /// (B, N, D) of a `[B, N, D]` tensor (more middle dimensions are folded into N).
    func batchRows(_ x: Variable, op: String) -> (Int, Int, Int) {
        precondition(x.shape.count >= 2, "\(op): x of shape \(x.shape) is not [B, N, D]")
        let batch = x.shape[0], features = x.shape[x.shape.count - 1]
        let tokens = x.shape.dropFirst().dropLast().reduce(1, *)
        return (batch, tokens, features)
    }

    /// t · factor.
    func scaled(_ t: Tensor, by factor: Float) -> Tensor {
        let threads = self.threads
        return Tensor.uninitialized(t.shape) { yp in
            t.withPointer { xp in
                Kernels.broadcast(xp, xp, yp, count: t.count, inner: t.count, threads: threads) { x, _ in x * factor }
            }
        }
    }

    /// Σ over rows of g (viewed as rows of `inner` values), times `other` elementwise when given.
    func columnSums(_ g: Tensor, other: Tensor?, inner: Int) -> [Float] {
        let rows = inner == 0 ? 0 : g.count / inner
        return g.withPointer { gp in
            if let other {
                return other.withPointer { Kernels.columnSums(gp, $0, rows: rows, columns: inner, threads: threads) }
            }
            return Kernels.columnSums(gp, nil, rows: rows, columns: inner, threads: threads)
        }
    }

    /// For g `[B, N, D]`: Σ over N of g (times `other` when given), a `[B, D]` result.
    func perBatchColumnSums(_ g: Tensor, other: Tensor?, batch: Int, inner: Int) -> [Float] {
        let perBatch = batch == 0 ? 0 : g.count / batch
        let rows = inner == 0 ? 0 : perBatch / inner
        var result: [Float] = []
        result.reserveCapacity(batch * inner)
        g.withPointer { gp in
            for b in 0..<batch {
                if let other {
                    other.withPointer { op in
                        result += Kernels.columnSums(gp + b * perBatch, op + b * perBatch, rows: rows, columns: inner, threads: threads)
                    }
                } else {
                    result += Kernels.columnSums(gp + b * perBatch, nil, rows: rows, columns: inner, threads: threads)
                }
            }
        }
        return result
    }
}

extension Kernels {
    /// y[i] = f(a[i], b[i mod inner]) for `count` values.
    @inline(__always)
    static func broadcast(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>,
                          count: Int, inner: Int, threads: Int, _ f: @escaping @Sendable (Float, Float) -> Float) {
        guard count > 0 else { return }
        let rows = count / inner
        let ap = Unchecked(a), bp = Unchecked(b), yp = Unchecked(y)
        parallelForChunks(rows, threads: threads, grain: grain(rowLength: inner)) { range in
            let a = ap.value, b = bp.value, y = yp.value
            for r in range {
                let base = r * inner
                for j in 0..<inner { y[base + j] = f(a[base + j], b[j]) }
            }
        }
    }

    /// Calls `body(row, columns)` for each of `rows` rows, rows split over threads.
    @inline(__always)
    static func rowwise(rows: Int, columns: Int, threads: Int, _ body: (Int, Range<Int>) -> Void) {
        parallelForChunks(rows, threads: threads, grain: grain(rowLength: columns)) { range in
            for row in range { body(row, 0..<columns) }
        }
    }

    /// s[j] = Σᵢ g[i, j]·(o[i, j] or 1) over `rows` rows of `columns` values. Threads take
    /// disjoint bands of rows into their own partial sums, added in a fixed order.
    static func columnSums(_ g: UnsafePointer<Float>, _ o: UnsafePointer<Float>?, rows: Int, columns: Int, threads: Int) -> [Float] {
        let chunks = max(1, min(threads, rows / max(1, grain(rowLength: columns))))
        var partial = [Float](repeating: 0, count: chunks * columns)
        let gp = Unchecked(g), op = Unchecked(o)
        partial.withUnsafeMutableBufferPointer { buffer in
            let pp = Unchecked(buffer.baseAddress!)
            parallelForChunks(chunks, threads: threads) { chunkRange in
                for chunk in chunkRange {
                    let s = pp.value + chunk * columns
                    for r in (rows * chunk / chunks)..<(rows * (chunk + 1) / chunks) {
                        let g = gp.value + r * columns
                        if let o = op.value {
                            let o = o + r * columns
                            for j in 0..<columns { s[j] += g[j] * o[j] }
                        } else {
                            for j in 0..<columns { s[j] += g[j] }
                        }
                    }
                }
            }
        }
        if chunks == 1 { return partial }
        var total = Array(partial[0..<columns])
        for chunk in 1..<chunks { for j in 0..<columns { total[j] += partial[chunk * columns + j] } }
        return total
    }
}
