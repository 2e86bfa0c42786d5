import BLAS
import SystemSupport

extension Graph {
    /// y = x·Wᵀ + bias + Σ branch.scale·(x·Aᵀ)·Bᵀ for x `[..., in]`, W `[out, in]` (frozen, any
    /// stored element type), bias `[out]` (frozen). ΔW is never formed. Gradients flow to x, A, B.
    public func linear(_ x: Variable, weight: WeightMatrix, bias: Tensor?, lora: [LoRABranch] = []) -> Variable {
        Self.checkLinearShapes(x.shape, weight: weight, bias: bias, lora: lora)
        let m = x.shape.dropLast().reduce(1, *)
        let outShape = Array(x.shape.dropLast()) + [weight.rows]
        let needX = needsRecord(x)
        let needA = lora.map { recordsGradients && $0.down.requiresGradient }
        let needB = lora.map { recordsGradients && $0.up.requiresGradient }
        let record = needX || needA.contains(true) || needB.contains(true)
        let threads = self.threads, workspace = self.workspace

        let xValue = x.value
        let (y, downs) = Self.linearForward(xValue, m: m, outShape: outShape, weight: weight, bias: bias, lora: lora,
                                            workspace: workspace, threads: threads)
        guard record else { return output(y, record: false) { _ in } }

        // Save only what the backward pass reads.
        let savedX: Tensor? = needA.contains(true) ? xValue : nil
        let branches = lora.enumerated().map { i, branch in
            SavedBranch(down: branch.down, up: branch.up, scale: branch.scale,
                        downValue: branch.down.value, upValue: branch.up.value,
                        xDown: needB[i] ? downs[i] : nil, needA: needA[i], needB: needB[i])
        }
        return output(y, record: true) { [unowned self] gY in
            self.linearBackward(gY, x: x, m: m, weight: weight, needX: needX, savedX: savedX, branches: branches,
                                workspace: workspace, threads: threads)
        }
    }

    /// Traps, naming the shapes, unless x ends in W's input size, the bias has one value per
    /// output and every branch's A `[r, in]` and B `[out, r]` fit W.
    private static func checkLinearShapes(_ xShape: [Int], weight: WeightMatrix, bias: Tensor?, lora: [LoRABranch]) {
        let inF = weight.columns, outF = weight.rows
        precondition(xShape.last == inF,
                     "linear: input of shape \(xShape) does not end in \(inF) (weight \(outF)×\(inF))")
        if let bias {
            precondition(bias.count == outF, "linear: bias of shape \(bias.shape) for \(outF) outputs")
        }
        for branch in lora {
            let a = branch.down.shape, b = branch.up.shape
            precondition(a.count == 2 && a[1] == inF && b.count == 2 && b[0] == outF && b[1] == a[0],
                         "linear: LoRA down \(a) / up \(b) do not fit weight \(outF)×\(inF)")
        }
    }

    /// The forward product for `m` rows of x: bias rows, + x·Wᵀ, + each branch's s·(x·Aᵀ)·Bᵀ.
    /// Returns y and the low-rank intermediates x·Aᵀ (kept for dB).
    private static func linearForward(_ xValue: Tensor, m: Int, outShape: [Int], weight: WeightMatrix, bias: Tensor?,
                                      lora: [LoRABranch], workspace: Workspace, threads: Int) -> (y: Tensor, downs: [Tensor]) {
        let inF = weight.columns, outF = weight.rows
        var downs: [Tensor] = []
        let y = Tensor.uninitialized(outShape) { yp in
            xValue.withPointer { xp in
                if let bias {
                    bias.withPointer { Kernels.fillRows(yp, rows: m, with: $0, columns: outF, threads: threads) }
                }
                WeightProduct.forward(weight, x: xp, m: m, y: yp, beta: bias == nil ? 0 : 1,
                                      workspace: workspace, threads: threads)
                for branch in lora {
                    let rank = branch.down.shape[0]
                    let t = Tensor.uninitialized([m, rank]) { tp in
                        branch.down.value.withPointer { ap in
                            BLAS.gemm(.none, .transposed, m: m, n: rank, k: inF, a: xp, b: ap, c: tp)
                        }
                    }
                    t.withPointer { tp in
                        branch.up.value.withPointer { bp in
                            BLAS.gemm(.none, .transposed, m: m, n: outF, k: rank, alpha: branch.scale,
                                      a: tp, b: bp, beta: 1, c: yp)
                        }
                    }
                    downs.append(t)
                }
            }
        }
        return (y, downs)
    }

