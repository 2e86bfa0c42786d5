/// Why a singular value decomposition failed.
public enum SVDError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The matrix holds a NaN or an infinity (LAPACK's answer would be meaningless).
    case nonFiniteInput(index: Int)
    /// LAPACK `sgesdd` rejected argument number `argument` (info < 0): a bug in the caller.
    case illegalArgument(argument: Int)
    /// LAPACK `sgesdd` did not converge (info > 0): the bidiagonal divide and conquer failed.
    case notConverged(info: Int)
    /// `values.count` is not rows × columns, or a dimension is negative.
    case badShape(rows: Int, columns: Int, count: Int)

    /// The sentence the user sees.
    public var description: String {
        switch self {
        case .nonFiniteInput(let index):
            return "SVD: the matrix holds a NaN or infinity (element \(index))."
        case .illegalArgument(let argument):
            return "SVD: LAPACK sgesdd rejected argument \(argument)."
        case .notConverged(let info):
            return "SVD: LAPACK sgesdd did not converge (info \(info))."
        case .badShape(let rows, let columns, let count):
            return "SVD: \(count) values do not make a \(rows)×\(columns) matrix."
        }
    }
}

/// A thin singular value decomposition A = U · diag(S) · Vᵀ of a row-major `rows`×`columns`
/// matrix, keeping `rank` triplets (k = min(rows, columns) for the full thin SVD).
public struct SVDResult: Sendable, Hashable {
    /// Rows of A.
    public var rows: Int
    /// Columns of A.
    public var columns: Int
    /// Number of singular triplets kept.
    public var rank: Int
    /// Left singular vectors, row-major `rows`×`rank` (orthonormal columns).
    public var u: [Float]
    /// Singular values, descending, `rank` of them.
    public var s: [Float]
    /// Right singular vectors transposed, row-major `rank`×`columns` (orthonormal rows).
    public var vt: [Float]
    /// Every singular value of A (all k of them), even when fewer triplets are kept: what
    /// energies and truncation errors are computed from.
    public var allSingularValues: [Float]

    /// Σ_{i<rank} s_i² / Σ s_i²: the share of ‖A‖_F² the kept triplets capture (1 for A = 0).
    public var capturedEnergy: Double {
        let total = allSingularValues.reduce(0.0) { $0 + Double($1) * Double($1) }
        guard total > 0 else { return 1 }
        return s.reduce(0.0) { $0 + Double($1) * Double($1) } / total
    }

    /// ‖A − U·diag(S)·Vᵀ‖_F, from the dropped singular values: √(Σ_{i≥rank} s_i²).
    public var truncationError: Double {
        allSingularValues.dropFirst(rank).reduce(0.0) { $0 + Double($1) * Double($1) }.squareRoot()
    }

    /// ‖A‖_F, from the singular values.
    public var frobeniusNorm: Double {
        allSingularValues.reduce(0.0) { $0 + Double($1) * Double($1) }.squareRoot()
    }

    /// U·diag(S)·Vᵀ as a row-major `rows`×`columns` matrix.
    public func reconstructed() -> [Float] {
        var us = u
        for i in 0..<rows { for j in 0..<rank { us[i * rank + j] *= s[j] } }
        if rank == 0 { return [Float](repeating: 0, count: rows * columns) }
        return BLAS.matmul(us, vt, m: rows, k: rank, n: columns)
    }

    /// The first `rank` triplets (all of them when `rank` ≥ the current rank).
    public func truncated(rank: Int) -> SVDResult {
        let r = max(0, min(rank, self.rank))
        guard r < self.rank else { return self }
        var u = [Float](repeating: 0, count: rows * r)
        for i in 0..<rows { for j in 0..<r { u[i * r + j] = self.u[i * self.rank + j] } }
        return SVDResult(rows: rows, columns: columns, rank: r, u: u, s: Array(s.prefix(r)),
                         vt: Array(vt.prefix(r * columns)), allSingularValues: allSingularValues)
    }
}

extension BLAS {
    /// The thin SVD of a row-major `rows`×`columns` matrix, through LAPACK `sgesdd` (divide and
    /// conquer). Throws `SVDError` for NaN/∞ input or when LAPACK reports failure.
    ///
    /// LAPACK is column-major: the row-major buffer of A is the column-major buffer of Aᵀ. With
    /// Aᵀ = U'·S·V'ᵀ we have A = V'·S·U'ᵀ, and the column-major V'ᵀ (k×rows) read row-major is
    /// V' (rows×k) = U, while the column-major U' (columns×k) read row-major is U'ᵀ = Vᵀ. So no
    /// transposition is ever done: the output buffers are simply swapped.
    public static func svd(_ values: [Float], rows: Int, columns: Int) throws(SVDError) -> SVDResult {
        guard rows >= 0, columns >= 0, values.count == rows * columns else {
            throw .badShape(rows: rows, columns: columns, count: values.count)
        }
        if let bad = values.firstIndex(where: { !$0.isFinite }) { throw .nonFiniteInput(index: bad) }
        let k = min(rows, columns)
        guard k > 0 else {
            return SVDResult(rows: rows, columns: columns, rank: 0, u: [], s: [], vt: [], allSingularValues: [])
        }
        var a = values                                            // Aᵀ, column-major columns×rows
        var s = [Float](repeating: 0, count: k)
        var uPrime = [Float](repeating: 0, count: columns * k)    // U' of Aᵀ → Vᵀ of A
        var vtPrime = [Float](repeating: 0, count: k * rows)      // V'ᵀ of Aᵀ → U of A
        let info = a.withUnsafeMutableBufferPointer { pa in
            s.withUnsafeMutableBufferPointer { ps in
                uPrime.withUnsafeMutableBufferPointer { pu in
                    vtPrime.withUnsafeMutableBufferPointer { pvt in
                        lapackThinSVD(rows: columns, columns: rows, a: pa.baseAddress!, s: ps.baseAddress!,
                                      u: pu.baseAddress!, vt: pvt.baseAddress!)
                    }
                }
            }
        }
        if info < 0 { throw .illegalArgument(argument: -info) }
        if info > 0 { throw .notConverged(info: info) }
        return SVDResult(rows: rows, columns: columns, rank: k, u: vtPrime, s: s, vt: uPrime, allSingularValues: s)
    }

    /// The best rank-`rank` approximation of a row-major matrix (Eckart–Young): the thin SVD
    /// keeping the `rank` largest singular triplets (`rank` is capped at min(rows, columns)).
    public static func truncatedSVD(_ values: [Float], rows: Int, columns: Int, rank: Int) throws(SVDError) -> SVDResult {
        try svd(values, rows: rows, columns: columns).truncated(rank: rank)
    }
}
