import BLAS

/// One factor of a Kronecker delta: a full matrix, or the product of two low-rank ones.
public enum KronFactor: Sendable, Hashable {
    /// A full matrix (`lokr_w1`, `lokr_w2`).
    case full(Matrix)
    /// `a · b` (`lokr_w1_a · lokr_w1_b`), a [rows, r] and b [r, cols].
    case product(a: Matrix, b: Matrix)

    /// The matrix this factor stands for, in Float32.
    public var dense: Matrix {
        switch self {
        case .full(let m): return Matrix(shape: [m.rows, m.columns], values: m.values)
        case let .product(a, b):
            return Matrix(shape: [a.rows, b.columns], values: BLAS.matmul(a.values, b.values, m: a.rows, k: a.columns, n: b.columns))
        }
    }

    /// The inner rank of a product, nil for a full factor.
    public var rank: Int? {
        if case let .product(a, _) = self { return a.columns }
        return nil
    }

    /// Rows and columns of the matrix it stands for.
    public var size: (rows: Int, columns: Int) {
        switch self {
        case .full(let m): return (m.rows, m.columns)
        case let .product(a, b): return (a.rows, b.columns)
        }
    }
}

/// Which tensor of a module a delta lands on.
public enum DeltaTarget: String, Sendable, Hashable {
    /// `<module>.weight`.
    case weight
    /// `<module>.bias` (ComfyUI `.diff_b`).
    case bias
    /// `<module>.weight` when the base has it, else the tensor named `<module>` itself (a norm
    /// `scale`, as ComfyUI keys non-`.weight` tensors by their full name).
    case weightOrWhole
}

/// A per-weight delta that is not a plain B·A: LyCORIS LoKr and LoHa, ComfyUI full deltas and
/// BFL Control's replaced norm scales. Rows of ΔW are computed on demand (`rows(_:)`) so a merge
/// stays streamed.
public struct WeightDelta: Sendable, Hashable {
    /// The kinds of delta.
    public enum Kind: Sendable, Hashable {
        /// ΔW = scale · kron(w1, w2) (LyCORIS LoKr).
        case kronecker(w1: KronFactor, w2: KronFactor)
        /// ΔW = scale · (w1a·w1b) ⊙ (w2a·w2b) (LyCORIS LoHa).
        case hadamard(w1a: Matrix, w1b: Matrix, w2a: Matrix, w2b: Matrix)
        /// ΔW given in full (ComfyUI `.diff` / `.diff_b`): added as is.
        case full(Matrix)
        /// The tensor's new value (BFL Control norm scales): replaces the base's.
        case replacement(Matrix)
    }

    /// The module path in the adapter's layout (no key prefix).
    public var name: String
    /// Which of the module's tensors it changes.
    public var target: DeltaTarget
    /// What the delta is.
    public var kind: Kind
    /// The multiplier the writer's rule gives (α/r for LoKr with a low-rank factor and LoHa, else 1).
    public var scale: Float
    /// The stored α (for reporting), nil when none was stored.
    public var alpha: Float?
    /// The tensor keys it was read from (for error messages).
    public var keys: [String]
    /// Dense Kronecker factors, computed once (small).
    let denseW1: Matrix?
    let denseW2: Matrix?

    /// Creates a delta; `scale` is the writer's α-rule multiplier.
    public init(name: String, target: DeltaTarget, kind: Kind, scale: Float, alpha: Float? = nil, keys: [String] = []) {
        self.name = name
        self.target = target
        self.kind = kind
        self.scale = scale
        self.alpha = alpha
        self.keys = keys
        if case let .kronecker(w1, w2) = kind {
            denseW1 = w1.dense
            denseW2 = w2.dense
        } else {
            denseW1 = nil
            denseW2 = nil
        }
    }

    /// A short name of the kind: `lokr`, `loha`, `full`, `replace`.
    public var kindName: String {
        switch kind {
        case .kronecker: return "lokr"
        case .hadamard: return "loha"
        case .full: return "full"
        case .replacement: return "replace"
        }
    }

    /// Output rows of ΔW (values for a vector target).
    public var outFeatures: Int {
        switch kind {
        case let .kronecker(w1, w2): return w1.size.rows * w2.size.rows
        case let .hadamard(w1a, _, _, _): return w1a.rows
        case .full(let m), .replacement(let m): return m.shape.count <= 1 ? m.values.count : m.rows
        }
    }

    /// Input features of ΔW (1 for a vector target).
    public var inFeatures: Int {
        switch kind {
        case let .kronecker(w1, w2): return w1.size.columns * w2.size.columns
        case let .hadamard(_, w1b, _, _): return w1b.columns
        case .full(let m), .replacement(let m): return m.shape.count <= 1 ? 1 : m.columns
        }
    }

    /// True when the delta is a vector (bias, norm scale) rather than a matrix.
    public var isVector: Bool {
        switch kind {
        case .full(let m), .replacement(let m): return m.shape.count <= 1
        default: return false
        }
    }

    /// True when the delta replaces the base tensor instead of adding to it.
    public var replaces: Bool {
        if case .replacement = kind { return true }
        return false
    }