    /// The backward pass from dY: dX = dY·W (+ Σ u·A) when x needs it, and per branch dB =
    /// s·dYᵀ·(x·Aᵀ) and dA = uᵀ·x with u = s·dY·B; every gradient is accumulated here.
    private func linearBackward(_ gY: Tensor, x: Variable, m: Int, weight: WeightMatrix, needX: Bool, savedX: Tensor?,
                                branches: [SavedBranch], workspace: Workspace, threads: Int) {
        let inF = weight.columns, outF = weight.rows
        gY.withPointer { gp in
            var dX: Tensor? = nil
            if needX {
                dX = Tensor.uninitialized(x.shape) { dp in
                    WeightProduct.backward(weight, gY: gp, m: m, dX: dp, workspace: workspace, threads: threads)
                }
            }
            for branch in branches {
                let rank = branch.downValue.shape[0]
                if branch.needB, let t = branch.xDown {
                    // dB = s·dYᵀ·(x·Aᵀ)
                    let dB = Tensor.uninitialized([outF, rank]) { dbp in
                        t.withPointer { tp in
                            BLAS.gemm(.transposed, .none, m: outF, n: rank, k: m, alpha: branch.scale,
                                      a: gp, b: tp, c: dbp)
                        }
                    }
                    self.accumulate(branch.up, dB)
                }
                guard branch.needA || needX else { continue }
                // u = s·dY·B, then dA = uᵀ·x and dX += u·A.
                let u = Tensor.uninitialized([m, rank]) { up in
                    branch.upValue.withPointer { bp in
                        BLAS.gemm(.none, .none, m: m, n: rank, k: outF, alpha: branch.scale, a: gp, b: bp, c: up)
                    }
                }
                u.withPointer { up in
                    if branch.needA, let savedX {
                        let dA = Tensor.uninitialized([rank, inF]) { dap in
                            savedX.withPointer { xp in
                                BLAS.gemm(.transposed, .none, m: rank, n: inF, k: m, a: up, b: xp, c: dap)
                            }
                        }
                        self.accumulate(branch.down, dA)
                    }
                    if needX {
                        branch.downValue.withPointer { ap in
                            dX!.withMutablePointer { dp in
                                BLAS.gemm(.none, .none, m: m, n: inF, k: rank, a: up, b: ap, beta: 1, c: dp)
                            }
                        }
                    }
                }
            }
            if let dX { self.accumulate(x, dX) }
        }
    }
}

/// What a LoRA branch's backward pass needs: its variables, their values at forward time and,
/// when B needs a gradient, x·Aᵀ.
private struct SavedBranch {
    let down: Variable
    let up: Variable
    let scale: Float
    let downValue: Tensor
    let upValue: Tensor
    let xDown: Tensor?
    let needA: Bool
    let needB: Bool
}

/// Products with a frozen `WeightMatrix`. Float32 weights at a 4-byte-aligned address are used in
/// place; others (half precision, Q8_0 and other encoded blocks) are widened panel by panel (rows
/// of W) into the workspace and multiplied from there, forward and backward alike, so no full
/// Float32 copy of a stored weight ever exists.
enum WeightProduct {
    /// Values per widened panel (16 MB of Float32). Each panel is one sgemm call, which packs
    /// all of x again, so fewer, larger panels cost less: a 1536×6144 weight takes 3 panels.
    static let panelValues = 1 << 22

    /// Whether `w` can be handed to sgemm as it is stored.
    static func usableInPlace(_ w: WeightMatrix) -> Bool {
        w.element == .float32 && Int(bitPattern: w.baseAddress) % MemoryLayout<Float>.alignment == 0
    }

    /// Rows of W per panel.
    static func panelRows(_ w: WeightMatrix) -> Int {
        max(1, min(w.rows, panelValues / max(1, w.columns)))
    }

    /// Widens rows `rows` of `w` into `panel` (row-major, `w.columns` per row), in parallel.
    static func widen(_ w: WeightMatrix, rows: Range<Int>, into panel: UnsafeMutablePointer<Float>, threads: Int) {
        let columns = w.columns, rowBytes = w.element.rowByteCount(columns), element = w.element
        let base = Unchecked(w.baseAddress), target = Unchecked(panel), first = rows.lowerBound
        parallelForChunks(rows.count, threads: threads, grain: Kernels.grain(rowLength: columns)) { range in
            Kernels.widen(element, base.value + (first + range.lowerBound) * rowBytes, target.value + range.lowerBound * columns,
                          count: range.count * columns)
        }
    }

    /// y (m×rows, row stride rows) = x (m×columns)·Wᵀ + beta·y.
    static func forward(_ w: WeightMatrix, x: UnsafePointer<Float>, m: Int, y: UnsafeMutablePointer<Float>,
                        beta: Float, workspace: Workspace, threads: Int) {
        let (outF, inF) = (w.rows, w.columns)
        guard m > 0, outF > 0 else { return }
        if usableInPlace(w) {
            BLAS.gemm(.none, .transposed, m: m, n: outF, k: inF, a: x,
                      b: w.baseAddress.assumingMemoryBound(to: Float.self), beta: beta, c: y)
            return
        }
        let step = panelRows(w)
        let panel = workspace.buffer(.weightPanel, count: step * inF)
        for start in stride(from: 0, to: outF, by: step) {
            let rows = start..<min(outF, start + step)
            widen(w, rows: rows, into: panel, threads: threads)
            BLAS.gemm(.none, .transposed, m: m, n: rows.count, k: inF, a: x, lda: inF, b: panel, ldb: inF,
                      beta: beta, c: y + start, ldc: outF)
        }
    }

    /// dX (m×columns) = dY (m×rows)·W, overwriting dX.
    static func backward(_ w: WeightMatrix, gY: UnsafePointer<Float>, m: Int, dX: UnsafeMutablePointer<Float>,
                         workspace: Workspace, threads: Int) {
        let (outF, inF) = (w.rows, w.columns)
        guard m > 0, inF > 0 else { return }
        if outF == 0 { dX.update(repeating: 0, count: m * inF); return }
        if usableInPlace(w) {
            BLAS.gemm(.none, .none, m: m, n: inF, k: outF, a: gY,
                      b: w.baseAddress.assumingMemoryBound(to: Float.self), c: dX)
            return
        }
        let step = panelRows(w)
        let panel = workspace.buffer(.weightPanel, count: step * inF)
        for start in stride(from: 0, to: outF, by: step) {
            let rows = start..<min(outF, start + step)
            widen(w, rows: rows, into: panel, threads: threads)
            BLAS.gemm(.none, .none, m: m, n: inF, k: rows.count, a: gY + start, lda: outF, b: panel, ldb: inF,
                      beta: start == 0 ? 0 : 1, c: dX, ldc: inF)
        }
    }
}

extension Kernels {
    /// Copies `row` (`columns` values) into each of the `rows` rows of `target`.
    static func fillRows(_ target: UnsafeMutablePointer<Float>, rows: Int, with row: UnsafePointer<Float>,
                         columns: Int, threads: Int) {
        let t = Unchecked(target), r = Unchecked(row)
        parallelForChunks(rows, threads: threads, grain: grain(rowLength: columns)) { range in
            for i in range { (t.value + i * columns).update(from: r.value, count: columns) }
        }
    }
}