    /// Number of stored values.
    public var parameterCount: Int {
        switch kind {
        case let .kronecker(w1, w2):
            func count(_ f: KronFactor) -> Int {
                switch f {
                case .full(let m): return m.values.count
                case let .product(a, b): return a.values.count + b.values.count
                }
            }
            return count(w1) + count(w2)
        case let .hadamard(a, b, c, d): return a.values.count + b.values.count + c.values.count + d.values.count
        case .full(let m), .replacement(let m): return m.values.count
        }
    }

    /// Rows `range` of scale·ΔW (without any user multiplier), row-major, `inFeatures` per row.
    public func rows(_ range: Range<Int>) -> [Float] {
        let n = inFeatures
        switch kind {
        case .kronecker:
            let w1 = denseW1!, w2 = denseW2!
            let c = w2.rows, d = w2.columns, b = w1.columns
            var out = [Float](repeating: 0, count: range.count * n)
            for (k, i) in range.enumerated() {
                let i1 = i / c, i2 = i % c
                for j1 in 0..<b {
                    let v = w1.values[i1 * b + j1]
                    let base = k * n + j1 * d
                    for j2 in 0..<d { out[base + j2] = v * w2.values[i2 * d + j2] * scale }
                }
            }
            return out
        case let .hadamard(w1a, w1b, w2a, w2b):
            let p1 = BLAS.matmul(Array(w1a.values[(range.lowerBound * w1a.columns)..<(range.upperBound * w1a.columns)]), w1b.values,
                                 m: range.count, k: w1a.columns, n: n)
            let p2 = BLAS.matmul(Array(w2a.values[(range.lowerBound * w2a.columns)..<(range.upperBound * w2a.columns)]), w2b.values,
                                 m: range.count, k: w2a.columns, n: n)
            var out = p1
            for i in out.indices { out[i] = p1[i] * p2[i] * scale }
            return out
        case .full(let m), .replacement(let m):
            let slice = Array(m.values[(range.lowerBound * n)..<(range.upperBound * n)])
            return scale == 1 ? slice : slice.map { $0 * scale }
        }
    }

    /// Adds `factor` times rows `range` of scale·ΔW to `output` (`range.count × inFeatures`
    /// values), or, for a replacement, writes the rows there. A Kronecker row is formed in place
    /// as scaled copies of a row of w2 (no ΔW buffer); the others go through `rows(_:)`.
    public func accumulate(rows range: Range<Int>, factor: Float, into output: UnsafeMutableBufferPointer<Float>) {
        let n = inFeatures
        precondition(output.count == range.count * n, "accumulate: output size does not match the rows")
        guard let out = output.baseAddress else { return }
        if case .kronecker = kind, let w1 = denseW1, let w2 = denseW2 {
            let c = w2.rows, d = w2.columns, b = w1.columns
            precondition(range.upperBound <= w1.rows * c, "accumulate: rows outside ΔW")
            w1.values.withUnsafeBufferPointer { w1v in
                w2.values.withUnsafeBufferPointer { w2v in
                    for (k, i) in range.enumerated() {
                        let source = w2v.baseAddress! + (i % c) * d
                        for j1 in 0..<b {
                            let coefficient = factor * (w1v[(i / c) * b + j1] * scale)
                            let target = out + k * n + j1 * d
                            for j2 in 0..<d { target[j2] += coefficient * source[j2] }
                        }
                    }
                }
            }
            return
        }
        let delta = rows(range)
        delta.withUnsafeBufferPointer { d in
            if replaces {
                for i in 0..<d.count { out[i] = d[i] }
            } else {
                for i in 0..<d.count { out[i] += factor * d[i] }
            }
        }
    }

    /// The whole ΔW as an [out, in] matrix.
    public func dense() -> Matrix {
        Matrix(shape: isVector ? [outFeatures] : [outFeatures, inFeatures], values: rows(0..<outFeatures))
    }

    /// Every factor with its key, for NaN/Inf checks.
    var factors: [(key: String, matrix: Matrix)] {
        var out: [Matrix] = []
        switch kind {
        case let .kronecker(w1, w2):
            for f in [w1, w2] {
                switch f {
                case .full(let m): out.append(m)
                case let .product(a, b): out += [a, b]
                }
            }
        case let .hadamard(a, b, c, d): out = [a, b, c, d]
        case .full(let m), .replacement(let m): out = [m]
        }
        return out.enumerated().map { (i, m) in (i < keys.count ? keys[i] : name, m) }
    }
}

/// A DoRA magnitude: W′ = m · (W + ΔW) / ‖W + ΔW‖, the norm taken per output row.
public struct DoRAMagnitude: Sendable, Hashable {
    /// m, one value per output row of the module.
    public var values: [Float]
    /// LyCORIS adds float32's ε to the norm (`dora_scale`); PEFT does not (`lora_magnitude_vector`).
    public var addsEpsilon: Bool
    /// The key it was read from.
    public var key: String

    /// Creates a magnitude.
    public init(values: [Float], addsEpsilon: Bool, key: String) {
        self.values = values
        self.addsEpsilon = addsEpsilon
        self.key = key
    }
}
